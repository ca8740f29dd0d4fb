"""Deepfake videos: the labels CSV, grouped splits, loading, shards (tf.data: `deepfake_clips`).

A data set is a labels CSV plus a frames root. Each CSV row is one video:

  video   folder of face-crop frames, relative to the frames root (required)
  label   0/1 or REAL/FAKE (required; 1 and FAKE mean fake)
  group   videos that must stay in the same split, e.g. the original video a
          fake was made from (optional; default: the video itself)
  split   train/validation/test (optional; rows without one are split 70/30
          into train and validation by group)

Frames are any image files in the folder, taken in name order. For data sets
larger than memory, `python -m tools.write_tfrecords` writes the splits as
TFRecord shards of decoded frames (`source=tfrecord`, see `tfrecords`). A clip is
`num_frames` frames of one video, sampled by `deepfake_clips`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import ml_collections
import numpy as np
import pandas as pd
import tensorflow as tf
from absl import logging
from sklearn import model_selection
from sklearn.utils import class_weight

from common import io_utils
from common.data_locations import DEFAULT_LABELS_CSV
from common.errors import DataError
from common.labels import DEEPFAKE_CLASSES
from input_pipeline import synthetic_clips, tfrecords
from input_pipeline.deepfake_clips import find_undecodable_frame, frame_loader
from input_pipeline.fer2013 import IMAGE_EXTENSIONS, check_class_counts

# Columns of a shards directory's `<split>.csv`, one row per record.
_INDEX_COLUMNS = ("index", "video", "label", "group", "num_frames")
_LABEL_VALUES = {"0": 0, "1": 1} | {name: index for index, name in enumerate(DEEPFAKE_CLASSES)}


@dataclasses.dataclass
class Videos:
  """A set of videos: frames in memory, as files or in shards, with labels and groups.

  Exactly one of `frames` (uint8 `[n, num_frames, h, w, 3]`), `frame_paths`
  (per video, its frame files in order) and `records` (the split's TFRecord
  shards; `record_ids` are these videos' `index` in them and `record_frames`
  their frame counts) is set.
  """

  names: list[str]
  labels: np.ndarray  # int32 [n], 0 real 1 fake
  groups: np.ndarray  # [n], any hashable ids
  splits: list[str] | None = None
  frames: np.ndarray | None = None
  frame_paths: list[list[str]] | None = None
  records: tfrecords.Shards | None = None
  record_ids: np.ndarray | None = None
  record_frames: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.labels)

  def subset(self, indices: np.ndarray) -> Videos:
    indices = np.asarray(indices, np.int64)
    return Videos(
      names=[self.names[i] for i in indices],
      labels=self.labels[indices],
      groups=self.groups[indices],
      splits=None if self.splits is None else [self.splits[i] for i in indices],
      frames=None if self.frames is None else self.frames[indices],
      frame_paths=None if self.frame_paths is None else [self.frame_paths[i] for i in indices],
      records=self.records,
      record_ids=None if self.records is None else self.record_ids[indices],
      record_frames=None if self.records is None else self.record_frames[indices],
    )

  def frame_counts(self) -> np.ndarray:
    if self.frames is not None:
      return np.full(len(self), self.frames.shape[1], np.int32)
    if self.records is not None:
      return self.record_frames.astype(np.int32)
    return np.array([len(p) for p in self.frame_paths], np.int32)


def label_from_text(value: object) -> int | None:
  """0 (real) or 1 (fake) from `0`, `1`, `REAL`, `FAKE` in any case; else None."""
  return _LABEL_VALUES.get(str(value).strip().lower())


def parse_label(value: str, row: int, csv_path: str) -> int:
  """The label of CSV data row `row` (0-based), or a DataError naming the file and line."""
  label = label_from_text(value)
  if label is None:
    raise DataError(f"{csv_path}, line {row + 2}: label {value!r} is not one of 0, 1, REAL, FAKE.")
  return label


def drop_duplicate_rows(table: pd.DataFrame, key: str, csv_path: str) -> pd.DataFrame:
  """`table` with each `key` once: conflicting repeats are an error, identical ones a warning.

  The same video listed twice with different labels (or groups, splits, ...)
  would train on both answers; which line is right only the user knows, so
  both lines are named. A repeat identical to its first row (labels compared
  as 0/1, so `1` and `FAKE` agree; keys compared as normalised paths) only
  counts the video twice: the first row is kept, with a warning. The index
  keeps the rows' positions in the file, for line numbers (`index + 2`).

  Raises:
    DataError: two rows of one key differ, naming both lines and the fields.
  """
  first_of: dict[str, tuple[int, dict[str, object]]] = {}
  keep, repeats = [], []
  for row, record in zip(table.index, table.to_dict("records"), strict=True):
    name = os.path.normpath(str(record[key]).strip())
    values = {c: str(v).strip() for c, v in record.items() if c != key}
    parsed = label_from_text(values.get("label", ""))
    if parsed is not None:
      values["label"] = parsed
    if name not in first_of:
      first_of[name] = (row, values)
      keep.append(row)
      continue
    first_row, first = first_of[name]
    differing = [c for c in values if values[c] != first[c]]
    if differing:
      detail = "; ".join(
        f"{c} {table.at[first_row, c]!r} vs {table.at[row, c]!r}" for c in differing
      )
      raise DataError(
        f"{csv_path}, lines {first_row + 2} and {row + 2}: {key} {record[key]!r} is listed "
        f"twice with different values ({detail}); keep one of the two rows."
      )
    repeats.append((first_row, row, record[key]))
  if repeats:
    logging.warning(
      "%s: %d repeated row(s) identical to an earlier one ignored, e.g. lines %d and %d (%s %r).",
      csv_path,
      len(repeats),
      repeats[0][0] + 2,
      repeats[0][1] + 2,
      key,
      repeats[0][2],
    )
  return table.loc[keep]


def read_labels_csv(csv_path: str, frames_root: str | None = None) -> Videos:
  """Reads a labels CSV and lists each video's frames.

  Raises:
    DataError: the CSV is missing or lacks a column, a label or split is
      invalid, a row names a frames folder that is missing or holds no
      image, or a video is listed twice with different values
      (`drop_duplicate_rows`).
  """
  if not os.path.isfile(csv_path):
    raise DataError(f"Labels CSV {csv_path!r} does not exist.")
  frames_root = frames_root or os.path.dirname(os.path.abspath(csv_path))
  frame = io_utils.read_csv_table(csv_path, "video,label[,group][,split]")
  missing = [c for c in ("video", "label") if c not in frame.columns]
  if missing:
    raise DataError(
      f"{csv_path}: missing column(s) {missing}; expected video,label[,group][,split], "
      f"found {list(frame.columns)}."
    )
  frame = drop_duplicate_rows(frame, "video", csv_path)
  names, labels, groups, splits, paths = [], [], [], [], []
  for row, record in zip(frame.index, frame.to_dict("records"), strict=True):
    folder = os.path.join(frames_root, record["video"])
    if not os.path.isdir(folder):
      raise DataError(
        f"{csv_path}, line {row + 2}: frames folder {folder!r} of video "
        f"{record['video']!r} does not exist."
      )
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
      raise DataError(f"{csv_path}, line {row + 2}: frames folder {folder!r} holds no image.")
    split = record.get("split", "").strip().lower()
    if split and split not in ("train", "validation", "test"):
      raise DataError(
        f"{csv_path}, line {row + 2}: split {record['split']!r} is not train, validation or test."
      )
    names.append(record["video"])
    labels.append(parse_label(record["label"], row, csv_path))
    groups.append(record.get("group") or record["video"])
    splits.append(split)
    paths.append([os.path.join(folder, f) for f in files])
  if not names:
    raise DataError(f"{csv_path}: no videos listed.")
  return Videos(
    names=names,
    labels=np.asarray(labels, np.int32),
    groups=np.asarray(groups, dtype=object),
    splits=splits if any(splits) else None,
    frame_paths=paths,
  )


def grouped_split(
  labels: np.ndarray, groups: np.ndarray, held_out_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Indices of a split stratified by label that keeps each group on one side.

  Uses `StratifiedGroupKFold` with `round(1 / held_out_fraction)` folds and
  holds out the first fold, so the held-out share is about the fraction asked
  (33% for 0.3) while no group is ever on both sides.
  """
  num_groups = len(set(groups.tolist()))
  folds = min(max(2, round(1 / held_out_fraction)), num_groups)
  if folds < 2:
    raise DataError(f"Cannot split {len(labels)} videos of a single group into two splits.")
  splitter = model_selection.StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
  keep, held_out = next(splitter.split(np.zeros(len(labels)), labels, groups))
  return np.sort(keep), np.sort(held_out)


