"""Emotion data: picks the source, loads the splits, builds tf.data pipelines."""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from sklearn import model_selection

from input_pipeline import fer2013, synthetic_faces
from input_pipeline.fer2013 import DataError, LabelledImages

SOURCES = ("auto", "folder", "csv", "synthetic")
# Where `source=auto` looks for FER2013 by default (relative to the working
# directory); when it is absent the synthetic faces are used instead.
DEFAULT_FER2013_DIR = "data/fer2013"


@dataclasses.dataclass
class EmotionData:
  """The three splits in memory; `test` is None when the source has none."""

  train: LabelledImages
  validation: LabelledImages
  test: LabelledImages | None
  source: str  # What was loaded, for logs: e.g. "folder /data/fer2013".


def resolve_source(data_config: ml_collections.ConfigDict, default_dir: str) -> tuple[str, str]:
  """Decides which reader to use.

  Returns:
    `(source, path)`: source is `folder`, `csv` or `synthetic`; path is the
    folder root or CSV file (empty for synthetic).

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


def carve_validation(
  train: LabelledImages, fraction: float, seed: int
) -> tuple[LabelledImages, LabelledImages]:
  """Splits `train` into train/validation, stratified by class and seeded."""
  if not 0 < fraction < 1:
    raise DataError(f"config.data.validation_fraction={fraction}; expected 0 < f < 1.")
  counts = np.bincount(train.labels)
  num_held_out = int(np.ceil(fraction * len(train)))
  stratify = train.labels
  if counts[counts > 0].min() < 2 or num_held_out < np.count_nonzero(counts):
    logging.warning(
      "Too few images (%d) to stratify the validation split by class; splitting at random.",
      len(train),
    )
    stratify = None
  keep, held_out = model_selection.train_test_split(
    np.arange(len(train)), test_size=fraction, random_state=seed, stratify=stratify
  )
  keep, held_out = np.sort(keep), np.sort(held_out)
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
  elif source == "csv":
    splits = fer2013.read_fer2013_csv(path, class_names)
    description = f"FER2013 CSV {path}"
  else:
    splits = {
      split: fer2013.read_image_folder(split_dir, class_names, data.image_size)
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
      "x".join(map(str, part.images.shape[1:])),
      counts,
    )
  return result


def _to_model_inputs(images: tf.Tensor, labels: tf.Tensor, num_classes: int):
  """Grayscale -> 3 channels (still uint8), integer labels -> one-hot."""
  if images.shape[-1] == 1:
    images = tf.repeat(images, 3, axis=-1)
  return images, tf.one_hot(labels, num_classes)


def make_dataset(
  split: LabelledImages,
  batch_size: int,
  num_classes: int,
  training: bool,
  seed: int,
) -> tf.data.Dataset:
  """uint8 RGB images and one-hot labels, batched and prefetched.

  Training data is shuffled over the whole split (reshuffled every epoch)
  and drops the last partial batch, so every step sees `batch_size` images.
  The decoded arrays are the cache: nothing is decoded per epoch. Resizing,
  normalisation and augmentation run later, on the accelerator, inside the
  model (`augment.ImagePreprocessor`).
  """
  dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
  if training:
    dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
  dataset = dataset.batch(batch_size, drop_remainder=training)
  dataset = dataset.map(
    lambda images, labels: _to_model_inputs(images, labels, num_classes),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  return dataset.prefetch(tf.data.AUTOTUNE)
