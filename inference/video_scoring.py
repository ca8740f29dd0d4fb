"""Scoring whole videos with a trained deepfake detector, and video-level metrics.

The faces of a video's sampled frames are tracked (`face_tracking`), and each
person is scored on their own: the main track and every other non-background
track of `min_track_frames` or more. A track's face crops are cut into clips
of the model's `num_frames`, interleaved so that every clip spans the whole
video (clip j of k takes every k-th face from the j-th): with 32 faces and
8-frame clips, 4 clips. The detector scores each clip; an aggregation turns
clip probabilities into the track's probability of being fake, and the
video's probability is the maximum over its tracks: a video is fake when any
person in it is. `tracks="main"` scores the main track only, `"none"` the
most confident face of each frame without tracking (the rule before tracks).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from absl import logging
from sklearn import metrics as sk_metrics

from common.errors import DataError
from inference import model_io
from input_pipeline import deepfake_data, face_detection, face_tracking, images, video_io
from input_pipeline.images import resize_to_uint8

NO_FACE_PROBABILITY = 0.5  # The least costly answer under log-loss when nothing is known.
DEFAULT_TRACKING = face_tracking.TrackerSettings()
# Which faces of a video are scored (the `--tracks` flag) -> the rule recorded in the CSV.
TRACK_RULES = {
  "all": "max_over_tracks",
  "main": "main_track",
  "none": "most_confident_face_per_frame",
}


def _logit_mean(p: np.ndarray) -> float:
  p = np.clip(p, 1e-6, 1 - 1e-6)
  return float(1 / (1 + np.exp(-np.mean(np.log(p / (1 - p))))))


AGGREGATIONS: dict[str, Callable[[np.ndarray], float]] = {
  "mean": lambda p: float(np.mean(p)),
  "median": lambda p: float(np.median(p)),
  "max": lambda p: float(np.max(p)),
  "logit_mean": _logit_mean,  # Mean in log-odds: confident clips weigh more.
}


def aggregate(probabilities: np.ndarray, how: str) -> float:
  """A video's probability of fake from its clips' probabilities."""
  if how not in AGGREGATIONS:
    raise ValueError(f"aggregation {how!r}; expected one of {list(AGGREGATIONS)}.")
  if len(probabilities) == 0:
    return NO_FACE_PROBABILITY
  return AGGREGATIONS[how](np.asarray(probabilities, np.float64))


def clip_indices(num_available: int, num_frames: int, max_clips: int) -> np.ndarray:
  """Face indices of a video's clips, int `[num_clips, num_frames]`.

  `min(max_clips, num_available // num_frames)` clips (at least one),
  interleaved over the whole video; a video with fewer faces than
  `num_frames` gives one clip that repeats faces, as in training.
  """
  if num_available <= 0:
    return np.zeros([0, num_frames], np.int64)
  num_clips = max(1, min(max_clips, num_available // num_frames))
  total = num_clips * num_frames
  positions = np.floor((np.arange(total) + 0.5) * num_available / total).astype(np.int64)
  positions = np.clip(positions, 0, num_available - 1)
  return positions.reshape(num_frames, num_clips).T


def _export_num_frames(signature: tf.types.experimental.ConcreteFunction) -> int:
  """Frames per clip of a deepfake export, from its `temporal_attention` `[batch, frames]`.

  Its `clips` input is declared of unknown rank (so that a bad request gets
  the graph's message, `export.checked_input`); exports written before that
  declare `[batch, frames, h, w, 3]`.
  """
  clips = signature.structured_input_signature[1]["clips"].shape
  if clips.rank == 5 and clips[1] is not None:
    return int(clips[1])
  return int(signature.structured_outputs["temporal_attention"].shape[1])


class ClipScorer:
  """Probability of fake per clip, from a SavedModel export or a `.keras` checkpoint.

  Clips are uint8 `[b, num_frames, h, w, 3]` of any frame size: the export
  resizes them itself; for a checkpoint they are resized here the same way.
  """

  def __init__(self, model_path: str, batch_size: int = 8):
    self.batch_size = batch_size
    if os.path.isdir(model_path):
      loaded = tf.saved_model.load(model_path)
      if "serving_default" not in loaded.signatures:
        raise DataError(f"{model_path}: SavedModel without a serving_default signature.")
      signature = loaded.signatures["serving_default"]
      spec = signature.structured_input_signature[1]
      if "clips" not in spec:
        raise DataError(
          f"{model_path}: serving_default takes {list(spec)}; expected a deepfake export "
          "taking 'clips'."
        )
      self.num_frames = _export_num_frames(signature)
      self.frame_size = None  # The export resizes any frame size itself.
      self._loaded = loaded  # Keeps the signature's variables alive.
      self._predict = lambda clips: signature(clips=tf.constant(clips))["probability_fake"]
    elif model_path.endswith(".keras") and os.path.isfile(model_path):
      model = model_io.load_checkpoint(model_path)
      if len(model.input.shape) != 5:
        raise DataError(
          f"{model_path}: model input {model.input.shape}; expected deepfake clips "
          "[batch, frames, height, width, 3]."
        )
      self.num_frames, size = int(model.input.shape[1]), int(model.input.shape[2])
      self.frame_size = size

      def predict(clips: np.ndarray) -> tf.Tensor:
        shape = clips.shape
        frames = resize_to_uint8(tf.reshape(clips, [-1, *shape[2:]]), size)
        resized = tf.reshape(frames, [shape[0], shape[1], size, size, 3])
        return model(resized, training=False)[:, 1]

      self._predict = predict
    else:
      raise DataError(
        f"Model {model_path!r}: expected a SavedModel export folder or a .keras checkpoint."
      )

  def __call__(self, clips: np.ndarray) -> np.ndarray:
    outputs = [
      np.asarray(self._predict(clips[start : start + self.batch_size]), np.float64)
      for start in range(0, len(clips), self.batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.zeros([0])


def score_faces(faces: list[np.ndarray], scorer: ClipScorer, max_clips: int) -> np.ndarray:
  """Clip probabilities of one video's face crops (uint8 RGB, any sizes)."""
  if not faces:
    return np.zeros([0])
  if all(face.shape == faces[0].shape for face in faces):
    stacked = np.stack(faces)
  else:  # tight crops: squared as the trainer's tf.data squares them.
    side = scorer.frame_size or max(faces[0].shape[:2])
    stacked = np.stack([resize_to_uint8(face, side).numpy() for face in faces])
  return scorer(stacked[clip_indices(len(faces), scorer.num_frames, max_clips)])


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
  """ROC-AUC, log-loss, accuracy and balanced accuracy at threshold 0.5."""
  labels = np.asarray(labels, np.int64)
  probabilities = np.asarray(probabilities, np.float64)
  predictions = (probabilities >= 0.5).astype(np.int64)
  both_classes = len(np.unique(labels)) == 2
  if not both_classes:
    logging.warning("Only one class among %d items: ROC-AUC is undefined (NaN).", len(labels))
  return {
    "count": int(len(labels)),
    "roc_auc": float(sk_metrics.roc_auc_score(labels, probabilities)) if both_classes else np.nan,
    "log_loss": float(
      sk_metrics.log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=[0, 1])
    ),
    "accuracy": float(sk_metrics.accuracy_score(labels, predictions)),
    "balanced_accuracy": float(sk_metrics.balanced_accuracy_score(labels, predictions))
    if both_classes
    else float(sk_metrics.accuracy_score(labels, predictions)),
  }