def take_subset(videos: Videos, fraction: float, seed: int) -> Videos:
  """A random `fraction` of the groups (with all their videos)."""
  if fraction >= 1.0:
    return videos
  if not 0 < fraction:
    raise DataError(f"config.data.subset_fraction={fraction}; expected 0 < f <= 1.")
  unique = np.array(sorted(set(videos.groups.tolist()), key=str), dtype=object)
  rng = np.random.default_rng(seed)
  chosen = set(rng.permutation(unique)[: max(1, round(fraction * len(unique)))].tolist())
  return videos.subset(np.flatnonzero([g in chosen for g in videos.groups]))


def _split_unassigned(videos: Videos, validation_fraction: float, seed: int) -> Videos:
  """Assigns train/validation to rows with an empty split, by a grouped split.

  Data sets often fix only the test split (DFDC, Celeb-DF): their other rows
  are split here as a CSV without a split column would be. If no row is
  unassigned and none is `validation`, the `train` rows are split instead.
  """
  splits = list(videos.splits)
  pool = [i for i, s in enumerate(splits) if not s]
  if not pool and "validation" not in splits:
    pool = [i for i, s in enumerate(splits) if s == "train"]
  if not pool:
    return videos
  pool = np.asarray(pool)
  keep, held_out = grouped_split(
    videos.labels[pool], videos.groups[pool], validation_fraction, seed
  )
  for index in pool[keep]:
    splits[index] = "train"
  for index in pool[held_out]:
    splits[index] = "validation"
  return dataclasses.replace(videos, splits=splits)


