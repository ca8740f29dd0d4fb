"""TFRecord shards: decoded images written once, streamed from disk when training.

For data sets larger than memory. A preparation step
(`python -m tools.write_tfrecords`) reads a data set the way the trainer
would (same source, splits and image size) and writes each split as shards of
about `shard_megabytes`, with a `manifest.json` that the trainers read with
`config.data.source=tfrecord`. Training then streams shards in parallel
(`interleave`), shuffles through a buffer, and never decodes a JPEG again when
the encoding is `raw` (the default): the shards are the decoded-image cache on
disk. `png` (lossless) and `jpeg` (quality 95) trade decoding work on read for
3-10x less disk.

Layout of a written directory:

  manifest.json            format, task, encoding, splits: files, counts, shapes
  <split>-00000.tfrecord   tf.train.Examples: `image` (emotion) or `frames`
                           (deepfake, one entry per frame), `label`, `index`
  <split>.csv              deepfake only: index, video, label, group, num_frames

A directory is written under `<output>.partial` and renamed into place when
complete, so a crash never leaves a half-written data set where a trainer
would read it, and an existing directory is replaced only when asked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np
import pandas as pd
import tensorflow as tf
from absl import logging

from common import outputs
from common.errors import DataError
from input_pipeline import images

MANIFEST = "manifest.json"
FORMAT = "face-analysis-tfrecord"
FORMAT_VERSION = 1
ENCODINGS = ("raw", "png", "jpeg")
TASKS = ("emotion", "deepfake")
JPEG_QUALITY = 95


@dataclasses.dataclass(frozen=True)
class Shards:
  """One split on disk: its shard files and what every record holds."""

  files: tuple[str, ...]  # Absolute paths, in writing order.
  count: int  # Records (images or videos).
  image_shape: tuple[int, int, int]  # height, width, channels of every image or frame.
  encoding: str
  per_class: tuple[int, ...] = ()  # Records per class, in class-list order.

  def __len__(self) -> int:
    return self.count

  def class_counts(self, num_classes: int) -> list[int]:
    return list(self.per_class) + [0] * (num_classes - len(self.per_class))


@dataclasses.dataclass(frozen=True)
class Manifest:
  """What `manifest.json` says, checked."""

  directory: str
  task: str
  encoding: str
  splits: dict[str, Shards]
  class_names: tuple[str, ...]
  description: str  # Where the data came from, for logs.


def encode_image(image: np.ndarray, encoding: str) -> bytes:
  """uint8 `[h, w, c]` -> the bytes stored in a record."""
  if encoding == "raw":
    return np.ascontiguousarray(image, np.uint8).tobytes()
  # OpenCV writes BGR; swapping makes the file hold the RGB image we were given.
  pixels = image if image.shape[-1] == 1 else image[..., ::-1]
  params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if encoding == "jpeg" else []
  ok, data = cv2.imencode(f".{encoding}", pixels, params)
  if not ok:
    raise ValueError(f"OpenCV could not encode a {image.shape} image as {encoding}.")
  return data.tobytes()


def decode_image(data: tf.Tensor, shape: Sequence[int], encoding: str) -> tf.Tensor:
  """Stored bytes -> uint8 `shape` (pure TF: runs eagerly and inside tf.data)."""
  if encoding == "raw":
    image = tf.reshape(tf.io.decode_raw(data, tf.uint8), shape)
  else:
    image = images.decode_tf(data, channels=shape[-1], name="TFRecord image")
  return tf.ensure_shape(image, shape)


def _int64(values: Sequence[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def image_example(image: bytes, label: int, index: int) -> bytes:
  """One emotion record."""
  features = {"image": _bytes([image]), "label": _int64([label]), "index": _int64([index])}
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def video_example(frames: Sequence[bytes], label: int, index: int) -> bytes:
  """One deepfake record: every frame of a video, in order."""
  features = {"frames": _bytes(frames), "label": _int64([label]), "index": _int64([index])}
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def parse_image_example(record: tf.Tensor, shards: Shards) -> dict[str, tf.Tensor]:
  """A serialized emotion record -> `image` uint8 `[h, w, c]`, `label`, `index`."""
  parsed = tf.io.parse_single_example(
    record,
    {
      "image": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64),
      "index": tf.io.FixedLenFeature([], tf.int64),
    },
  )
  parsed["image"] = decode_image(parsed["image"], shards.image_shape, shards.encoding)
  return parsed


def parse_video_example(record: tf.Tensor) -> dict[str, tf.Tensor]:
  """A serialized deepfake record -> `frames` (encoded, `[n]` strings), `label`, `index`."""
  return tf.io.parse_single_example(
    record,
    {
      "frames": tf.io.VarLenFeature(tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64),
      "index": tf.io.FixedLenFeature([], tf.int64),
    },
  )


def read_records(shards: Shards, training: bool, seed: int) -> tf.data.Dataset:
  """Serialized records of one split.

  Evaluation reads the shards one after another (records in writing order).
  Training shuffles the shard order every pass and reads several shards at
  once; the caller shuffles records through a buffer.
  """
  if not training:
    return tf.data.TFRecordDataset(list(shards.files))
  files = tf.data.Dataset.from_tensor_slices(list(shards.files))
  files = files.shuffle(len(shards.files), seed=seed, reshuffle_each_iteration=True)
  return files.interleave(
    tf.data.TFRecordDataset,
    cycle_length=min(len(shards.files), 8),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,  # Same seed, same order.
  )


def find_corrupt_shard(*splits: object) -> tuple[str, str] | None:
  """The first shard of `splits` (`Shards`; other values are ignored) that does
  not read back, with TensorFlow's reason; None if all read."""
  for shards in splits:
    for path in shards.files if isinstance(shards, Shards) else ():
      try:
        for _ in tf.data.TFRecordDataset(path):
          pass
      except tf.errors.DataLossError as error:
        return path, error.message.splitlines()[0]
  return None


