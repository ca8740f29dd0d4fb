"""Emotion data: picks the source, loads the splits, builds tf.data pipelines.

A split is either decoded images in memory (`LabelledImages`: FER2013 folders
or CSV, synthetic faces) or TFRecord shards on disk (`tfrecords.Shards`,
`source=tfrecord`, for data sets larger than memory); `make_dataset` gives the
same batches for both.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Iterable, Iterator

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from sklearn import model_selection

from common.data_locations import DEFAULT_FER2013_DIR
from common.errors import DataError
from input_pipeline import fer2013, images, synthetic_faces, tfrecords
from input_pipeline.fer2013 import LabelledImages

SOURCES = ("auto", "folder", "csv", "synthetic", "tfrecord")
Split = LabelledImages | tfrecords.Shards
# Where `source=auto` looks for FER2013 by default (relative to the working
# directory); when it is absent the synthetic faces are used instead.


@dataclasses.dataclass
class EmotionData:
  """The three splits in memory; `test` is None when the source has none."""

  train: Split
  validation: Split
  test: Split | None
  source: str  # What was loaded, for logs: e.g. "folder /data/fer2013".


def resolve_source(data_config: ml_collections.ConfigDict, default_dir: str) -> tuple[str, str]:
  """Decides which reader to use.

  Returns:
    `(source, path)`: source is `folder`, `csv`, `synthetic` or `tfrecord`;
    path is the folder root, CSV file or shards directory (empty for synthetic).

  Raises:
    DataError: an explicitly given directory does not exist or holds no
      FER2013 in a known layout, or `source` is unknown.
  """
  source, path = data_config.source, data_config.dir
  if source not in SOURCES:
    raise DataError(f"config.data.source={source!r}; expected one of {list(SOURCES)}.")
  if source == "synthetic":
    return "synthetic", ""
  if not os.path.exists(path):
    if source == "auto" and os.path.normpath(path) == os.path.normpath(default_dir):
      logging.warning(
        "No FER2013 at %r: training on the embedded synthetic faces. To use "
        "FER2013, put its Kaggle folders (train/, test/) or fer2013.csv there, "
        "or pass --config.data.dir=/path/to/fer2013.",
        path,
      )
      return "synthetic", ""
    raise DataError(f"config.data.dir={path!r} does not exist.")
  if source == "tfrecord":
    return "tfrecord", path
  if os.path.isfile(path):
    if source == "folder":
      raise DataError(f"config.data.dir={path!r} is a file; source 'folder' expects a directory.")
    return "csv", path
  has_folders = "train" in fer2013.find_split_dirs(path)
  csv_path = fer2013.find_csv(path)
  if source in ("auto", "folder") and has_folders:
    return "folder", path
  if source in ("auto", "csv") and csv_path:
    return "csv", csv_path
  raise DataError(
    f"config.data.dir={path!r} holds no FER2013 for source {source!r}: expected "
    "a train/ folder with one subfolder per class (Kaggle layout) or a "
    "fer2013.csv with columns emotion,pixels,Usage."
  )


def validation_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
  """`(keep, held_out)` sorted indices: a validation split stratified by class and seeded."""
  if not 0 < fraction < 1:
    raise DataError(f"config.data.validation_fraction={fraction}; expected 0 < f < 1.")
  counts = np.bincount(labels)
  num_held_out = int(np.ceil(fraction * len(labels)))
  stratify = labels
  if counts[counts > 0].min() < 2 or num_held_out < np.count_nonzero(counts):
    logging.warning(
      "Too few images (%d) to stratify the validation split by class; splitting at random.",
      len(labels),
    )
    stratify = None
  keep, held_out = model_selection.train_test_split(
    np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=stratify
  )
  return np.sort(keep), np.sort(held_out)


def carve_validation(
  train: LabelledImages, fraction: float, seed: int
) -> tuple[LabelledImages, LabelledImages]:
  """Splits `train` into train/validation, stratified by class and seeded."""
  keep, held_out = validation_indices(train.labels, fraction, seed)
  return (
    LabelledImages(train.images[keep], train.labels[keep]),
    LabelledImages(train.images[held_out], train.labels[held_out]),
  )


def load(config: ml_collections.ConfigDict, default_dir: str) -> EmotionData:
  """Loads train/validation/test as configured by `config.data`."""
  data = config.data
  class_names = list(data.class_names)
  source, path = resolve_source(data, default_dir)
  if source == "synthetic":
    syn = data.synthetic
    splits = {
      split: LabelledImages(*synthetic_faces.make_split(split, count, syn.image_size, config.seed))
      for split, count in (
        ("train", syn.num_train),
        ("validation", syn.num_validation),
        ("test", syn.num_test),
      )
    }
    description = f"synthetic faces ({syn.image_size}x{syn.image_size}, seed {config.seed})"
  elif source == "tfrecord":
    manifest = tfrecords.read_manifest(path, "emotion")
    if list(manifest.class_names) != class_names:
      raise DataError(
        f"{path}: the shards hold classes {list(manifest.class_names)}; "
        f"config.data.class_names is {class_names}."
      )
    splits = dict(manifest.splits)
    description = f"TFRecord shards {path} ({manifest.encoding}; {manifest.description})"
  elif source == "csv":
    splits = fer2013.read_fer2013_csv(path, class_names)
    description = f"FER2013 CSV {path}"
  else:
    splits = {
      split: fer2013.read_image_folder(split_dir, class_names, data.image_size, split=split)
      for split, split_dir in fer2013.find_split_dirs(path).items()
    }
    description = f"FER2013 folders {path}"
  if "validation" not in splits or not len(splits["validation"]):
    splits["train"], splits["validation"] = carve_validation(
      splits["train"], data.validation_fraction, config.seed
    )
    description += f" (validation: {data.validation_fraction:.0%} of train, stratified)"
  result = EmotionData(splits["train"], splits["validation"], splits.get("test"), description)
  logging.info("Data: %s", description)
  for split in ("train", "validation", "test"):
    part = getattr(result, split)
    if part is None:
      logging.warning("No %s split: the test report will be skipped.", split)
      continue
    counts = dict(zip(class_names, part.class_counts(len(class_names)), strict=True))
    logging.info(
      "  %-10s %6d images %s, per class %s",
      split,
      len(part),
      "x".join(map(str, image_shape(part))),
      counts,
    )
  return result


def image_shape(split: Split) -> tuple[int, ...]:
  """`(height, width, channels)` of the split's images."""
  return split.image_shape if isinstance(split, tfrecords.Shards) else split.images.shape[1:]


