"""Scoring whole videos with a trained deepfake detector, and video-level metrics.

A video's face crops are cut into clips of the model's `num_frames`,
interleaved so that every clip spans the whole video (clip j of k takes
every k-th face from the j-th): with 32 faces and 8-frame clips, 4 clips. The
detector scores each clip; an aggregation turns clip probabilities into the
video's probability of being fake.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import keras
import numpy as np
import tensorflow as tf
from absl import logging
from sklearn import metrics as sk_metrics

from input_pipeline import deepfake_data, face_detection, video_io
from input_pipeline.augment import resize_to_uint8
from input_pipeline.fer2013 import DataError
from keras_models import deepfake as _registers_custom_layers  # noqa: F401

NO_FACE_PROBABILITY = 0.5  # The least costly answer under log-loss when nothing is known.


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
      self.num_frames = int(spec["clips"].shape[1])
      self.frame_size = None  # The export resizes any frame size itself.
      self._loaded = loaded  # Keeps the signature's variables alive.
      self._predict = lambda clips: signature(clips=tf.constant(clips))["probability_fake"]
    elif model_path.endswith(".keras") and os.path.isfile(model_path):
      model = keras.saving.load_model(model_path, compile=False)
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


def score_videos(
  paths: list[str],
  scorer: ClipScorer,
  detector: face_detection.FaceDetector,
  crop: face_detection.CropSettings,
  num_frames: int = 32,
  max_clips: int = 4,
  aggregation: str = "mean",
) -> list[dict[str, object]]:
  """Per video: probability of fake, clips, faces found and a status.

  status is `ok`, `no_face` (probability 0.5, warned) or `unreadable`
  (probability 0.5, warned with the decoder's message).
  """
  aggregate(np.zeros([1]), aggregation)  # Rejects an unknown aggregation up front.
  rows = []
  for path in paths:
    row: dict[str, object] = {"video": path, "aggregation": aggregation}
    try:
      faces = face_detection.extract_video_faces(path, detector, num_frames, crop)
    except video_io.VideoError as error:
      logging.warning("%s; scored %.1f.", error, NO_FACE_PROBABILITY)
      rows.append(
        row
        | {"probability_fake": NO_FACE_PROBABILITY, "clips": 0, "faces": 0}
        | {"frames_sampled": 0, "status": "unreadable"}
      )
      continue
    probabilities = score_faces(faces.crops, scorer, max_clips)
    if not faces.crops:
      logging.warning(
        "%s: no face in %d sampled frames; scored %.1f.",
        path,
        faces.frames_sampled,
        NO_FACE_PROBABILITY,
      )
    rows.append(
      row
      | {
        "probability_fake": aggregate(probabilities, aggregation),
        "clips": len(probabilities),
        "faces": len(faces.crops),
        "frames_sampled": faces.frames_sampled,
        "status": "ok" if faces.crops else "no_face",
      }
    )
    logging.info("%s: %.4f (%d clips)", path, rows[-1]["probability_fake"], len(probabilities))
  return rows


def read_face_image(path: str) -> np.ndarray:
  """A prepared face crop as uint8 RGB; a file that does not decode is a DataError."""
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise DataError(f"Frame {path!r} cannot be decoded as an image (corrupt or not an image).")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def evaluate_videos(
  videos: deepfake_data.Videos, scorer: ClipScorer, max_clips: int, aggregation: str
) -> dict[str, object]:
  """Clip-level and video-level metrics of prepared videos, plus per-video scores."""
  clip_labels, clip_probabilities, rows = [], [], []
  for index, name in enumerate(videos.names):
    if videos.frames is not None:
      faces = list(videos.frames[index])
    else:
      faces = [read_face_image(p) for p in videos.frame_paths[index]]
    probabilities = score_faces(faces, scorer, max_clips)
    label = int(videos.labels[index])
    clip_labels += [label] * len(probabilities)
    clip_probabilities += probabilities.tolist()
    rows.append(
      {
        "video": name,
        "label": label,
        "probability_fake": aggregate(probabilities, aggregation),
        "clips": len(probabilities),
      }
    )
  video_labels = np.array([r["label"] for r in rows])
  video_probabilities = np.array([r["probability_fake"] for r in rows])
  return {
    "aggregation": aggregation,
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