@contextlib.contextmanager
def naming_corrupt_shards(*splits: object) -> Iterator[None]:
  """Turns tf.data's `corrupted record at N`, which names no file, into one naming the shard."""
  try:
    yield
  except tf.errors.DataLossError as error:
    bad = find_corrupt_shard(*splits)
    if bad is None:
      raise
    raise DataError(
      f"TFRecord shard {bad[0]!r} is corrupted ({bad[1]}); write the shards again "
      "(tools.write_tfrecords --overwrite). The checkpoints written so far are intact: "
      "rerun the command to resume."
    ) from error


class ShardWriter:
  """Writes serialized records of one split into shards of about `shard_bytes`."""

  def __init__(self, directory: str, split: str, shard_bytes: int):
    self._directory, self._split, self._shard_bytes = directory, split, shard_bytes
    self._writer: tf.io.TFRecordWriter | None = None
    self._written = 0  # Bytes in the current shard.
    self.files: list[str] = []  # Names relative to `directory`.
    self.count = 0

  def write(self, record: bytes) -> None:
    if self._writer is None or self._written >= self._shard_bytes:
      self._close_shard()
      name = f"{self._split}-{len(self.files):05d}.tfrecord"
      self._writer = tf.io.TFRecordWriter(os.path.join(self._directory, name))
      self.files.append(name)
    self._writer.write(record)
    self._written += len(record)
    self.count += 1

  def _close_shard(self) -> None:
    if self._writer is not None:
      self._writer.close()
    self._writer, self._written = None, 0

  def close(self) -> list[str]:
    self._close_shard()
    return self.files


@dataclasses.dataclass
class SplitRecords:
  """What the preparation step writes for one split."""

  records: Iterable[tuple[bytes, int]]  # (serialized example, label), streamed.
  image_shape: tuple[int, int, int]
  index_rows: list[dict] | None = None  # Deepfake: one row per video for <split>.csv.