@dataclasses.dataclass
class DeepfakeData:
  train: Videos
  validation: Videos
  test: Videos | None
  source: str


def load(config: ml_collections.ConfigDict) -> DeepfakeData:
  """Loads and splits the videos configured by `config.data`."""
  data = config.data
  if data.source not in ("auto", "csv", "synthetic", "tfrecord"):
    raise DataError(
      f"config.data.source={data.source!r}; expected auto, csv, synthetic or tfrecord."
    )
  use_synthetic = data.source == "synthetic"
  if data.source == "auto" and not os.path.exists(data.labels_csv):
    if os.path.normpath(data.labels_csv) != os.path.normpath(DEFAULT_LABELS_CSV):
      raise DataError(f"config.data.labels_csv={data.labels_csv!r} does not exist.")
    logging.warning(
      "No labels CSV at %r: training on the embedded synthetic clips. Point "
      "--config.data.labels_csv (and --config.data.frames_root) at your face crops.",
      data.labels_csv,
    )
    use_synthetic = True
  if data.source == "tfrecord":
    result = _load_shards(data.dir)
  elif use_synthetic:
    syn = data.synthetic

    def make(split: str, count: int) -> Videos:
      videos = synthetic_clips.make_split(
        split, count, syn.frames_per_video, syn.image_size, syn.fake_ratio, config.seed
      )
      names = [f"{split}/{i:05d}" for i in range(len(videos.labels))]
      return Videos(names, videos.labels, videos.groups, frames=videos.frames)

    result = DeepfakeData(
      make("train", syn.num_train_identities),
      make("validation", syn.num_validation_identities),
      None,
      f"synthetic clips ({syn.image_size}x{syn.image_size}, seed {config.seed})",
    )
  else:
    videos = take_subset(
      read_labels_csv(data.labels_csv, data.frames_root or None),
      data.subset_fraction,
      config.seed,
    )
    if videos.splits is not None:
      videos = _split_unassigned(videos, data.validation_fraction, config.seed)
      by_split = {
        name: videos.subset([i for i, s in enumerate(videos.splits) if s == name])
        for name in ("train", "validation", "test")
      }
      if not len(by_split["train"]) or not len(by_split["validation"]):
        raise DataError(f"{data.labels_csv}: the split column needs train and validation rows.")
      result = DeepfakeData(
        by_split["train"], by_split["validation"], by_split["test"] or None, data.labels_csv
      )
    else:
      keep, held_out = grouped_split(
        videos.labels, videos.groups, data.validation_fraction, config.seed
      )
      result = DeepfakeData(videos.subset(keep), videos.subset(held_out), None, data.labels_csv)
    for split in ("train", "validation", "test"):
      if (part := getattr(result, split)) is not None:
        where = f"{data.labels_csv} ({split} videos, subset_fraction {data.subset_fraction:g})"
        check_class_counts(part.labels, DEEPFAKE_CLASSES, split, where)
  for split in ("train", "validation"):
    part = getattr(result, split)
    logging.info(
      "  %-10s %5d videos (%d real, %d fake), %d groups",
      split,
      len(part),
      int((part.labels == 0).sum()),
      int((part.labels == 1).sum()),
      len(set(part.groups.tolist())),
    )
  short = int((result.train.frame_counts() < data.num_frames).sum())
  if short:
    logging.warning(
      "%d training videos have fewer than num_frames=%d frames; their clips repeat frames.",
      short,
      data.num_frames,
    )
  return result


