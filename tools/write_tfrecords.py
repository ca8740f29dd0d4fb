r"""Writes a training config's data as TFRecord shards, for data larger than memory.

  python -m tools.write_tfrecords --config=configs/emotion.py \
      --config.data.dir=/data/fer2013 --output=/data/fer2013_shards
  python train_main.py --config=configs/emotion.py \
      --config.data.source=tfrecord --config.data.dir=/data/fer2013_shards

  python -m tools.write_tfrecords --config=configs/deepfake.py \
      --config.data.labels_csv=/data/ffpp_faces/labels.csv --output=/data/ffpp_shards
  python train_main.py --config=configs/deepfake.py \
      --config.data.source=tfrecord --config.data.dir=/data/ffpp_shards

The data are read as the trainer reads them with the same config (source,
seed, validation split, deepfake subset and grouped split, image size) and
written as they would be held in memory: images decoded, frames resized to
`data.image_size`. Emotion folders are streamed a chunk at a time; deepfake
frames are decoded video by video by tf.data. `--encoding=raw` (default)
stores pixels, so training never decodes again; `png` is lossless and smaller,
`jpeg` (quality 95) smallest. The output appears only when complete (see
`input_pipeline/tfrecords.py` for the layout).
"""

from __future__ import annotations

import os
import time

from common import tf_environment

tf_environment.set_defaults()  # Before TensorFlow loads.

import ml_collections
from absl import app, flags, logging

from common import errors, outputs
from configs import validation
from input_pipeline import deepfake_data, emotion_data, tfrecords


def write_tfrecords(
  config: ml_collections.ConfigDict,
  output_dir: str,
  encoding: str = "raw",
  shard_megabytes: float = 128,
  overwrite: bool = False,
) -> tfrecords.Manifest:
  """Writes the splits of `config`'s data to `output_dir`; returns its manifest.

  Before any data is read, the config is validated and the output checked:
  it may not be, lie in or hold the data, and an existing one is replaced
  (with `overwrite`) only if it is shards written by this tool.
  """
  validation.validate(config)
  outputs.check_not_input(output_dir, input_paths(config))
  outputs.check_replaceable(
    output_dir, "tools.write_tfrecords", tfrecords.is_shard_directory, tfrecords.MANIFEST, overwrite
  )
  start = time.perf_counter()
  if config.task == "emotion":
    splits, description = emotion_data.shard_records(config, encoding)
  elif config.task == "deepfake":
    splits, description = deepfake_data.shard_records(config, encoding)
  else:
    raise ValueError(f"config.task={config.task!r}; expected 'emotion' or 'deepfake'.")
  class_names = list(config.data.class_names)
  manifest = tfrecords.write_dataset(
    output_dir,
    config.task,
    encoding,
    splits,
    class_names,
    description,
    shard_megabytes=shard_megabytes,
    overwrite=overwrite,
  )
  seconds = time.perf_counter() - start
  total = sum(len(s) for s in manifest.splits.values())
  size = sum(os.path.getsize(f) for s in manifest.splits.values() for f in s.files)
  logging.info(
    "Wrote %d records (%s) in %.1f s, %.1f MB, to %s. Train with "
    "--config.data.source=tfrecord --config.data.dir=%s",
    total,
    ", ".join(f"{name} {len(s)}" for name, s in manifest.splits.items()),
    seconds,
    size / 1e6,
    manifest.directory,
    manifest.directory,
  )
  return manifest


def input_paths(config: ml_collections.ConfigDict) -> list[str]:
  """The existing files and folders `config`'s data are read from."""
  data = config.data
  paths = [data.get("dir", ""), data.get("labels_csv", ""), data.get("frames_root", "")]
  if data.get("labels_csv") and not data.get("frames_root"):
    paths.append(os.path.dirname(os.path.abspath(data.labels_csv)))  # The frames' root.
  return [p for p in paths if p and os.path.exists(p)]


def _define_flags() -> None:
  """Defined only when run as a command, so tests can import this module."""
  from ml_collections import config_flags

  config_flags.DEFINE_config_file(
    "config", None, "Training config whose data to write: configs/emotion.py.", lock_config=True
  )
  flags.DEFINE_string("output", None, "Directory to write the shards and manifest.json to.")
  flags.DEFINE_enum("encoding", "raw", list(tfrecords.ENCODINGS), "How images are stored.")
  flags.DEFINE_float("shard_megabytes", 128, "Approximate size of one shard.", lower_bound=0.01)
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output once the new is complete.")
  flags.mark_flags_as_required(["config", "output"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  write_tfrecords(
    values.config, values.output, values.encoding, values.shard_megabytes, values.overwrite
  )


if __name__ == "__main__":
  _define_flags()
  errors.run(main)