def head(split: Split, count: int) -> Split:
  """The first `count` images of `split` (in its evaluation order)."""
  if isinstance(split, tfrecords.Shards):
    return dataclasses.replace(split, count=min(count, split.count))
  return LabelledImages(split.images[:count], split.labels[:count])


def labels_of(split: Split) -> np.ndarray:
  """int32 labels `[n]` in evaluation order (shards: read without decoding images)."""
  if not isinstance(split, tfrecords.Shards):
    return split.labels
  records = tfrecords.read_records(split, training=False, seed=0).take(split.count)
  features = {"label": tf.io.FixedLenFeature([], tf.int64)}
  labels = records.batch(4096).map(lambda r: tf.io.parse_example(r, features)["label"])
  return np.concatenate([batch.numpy() for batch in labels]).astype(np.int32)


def _to_model_inputs(images: tf.Tensor, labels: tf.Tensor, num_classes: int):
  """Grayscale -> 3 channels (still uint8), integer labels -> one-hot."""
  if images.shape[-1] == 1:
    images = tf.repeat(images, 3, axis=-1)
  return images, tf.one_hot(labels, num_classes)


def make_dataset(
  split: Split,
  batch_size: int,
  num_classes: int,
  training: bool,
  seed: int,
  shuffle_buffer: int = 10_000,
) -> tf.data.Dataset:
  """uint8 RGB images and one-hot labels, batched and prefetched.

  Training data is shuffled (reshuffled every epoch) and drops the last
  partial batch, so every step sees `batch_size` images. In memory, the
  decoded arrays are the cache and the shuffle spans the whole split; from
  shards, records stream from disk through a `shuffle_buffer` of records.
  Nothing is decoded per epoch (raw shards). Resizing, normalisation and
  augmentation run later, on the accelerator, inside the model
  (`augment.ImagePreprocessor`).
  """
  if isinstance(split, tfrecords.Shards):
    # take + assert_cardinality: a `head` reads only its records, and Keras
    # knows the epoch length (an unknown one warns that data "ran out").
    dataset = tfrecords.read_records(split, training, seed).take(split.count)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(split.count))
    if training:
      dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(
      lambda record: _image_and_label(tfrecords.parse_image_example(record, split)),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
  else:
    dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    if training:
      dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
  dataset = dataset.batch(batch_size, drop_remainder=training)
  dataset = dataset.map(
    lambda images, labels: _to_model_inputs(images, labels, num_classes),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  return dataset.prefetch(tf.data.AUTOTUNE)


def _image_and_label(parsed: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
  return parsed["image"], tf.cast(parsed["label"], tf.int32)


# Images decoded at a time when streaming a folder into shards (bounded memory).
_DECODE_CHUNK = 2048


def image_records(
  images_and_labels: Iterable[tuple[np.ndarray, int]], encoding: str
) -> Iterator[tuple[bytes, int]]:
  """(serialized record, label) per image, `index` counting from 0 in order."""
  for index, (image, label) in enumerate(images_and_labels):
    record = tfrecords.image_example(tfrecords.encode_image(image, encoding), int(label), index)
    yield record, int(label)


def _decode_folder(
  paths: list[str], labels: np.ndarray, shape: tuple[int, int, int], where: str
) -> Iterator[tuple[np.ndarray, int]]:
  """Decodes a listed split a chunk at a time; skips (and logs) undecodable files."""
  for start in range(0, len(paths), _DECODE_CHUNK):
    chunk = paths[start : start + _DECODE_CHUNK]
    decoded = fer2013.decode_images(chunk)
    fer2013.log_undecodable(where, chunk, decoded)
    for (image, _), label in zip(decoded, labels[start : start + _DECODE_CHUNK], strict=True):
      if image is not None:
        yield fer2013.conform(image, shape), int(label)


def _header(path: str) -> tuple[tuple[int, int], bool] | None:
  """`((height, width), grayscale)` from the file header, without decoding pixels."""
  try:
    return images.header(path)
  except Exception:  # Undecodable: skipped when decoding, so it does not count.
    return None


def _readable_and_shape(
  paths: list[str], labels: np.ndarray, image_size: int, where: str
) -> tuple[list[str], np.ndarray, tuple[int, int, int]]:
  """The files whose header reads, their labels, and the split's storage shape."""
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    headers = list(pool.map(_header, paths))
  fer2013.log_undecodable(
    where, paths, [(h, "" if h else "not an image PIL can open") for h in headers]
  )
  keep = [i for i, header in enumerate(headers) if header is not None]
  shape = fer2013.common_shape(
    [headers[i][0] for i in keep], [headers[i][1] for i in keep], image_size
  )
  return [paths[i] for i in keep], labels[keep], shape


def shard_records(
  config: ml_collections.ConfigDict, encoding: str
) -> tuple[dict[str, tfrecords.SplitRecords], str]:
  """The splits `load(config)` gives, as records for `tfrecords.write_dataset`.

  Folders are streamed (listed, then decoded a chunk at a time), so a data set
  larger than memory can be written; the CSV and synthetic sources are
  loaded as training loads them. Images are stored as `load` would hold
  them: at their own size if a split's images share one, else resized to
  `data.image_size`.
  """
  data = config.data
  source, path = resolve_source(data, DEFAULT_FER2013_DIR)
  if source == "tfrecord":
    raise DataError(f"config.data.dir={path!r} is already TFRecord shards.")
  if source != "folder":
    loaded = load(config, DEFAULT_FER2013_DIR)
    splits = {
      name: tfrecords.SplitRecords(
        image_records(zip(part.images, part.labels, strict=True), encoding), part.images.shape[1:]
      )
      for name in ("train", "validation", "test")
      if (part := getattr(loaded, name)) is not None
    }
    return splits, loaded.source
  split_dirs = fer2013.find_split_dirs(path)
  # Each folder's storage shape, from its headers (as `_stack` decides it for
  # a folder in memory, before any validation split is carved from it); files
  # whose header does not read are left out before carving, as the in-memory
  # reader leaves out what it cannot decode.
  listed, shapes = {}, {}
  for split, split_dir in split_dirs.items():
    paths, labels = fer2013.list_image_folder(split_dir, data.class_names)
    paths, labels, shapes[split] = _readable_and_shape(paths, labels, data.image_size, split_dir)
    fer2013.check_class_counts(labels, data.class_names, split, split_dir)
    listed[split] = (paths, labels)
  description = f"FER2013 folders {path}"
  if "validation" not in listed:
    paths, labels = listed["train"]
    keep, held_out = validation_indices(labels, data.validation_fraction, config.seed)
    listed["train"] = ([paths[i] for i in keep], labels[keep])
    listed["validation"] = ([paths[i] for i in held_out], labels[held_out])
    shapes["validation"], split_dirs["validation"] = shapes["train"], split_dirs["train"]
    description += f" (validation: {data.validation_fraction:.0%} of train, stratified)"
  splits = {}
  for split, (paths, labels) in listed.items():
    images = _decode_folder(paths, labels, shapes[split], split_dirs[split])
    splits[split] = tfrecords.SplitRecords(image_records(images, encoding), shapes[split])
  return splits, description