def _load_shards(directory: str) -> DeepfakeData:
  """The splits written by `tools.write_tfrecords`: shards plus `<split>.csv` indexes."""
  if not directory:
    raise DataError("config.data.source='tfrecord' needs --config.data.dir.")
  manifest = tfrecords.read_manifest(directory, "deepfake")
  splits = {}
  for split, shards in manifest.splits.items():
    index_csv = os.path.join(directory, f"{split}.csv")
    if not os.path.isfile(index_csv):
      raise DataError(f"{index_csv} does not exist; rewrite {directory} (tools.write_tfrecords).")
    index = pd.read_csv(index_csv, dtype={"video": str, "group": str}, keep_default_na=False)
    missing = [c for c in _INDEX_COLUMNS if c not in index.columns]
    if missing or len(index) != shards.count:
      raise DataError(
        f"{index_csv}: expected columns {list(_INDEX_COLUMNS)} and {shards.count} rows "
        f"(manifest count); found {list(index.columns)} and {len(index)} rows."
      )
    splits[split] = Videos(
      names=index["video"].tolist(),
      labels=index["label"].to_numpy(np.int32),
      groups=index["group"].to_numpy(object),
      records=shards,
      record_ids=index["index"].to_numpy(np.int64),
      record_frames=index["num_frames"].to_numpy(np.int32),
    )
  return DeepfakeData(
    splits["train"],
    splits["validation"],
    splits.get("test"),
    f"TFRecord shards {directory} ({manifest.encoding}; {manifest.description})",
  )


def class_weights(labels: np.ndarray) -> dict[int, float]:
  """Balanced class weights `n / (2 * count)` from the training labels."""
  present = np.unique(labels)
  if len(present) < 2:
    raise DataError(f"The training split has only class {DEEPFAKE_CLASSES[present[0]]!r} videos.")
  weights = class_weight.compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
  return {0: float(weights[0]), 1: float(weights[1])}


def shard_records(
  config: ml_collections.ConfigDict, encoding: str
) -> tuple[dict[str, tfrecords.SplitRecords], str]:
  """The splits `load(config)` gives, as records for `tfrecords.write_dataset`.

  Every frame of every video is decoded once (in parallel, by tf.data) and
  stored at `data.image_size`, so training can still sample any clip.

  Raises:
    DataError: a frame cannot be decoded (named), or the source is already shards.
  """
  if config.data.source == "tfrecord":
    raise DataError(f"{config.data.dir}: config.data.source='tfrecord' is already shards.")
  loaded = load(config)
  splits = {}
  for name in ("train", "validation", "test"):
    videos = getattr(loaded, name)
    if videos is not None:
      rows: list[dict] = []
      records = video_records(videos, config.data.image_size, encoding, rows)
      splits[name] = tfrecords.SplitRecords(
        records, (config.data.image_size, config.data.image_size, 3), rows
      )
  return splits, loaded.source


def video_records(
  videos: Videos, size: int, encoding: str, rows: list[dict]
) -> Iterator[tuple[bytes, int]]:
  """(serialized record, label) per video; appends each video's index row to `rows`."""
  counts = tf.constant(videos.frame_counts())
  frames_of = frame_loader(videos, size)
  dataset = tf.data.Dataset.range(len(videos)).map(
    lambda video: frames_of(video, tf.range(counts[video])),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  iterator = iter(dataset.prefetch(2))
  for index in range(len(videos)):
    try:
      frames = next(iterator).numpy()
    except tf.errors.InvalidArgumentError as error:
      bad = find_undecodable_frame(videos.subset([index]))
      where = f"Frame {bad[0]!r} cannot be decoded ({bad[1]})" if bad else str(error)
      raise DataError(f"{where}; replace or delete it and rerun.") from error
    encoded = [tfrecords.encode_image(frame, encoding) for frame in frames]
    label = int(videos.labels[index])
    rows.append(
      {
        "index": index,
        "video": videos.names[index],
        "label": label,
        "group": videos.groups[index],
        "num_frames": len(frames),
      }
    )
    yield tfrecords.video_example(encoded, label, index), label