def _faces_to_score(
  path: str,
  detector: face_tracking.AllFacesDetector,
  crop: face_detection.CropSettings,
  num_frames: int,
  tracks: str,
  tracking: face_tracking.TrackerSettings,
) -> tuple[list[tuple[int | None, list[np.ndarray]]], int, int]:
  """(track rank or None, crops) per face set scored, frames sampled, tracks found."""
  if tracks == "none":
    faces = face_detection.extract_video_faces(path, detector, num_frames, crop)
    return [(None, faces.crops)], faces.frames_sampled, 0
  video = face_tracking.track_video(path, detector, num_frames, tracking)
  if tracks == "all":
    chosen = face_tracking.people_tracks(video.tracks, tracking)
  else:
    chosen = video.tracks[:1]
  rank = {track.track_id: k for k, track in enumerate(video.tracks)}
  scored = [(rank[t.track_id], video.crops(t, crop)) for t in chosen]
  return scored, video.frames_sampled, len(video.tracks)


def score_videos(
  paths: list[str],
  scorer: ClipScorer,
  detector: face_tracking.AllFacesDetector,
  crop: face_detection.CropSettings,
  num_frames: int = 32,
  max_clips: int = 4,
  aggregation: str = "mean",
  tracks: str = "all",
  tracking: face_tracking.TrackerSettings = DEFAULT_TRACKING,
) -> list[dict[str, object]]:
  """Per video: probability of fake, clips, faces found, a status, and per track scored
  `track<k>_faces` and `track<k>_probability` (k: the track's rank, 0 the main track).

  status is `ok`, `no_face` (probability 0.5, warned) or `unreadable`
  (probability 0.5, warned with the decoder's message). `tracks`: see `TRACK_RULES`.
  """
  aggregate(np.zeros([1]), aggregation)  # Rejects an unknown aggregation up front.
  if tracks not in TRACK_RULES:
    raise ValueError(f"tracks={tracks!r}; expected one of {list(TRACK_RULES)}.")
  rows = []
  for path in paths:
    row: dict[str, object] = {"video": path, "rule": TRACK_RULES[tracks]}
    row["aggregation"] = aggregation
    try:
      scored, frames_sampled, found = _faces_to_score(
        path, detector, crop, num_frames, tracks, tracking
      )
    except video_io.VideoError as error:
      logging.warning("%s; scored %.1f.", error, NO_FACE_PROBABILITY)
      rows.append(
        row
        | {"probability_fake": NO_FACE_PROBABILITY, "clips": 0, "faces": 0}
        | {"frames_sampled": 0, "status": "unreadable", "tracks": 0, "tracks_scored": 0}
      )
      continue
    per_track = {}
    clips = faces = 0
    for k, crops in scored:
      probabilities = score_faces(crops, scorer, max_clips)
      clips, faces = clips + len(probabilities), faces + len(crops)
      if crops:
        per_track[k] = (len(crops), aggregate(probabilities, aggregation))
    if not per_track:
      logging.warning(
        "%s: no face in %d sampled frames; scored %.1f.",
        path,
        frames_sampled,
        NO_FACE_PROBABILITY,
      )
    probability = max((p for _, p in per_track.values()), default=NO_FACE_PROBABILITY)
    row |= {"probability_fake": probability, "clips": clips, "faces": faces}
    row |= {"frames_sampled": frames_sampled, "status": "ok" if per_track else "no_face"}
    row |= {"tracks": found, "tracks_scored": len(per_track) if tracks != "none" else 0}
    for k, (count, p) in per_track.items():
      if k is not None:
        row |= {f"track{k}_faces": count, f"track{k}_probability": p}
    rows.append(row)
    logging.info(
      "%s: %.4f (%d clips%s)",
      path,
      probability,
      clips,
      "".join(f"; track{k} {p:.4f}" for k, (_, p) in per_track.items() if k is not None),
    )
  return rows


