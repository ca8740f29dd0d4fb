"""Readers for FER2013 in its two common forms.

* Kaggle folders: `<root>/train/<class>/*.jpg`, `<root>/test/<class>/*.jpg`,
  optionally `<root>/val/` or `<root>/validation/`. Folder names are matched to
  the class list case-insensitively; a folder of unknown class is an error.
* The original `fer2013.csv` with columns `emotion,pixels,Usage`, whose class
  order differs from ours (see `labels.FER2013_CSV_CLASSES`). `Usage` maps
  Training -> train, PublicTest -> validation, PrivateTest -> test.

Images are decoded once, here, into uint8 arrays held in memory (FER2013 is
66 MB decoded); the tf.data pipeline slices those arrays, so nothing is decoded
again per epoch. We read folders ourselves rather than through
`tfds.ImageFolder`, which decodes lazily inside the pipeline: a corrupt file
would then stop training mid-epoch with an error that does not name it, and
class folders would have to match in case.

A file that cannot be decoded (corrupt, truncated, not an image) is skipped and
counted; the count and the first few file names are logged. Any other problem
(missing or empty directory, unknown class folder, malformed CSV) raises
`DataError` naming the file, row or field and what was expected.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd
from absl import logging

from common import labels as labels_lib
from common.errors import DataError
from input_pipeline import images as images_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CSV_COLUMNS = ("emotion", "pixels", "Usage")
CSV_USAGE_TO_SPLIT = {
  "Training": "train",
  "PublicTest": "validation",
  "PrivateTest": "test",
}
FOLDER_SPLIT_NAMES = {
  "train": ("train", "training"),
  "validation": ("val", "validation", "valid"),
  "test": ("test", "testing"),
}


@dataclasses.dataclass
class LabelledImages:
  """Decoded images of one split.

  Attributes:
    images: uint8 `[n, height, width, channels]`, channels 1 or 3.
    labels: int32 `[n]` indices into the class list.
  """

  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def class_counts(self, num_classes: int) -> list[int]:
    return np.bincount(self.labels, minlength=num_classes).tolist()


def _find_child(directory: str, names: Sequence[str], want_dir: bool = True) -> str | None:
  """Returns the entry of `directory` whose lower-cased name is in `names`."""
  for entry in sorted(os.listdir(directory)):
    path = os.path.join(directory, entry)
    if entry.lower() in names and os.path.isdir(path) == want_dir:
      return path
  return None


def find_csv(directory: str) -> str | None:
  """The FER2013 CSV inside `directory`: `fer2013.csv`, or its only `.csv`."""
  preferred = _find_child(directory, ("fer2013.csv",), want_dir=False)
  if preferred:
    return preferred
  csvs = [e for e in sorted(os.listdir(directory)) if e.lower().endswith(".csv")]
  return os.path.join(directory, csvs[0]) if len(csvs) == 1 else None


def find_split_dirs(root: str) -> dict[str, str]:
  """Maps `train`/`validation`/`test` to the existing split folders of `root`."""
  found = {}
  for split, names in FOLDER_SPLIT_NAMES.items():
    path = _find_child(root, names)
    if path:
      found[split] = path
  return found


def _decode(path: str) -> tuple[np.ndarray | None, str]:
  """Decodes one image to uint8 `[h, w, 1 or 3]` (`images.decode`); (None, reason) on failure."""
  try:
    with open(path, "rb") as file:
      return images_lib.decode(file.read()), ""
  except Exception as error:  # Pillow raises many types for bad files.
    return None, f"{type(error).__name__}: {error}"


def conform(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
  """Resizes (area interpolation) and widens grayscale to `shape` where they differ."""
  height, width, channels = shape
  if image.shape[:2] != (height, width):
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).reshape(
      height, width, image.shape[-1]
    )
  if image.shape[-1] != channels:
    image = np.repeat(image, channels, axis=-1)
  return image


def common_shape(
  sizes: Sequence[tuple[int, int]], grayscale: Sequence[bool], image_size: int
) -> tuple[int, int, int]:
  """The `(h, w, c)` a split is stored at: its own size if all images share one,
  else `image_size` square; one channel only if every image is grayscale."""
  shapes = set(sizes)
  height, width = shapes.pop() if len(shapes) == 1 else (image_size, image_size)
  return height, width, 1 if all(grayscale) else 3


def _stack(arrays: list[np.ndarray], image_size: int, where: str) -> np.ndarray:
  """Stacks decoded images; resizes them to `image_size` if their sizes differ."""
  sizes = [a.shape[:2] for a in arrays]
  shape = common_shape(sizes, [a.shape[-1] == 1 for a in arrays], image_size)
  if len(set(sizes)) > 1:
    logging.info(
      "%s: images have %d different sizes; resizing all to %dx%d.",
      where,
      len(set(sizes)),
      image_size,
      image_size,
    )
  return np.stack([conform(a, shape) for a in arrays])


def list_image_folder(split_dir: str, class_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
  """Image files under `split_dir/<class>/` and their class indices, in name order.

  Raises:
    DataError: the folder is missing, holds an unknown class folder or no image.
  """
  if not os.path.isdir(split_dir):
    raise DataError(f"Data directory {split_dir!r} does not exist.")
  index_of = {name.lower(): i for i, name in enumerate(class_names)}
  paths, class_ids = [], []
  for entry in sorted(os.listdir(split_dir)):
    class_dir = os.path.join(split_dir, entry)
    if not os.path.isdir(class_dir):
      continue
    if entry.lower() not in index_of:
      raise DataError(
        f"Unknown class folder {class_dir!r}: expected one folder per class "
        f"named one of {list(class_names)} (case-insensitive)."
      )
    files = sorted(f for f in os.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    paths += [os.path.join(class_dir, f) for f in files]
    class_ids += [index_of[entry.lower()]] * len(files)
  if not paths:
    raise DataError(
      f"No images found in {split_dir!r}: expected subfolders "
      f"{list(class_names)} holding image files ({', '.join(IMAGE_EXTENSIONS)})."
    )
  return paths, np.asarray(class_ids, np.int32)


def check_class_counts(
  labels: np.ndarray, class_names: Sequence[str], split: str, where: str
) -> None:
  """A class without images is an error in the training split and a warning elsewhere.

  Training without a class would fit a model that never predicts it, silently;
  a validation or test split without one only makes its per-class figures
  empty, so it is reported, with the counts, and allowed.

  Raises:
    DataError: `split` is `train` and a class has no image.
  """
  counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
  empty = [name for name, count in zip(class_names, counts, strict=True) if count == 0]
  if not empty:
    return
  per_class = ", ".join(f"{n} {c}" for n, c in zip(class_names, counts, strict=True))
  if split == "train":
    raise DataError(
      f"{where}: no training image of class(es) {empty} (images per class: {per_class}); "
      "a model cannot learn a class it never sees: add training images of it (emotion: "
      "or remove it from config.data.class_names)."
    )
  logging.warning(
    "%s: no %s image of class(es) %s (images per class: %s).", where, split, empty, per_class
  )


def decode_images(
  paths: Sequence[str], num_workers: int | None = None
) -> list[tuple[np.ndarray | None, str]]:
  """Decodes files in parallel threads (PIL releases the GIL); (None, reason) where one fails."""
  with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count()) as pool:
    return list(pool.map(_decode, paths))


def log_undecodable(where: str, paths: Sequence[str], decoded: Sequence[tuple]) -> None:
  """Warns with the count and the first few files that could not be decoded."""
  failed = [(p, reason) for p, (a, reason) in zip(paths, decoded, strict=True) if a is None]
  if failed:
    logging.warning(
      "%s: skipped %d of %d files that could not be decoded, e.g. %s",
      where,
      len(failed),
      len(paths),
      "; ".join(f"{p} ({r})" for p, r in failed[:5]),
    )


def read_image_folder(
  split_dir: str,
  class_names: Sequence[str],
  image_size: int = 96,
  num_workers: int | None = None,
  split: str = "train",
) -> LabelledImages:
  """Reads `split_dir/<class>/*` into memory.

  Args:
    split_dir: folder with one subfolder per class.
    class_names: the class list; subfolders match it case-insensitively.
    image_size: images are resized to this square size only if they do not
      all have the same size already.
    num_workers: decoding threads (PIL releases the GIL while decoding).
    split: which split this is: a class without (decodable) images is an
      error for `train`, a warning for the others (`check_class_counts`).

  Raises:
    DataError: the folder is missing, holds an unknown class folder, or has no
      decodable image, or a training class has none.
  """
  paths, class_ids = list_image_folder(split_dir, class_names)
  decoded = decode_images(paths, num_workers)
  log_undecodable(split_dir, paths, decoded)
  kept = [i for i, (a, _) in enumerate(decoded) if a is not None]
  if not kept:
    raise DataError(f"None of the {len(paths)} image files in {split_dir!r} could be decoded.")
  check_class_counts(class_ids[kept], class_names, split, split_dir)
  images = _stack([decoded[i][0] for i in kept], image_size, split_dir)
  return LabelledImages(images, class_ids[kept])


def read_fer2013_csv(
  csv_path: str, class_names: Sequence[str] = labels_lib.EMOTION_CLASSES
) -> dict[str, LabelledImages]:
  """Reads the original `fer2013.csv` into splits, remapping its class order.

  Returns:
    `{split: LabelledImages}` for the splits present (`train`, `validation`,
    `test`), images uint8 `[n, 48, 48, 1]`, labels in `class_names` order.

  Raises:
    DataError: a column is missing, a row has a bad label, `Usage` or `pixels`
      field, or the file has no Training rows.
  """
  if not os.path.isfile(csv_path):
    raise DataError(f"FER2013 CSV {csv_path!r} does not exist.")
  try:
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
    raise DataError(f"{csv_path}: not a readable CSV file ({error}).") from error
  missing = [c for c in CSV_COLUMNS if c not in frame.columns]
  if missing:
    raise DataError(
      f"{csv_path}: missing column(s) {missing}; expected the columns "
      f"{list(CSV_COLUMNS)} of the original fer2013.csv, found {list(frame.columns)}."
    )
  csv_to_ours = np.array(
    [list(class_names).index(name) for name in labels_lib.FER2013_CSV_CLASSES],
    np.int32,
  )
  emotion = pd.to_numeric(frame["emotion"], errors="coerce")
  bad = ~emotion.isin(range(len(csv_to_ours)))
  if bad.any():
    row = int(np.flatnonzero(bad.to_numpy())[0])
    raise DataError(
      f"{csv_path}, line {row + 2}: emotion {frame['emotion'].iloc[row]!r} is not "
      f"an integer in 0..{len(csv_to_ours) - 1}."
    )
  usage = frame["Usage"].str.strip()
  bad = ~usage.isin(list(CSV_USAGE_TO_SPLIT))
  if bad.any():
    row = int(np.flatnonzero(bad.to_numpy())[0])
    raise DataError(
      f"{csv_path}, line {row + 2}: Usage {frame['Usage'].iloc[row]!r} is not one "
      f"of {list(CSV_USAGE_TO_SPLIT)}."
    )
  pixels = []
  side = None
  for row, text in enumerate(frame["pixels"].fillna("")):
    try:
      values = np.array(text.split(), dtype=np.int64) if text else np.zeros(0, np.int64)
    except ValueError as error:
      raise DataError(
        f"{csv_path}, line {row + 2}: pixels holds a value that is not an integer ({error}); "
        "expected space-separated 0-255 values."
      ) from error
    if side is None:
      side = int(round(np.sqrt(values.size)))
    if values.size != side * side or values.size == 0:
      raise DataError(
        f"{csv_path}, line {row + 2}: pixels has {values.size} values; expected "
        f"{side * side if side else 2304} space-separated 0-255 values "
        f"(a square {side or 48}x{side or 48} grayscale image)."
      )
    if values.min() < 0 or values.max() > 255:
      raise DataError(f"{csv_path}, line {row + 2}: pixel values must be in 0..255.")
    pixels.append(values.astype(np.uint8))
  images = np.stack(pixels).reshape(-1, side, side, 1)
  ours = csv_to_ours[emotion.to_numpy().astype(np.int64)]
  splits = {}
  for usage_name, split in CSV_USAGE_TO_SPLIT.items():
    rows = (usage == usage_name).to_numpy()
    if rows.any():
      splits[split] = LabelledImages(images[rows], ours[rows])
      check_class_counts(ours[rows], class_names, split, f"{csv_path} (Usage {usage_name})")
  if "train" not in splits:
    raise DataError(f"{csv_path}: no rows with Usage 'Training'.")
  return splits