def write_dataset(
  output_dir: str,
  task: str,
  encoding: str,
  splits: dict[str, SplitRecords],
  class_names: Sequence[str],
  description: str,
  shard_megabytes: float = 128,
  overwrite: bool = False,
) -> Manifest:
  """Writes the splits' records as shards plus a manifest; returns the manifest.

  The directory appears complete or not at all: everything is written under
  `<output_dir>.partial` first. An existing `output_dir` is an error unless
  `overwrite`, and is removed only after the new one is complete.
  """
  if task not in TASKS or encoding not in ENCODINGS:
    raise ValueError(f"task={task!r}, encoding={encoding!r}; expected {TASKS} and {ENCODINGS}.")
  output_dir = os.path.abspath(output_dir)
  # Only a previous output of this tool is ever replaced (or removed).
  outputs.check_replaceable(
    output_dir, "tools.write_tfrecords", is_shard_directory, MANIFEST, overwrite
  )
  partial = output_dir + ".partial"
  shutil.rmtree(partial, ignore_errors=True)  # Left by a crashed run.
  os.makedirs(partial)
  manifest_splits = {}
  for split, content in splits.items():
    writer = ShardWriter(partial, split, int(shard_megabytes * 2**20))
    class_counts = np.zeros(len(class_names), np.int64)
    for record, label in content.records:
      writer.write(record)
      class_counts[label] += 1
    files = writer.close()
    if not writer.count:
      raise DataError(f"Split {split!r} has no records to write.")
    manifest_splits[split] = {
      "files": files,
      "count": writer.count,
      "image_shape": list(content.image_shape),
      "class_counts": class_counts.tolist(),
    }
    if content.index_rows is not None:
      pd.DataFrame(content.index_rows).to_csv(os.path.join(partial, f"{split}.csv"), index=False)
    logging.info("Wrote %s: %d records in %d shards.", split, writer.count, len(files))
  manifest = {
    "format": FORMAT,
    "version": FORMAT_VERSION,
    "task": task,
    "encoding": encoding,
    "class_names": list(class_names),
    "description": description,
    "splits": manifest_splits,
  }
  with open(os.path.join(partial, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=2)
  if os.path.exists(output_dir):
    old = output_dir + ".old"
    shutil.rmtree(old, ignore_errors=True)
    os.rename(output_dir, old)
    os.rename(partial, output_dir)
    shutil.rmtree(old)
  else:
    os.rename(partial, output_dir)
  return read_manifest(output_dir, task)


def is_shard_directory(directory: str) -> bool:
  """Whether `directory` holds shards written by `write_dataset` (its manifest says so)."""
  try:
    with open(os.path.join(directory, MANIFEST)) as file:
      return json.load(file).get("format") == FORMAT
  except (OSError, ValueError, AttributeError):
    return False


def read_manifest(directory: str, task: str) -> Manifest:
  """Reads and checks `directory/manifest.json` for a `task` trainer.

  Raises:
    DataError: the manifest is missing or malformed, written for another
      task, or lists a shard that is not there.
  """
  path = os.path.join(directory, MANIFEST)
  if not os.path.isfile(path):
    raise DataError(
      f"{path} does not exist: expected a directory written by `python -m tools.write_tfrecords`."
    )
  try:
    with open(path) as f:
      raw = json.load(f)
  except json.JSONDecodeError as error:
    raise DataError(f"{path} is not valid JSON ({error}).") from error

  def field(name: str, where: dict = raw, context: str = "") -> object:
    if name not in where:
      raise DataError(f"{path}: field '{context}{name}' is missing.")
    return where[name]

  if field("format") != FORMAT or field("version") != FORMAT_VERSION:
    raise DataError(
      f"{path}: format {raw.get('format')!r} version {raw.get('version')!r}; expected "
      f"{FORMAT!r} version {FORMAT_VERSION}."
    )
  if field("task") != task:
    raise DataError(f"{path}: written for task {raw['task']!r}, but this is the {task!r} trainer.")
  encoding = field("encoding")
  if encoding not in ENCODINGS:
    raise DataError(f"{path}: encoding {encoding!r}; expected one of {list(ENCODINGS)}.")
  splits = {}
  for split, entry in dict(field("splits")).items():
    files = tuple(os.path.join(directory, name) for name in field("files", entry, f"{split}."))
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
      raise DataError(f"{path}: split {split!r} lists {missing[0]!r}, which does not exist.")
    shape = tuple(int(v) for v in field("image_shape", entry, f"{split}."))
    if len(shape) != 3 or shape[-1] not in (1, 3):
      raise DataError(f"{path}: {split}.image_shape={list(shape)}; expected [h, w, 1 or 3].")
    count = int(field("count", entry, f"{split}."))
    per_class = tuple(int(v) for v in field("class_counts", entry, f"{split}."))
    splits[split] = Shards(files, count, shape, encoding, per_class)
  if "train" not in splits or "validation" not in splits:
    raise DataError(f"{path}: needs a 'train' and a 'validation' split; has {sorted(splits)}.")
  return Manifest(
    os.path.abspath(directory),
    task,
    encoding,
    splits,
    tuple(field("class_names")),
    str(raw.get("description", "")),
  )