def score_table(rows: Sequence[dict[str, object]]) -> pd.DataFrame:
  """The rows as a table: the video's columns, then `track<k>_...` columns by k."""
  columns: list[str] = []
  for row in rows:
    columns += [c for c in row if c not in columns]
  fixed = [c for c in columns if not c.startswith("track") or c.startswith("tracks")]
  per_track = sorted(
    (c for c in columns if c not in fixed), key=lambda c: (int(c[5:].split("_")[0]), c)
  )
  return pd.DataFrame(list(rows), columns=fixed + per_track)


def read_face_image(path: str) -> np.ndarray:
  """A prepared face crop as uint8 RGB (`images.read`); one that does not decode is a DataError."""
  return images.read(path, channels=3)


def source_videos(csv_path: str, names: Sequence[str]) -> tuple[list[str], list[str]]:
  """Per labels-CSV video `names`: its source video and track (`''` if not a track folder).

  `tools.prepare_faces --all_tracks` writes one row per track, `<video_id>/track<k>`
  with `track` k; other rows are a video of their own.
  """
  table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
  track_of = dict(zip(table.video, table.track, strict=True)) if "track" in table else {}
  videos, tracks = [], []
  for name in names:
    track = track_of.get(name, "")
    is_folder = track != "" and name.endswith(f"/track{track}")
    videos.append(name[: -len(f"/track{track}")] if is_folder else name)
    tracks.append(track if is_folder else "")
  return videos, tracks


def evaluate_videos(
  videos: deepfake_data.Videos,
  scorer: ClipScorer,
  max_clips: int,
  aggregation: str,
  sources: tuple[Sequence[str], Sequence[str]] | None = None,
) -> dict[str, object]:
  """Clip-level and video-level metrics of prepared videos, plus per-video scores.

  `sources` (`source_videos`): rows that are tracks of one video make one
  video, whose probability is the maximum over its tracks (as `score_videos`).
  """
  names = list(videos.names)
  source, track = sources or (names, [""] * len(names))
  clip_labels, clip_probabilities, rows = [], [], {}
  for index in range(len(names)):
    if videos.frames is not None:
      faces = list(videos.frames[index])
    else:
      faces = [read_face_image(p) for p in videos.frame_paths[index]]
    probabilities = score_faces(faces, scorer, max_clips)
    label = int(videos.labels[index])
    clip_labels += [label] * len(probabilities)
    clip_probabilities += probabilities.tolist()
    probability = aggregate(probabilities, aggregation)
    row = rows.setdefault(
      source[index],
      {"video": source[index], "label": label, "rule": TRACK_RULES["all"]}
      | {"probability_fake": 0.0, "clips": 0, "tracks": 0},
    )
    if row["label"] != label:
      raise DataError(f"Video {source[index]!r}: its tracks have different labels; expected one.")
    row["probability_fake"] = max(row["probability_fake"], probability)
    row["clips"] += len(probabilities)
    row["tracks"] += 1
    if track[index] != "":
      row[f"track{track[index]}_probability"] = probability
  rows = list(rows.values())
  video_labels = np.array([r["label"] for r in rows])
  video_probabilities = np.array([r["probability_fake"] for r in rows])
  return {
    "aggregation": aggregation,
    "video_rule": TRACK_RULES["all"],
    "clip": binary_metrics(np.array(clip_labels), np.array(clip_probabilities)),
    "video": binary_metrics(video_labels, video_probabilities),
    "videos": rows,
  }


def select_split(videos: deepfake_data.Videos, split: str, csv_path: str) -> deepfake_data.Videos:
  """The videos of `split` ('all': every video)."""
  if split == "all":
    return videos
  if videos.splits is None:
    raise DataError(
      f"{csv_path} has no split column; use --split=all or add a split column "
      "(train/validation/test)."
    )
  chosen = [i for i, s in enumerate(videos.splits) if s == split]
  if not chosen:
    raise DataError(f"{csv_path}: no rows of split {split!r}; found {sorted(set(videos.splits))}.")
  return videos.subset(chosen)
