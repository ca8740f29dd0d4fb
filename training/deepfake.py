"""The deepfake task: clips through an attention-gated EfficientNetB0 and an LSTM.

The original counts in iterations, not epochs: train metrics and
`checkpoints/last.keras` every `schedule.log_every_steps` iterations,
validation every `validation_interval`, at most `max_iterations`. The
training clips repeat forever, so each `model.fit` epoch is one validation
round. Its own parts: class-weighted cross-entropy, Adam with the
reduce-on-plateau recipe (or warmup and cosine), the best checkpoint by
validation loss, `checkpoints/it{iteration:06d}.keras` and the attention
snapshots at each validation, a clip- and video-level test report when the
data have a test split, and the detector export (`inference.export`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from common import labels as labels_lib
from inference import export as export_lib
from inference import video_scoring
from input_pipeline import deepfake_clips, deepfake_data, tfrecords
from keras_models import deepfake as deepfake_model
from training import callbacks as callbacks_lib
from training import distribution, optimizers, schedules, summaries
from training.attention import AttentionSnapshots
from training.run_paths import RunPaths
from training.task import Samples, Task, TrainingData

TEST_MAX_CLIPS = 4  # Clips scored per test video, as tools.evaluate_videos.
TEST_AGGREGATION = "mean"


LEARNING_RATE_SCHEDULES = ("plateau", "cosine")


def learning_rate(
  config: ml_collections.ConfigDict, steps_per_epoch: float
) -> float | keras.optimizers.schedules.LearningRateSchedule:
  """The constant rate that ReduceLROnPlateau lowers, or warmup + cosine decay.

  The recipe's `plateau` suits long runs; a run of a few hundred iterations
  ends before any plateau is detected, and decaying to zero over its
  iterations settles it on a better point than a constant rate does.
  """
  schedule = config.schedule
  peak = config.optimizer.learning_rate
  if schedule.learning_rate_schedule == "plateau":
    return peak
  if schedule.learning_rate_schedule != "cosine":
    raise ValueError(
      f"config.schedule.learning_rate_schedule={schedule.learning_rate_schedule!r}; "
      f"expected one of {list(LEARNING_RATE_SCHEDULES)}."
    )
  warmup = int(round(schedule.warmup_epochs * steps_per_epoch))
  return schedules.warmup_cosine(peak, schedule.max_iterations, warmup, schedule.min_lr_fraction)


@contextlib.contextmanager
def naming_bad_frames(*video_sets: deepfake_data.Videos) -> Iterator[None]:
  """Turns tf.data's decode error, which names no file, into one naming the frame
  (or the corrupt TFRecord shard)."""
  try:
    with tfrecords.naming_corrupt_shards(*(videos.records for videos in video_sets)):
      yield
  except tf.errors.InvalidArgumentError as error:
    bad = deepfake_clips.find_undecodable_frame(*video_sets)
    if bad is None:
      raise
    raise deepfake_data.DataError(
      f"Frame {bad[0]!r} cannot be decoded ({bad[1]}); replace or delete it. The "
      "checkpoints written so far are intact: rerun the command to resume."
    ) from error


def _first_clips(videos: deepfake_data.Videos, config: Any) -> np.ndarray:
  """Four training clips (evaluation-mode sampling, from a dataset of their own: an
  iterator over the training dataset would advance its seeded shuffle)."""
  head = videos.subset(np.arange(min(4, len(videos))))
  clips, _ = next(iter(deepfake_clips.make_dataset(head, config, training=False)))
  return clips.numpy()[:4]


def _frame_augmenter(model: keras.Model):
  """uint8 clips -> their frames as uint8 after (a copy of) the model's training augmentation."""
  augment = summaries.detached_copy(model.get_layer("augment"))

  def frames(clips: np.ndarray) -> np.ndarray:
    augmented = keras.ops.convert_to_numpy(augment(clips, training=True)).astype(np.float32)
    augmented = np.clip(np.round(augmented), 0, 255).astype(np.uint8)
    return augmented.reshape(-1, *augmented.shape[2:])  # one grid row per clip

  return frames


def _snapshot_clips(videos: deepfake_data.Videos, config: Any) -> tuple:
  """The first real and the first fake validation clip (deterministic frames)."""
  dataset = deepfake_clips.make_dataset(videos, config, training=False)
  wanted = {0: None, 1: None}
  for clips, one_hot in dataset:
    for clip, label in zip(clips.numpy(), one_hot.numpy().argmax(-1), strict=True):
      if wanted[int(label)] is None:
        wanted[int(label)] = clip
    if all(v is not None for v in wanted.values()):
      break
  present = [k for k, v in wanted.items() if v is not None]
  return np.stack([wanted[k] for k in present]), [labels_lib.DEEPFAKE_CLASSES[k] for k in present]


class DeepfakeTask(Task):
  """Deepfake detection: real/fake clips, validation every `validation_interval` iterations."""

  monitor = "val_loss"
  monitor_mode = "min"
  positive_class = 1  # fake
  keep_validation_checkpoints = True

  def load_data(self, strategy: tf.distribute.Strategy) -> TrainingData:
    config = self.config
    schedule = config.schedule
    self.data = deepfake_data.load(config)
    weights = deepfake_data.class_weights(self.data.train.labels)
    logging.info("Class weights from the training labels: %s", weights)
    train_ds = distribution.shard_by_data(
      deepfake_clips.make_dataset(self.data.train, config, training=True, weights=weights)
    )
    keep = distribution.evaluation_count(len(self.data.validation), strategy, "validation")
    validation = self.data.validation.subset(np.arange(keep))
    val_ds = distribution.shard_by_data(
      deepfake_clips.make_dataset(validation, config, training=False)
    )
    return TrainingData(
      train=train_ds,
      validation=val_ds,
      steps_per_epoch=len(self.data.train) / schedule.batch_size,
      steps_per_round=schedule.validation_interval,
      max_steps=schedule.max_iterations,
      repeats=True,
    )

  def build_model(self, dtype_policy: str | None = None, jit_compile: bool = False) -> keras.Model:
    return deepfake_model.build_model(self.config, dtype_policy, jit_compile)

  def optimizer(self, steps_per_epoch: float) -> keras.optimizers.Optimizer:
    return optimizers.FusedAdam(learning_rate=learning_rate(self.config, steps_per_epoch))

  def loss(self) -> keras.losses.Loss:
    return keras.losses.CategoricalCrossentropy()

  def epoch_of_iteration(self, iteration: int) -> float:
    return iteration * self.config.schedule.batch_size / len(self.data.train)

  def reading_errors(self) -> ContextManager[None]:
    return naming_bad_frames(self.data.train, self.data.validation)  # Both read frame files.

  def callbacks(
    self, model: keras.Model, paths: RunPaths, history: Sequence[dict[str, str]]
  ) -> tuple[list[keras.callbacks.Callback], list[keras.callbacks.Callback]]:
    config = self.config
    schedule = config.schedule
    on_plateau = schedule.learning_rate_schedule == "plateau"
    # A cosine schedule sets the rate itself (from 0 when it warms up) and ends
    # at max_iterations: only early stopping applies.
    self.plateau = callbacks_lib.ValidationPlateau(
      self.monitor,
      schedule.plateau_factor if on_plateau else 1.0,
      schedule.plateau_patience,
      schedule.plateau_cooldown,
      config.optimizer.learning_rate * schedule.min_lr_fraction if on_plateau else None,
      schedule.early_stopping_patience,
      history,
    )
    clips, labels = _snapshot_clips(self.data.validation, config)
    return [self.plateau], [AttentionSnapshots(clips, labels, paths)]

  def finished(self, model: keras.Model) -> bool:
    return self.plateau.should_stop(callbacks_lib.current_learning_rate(model))

  def samples(self, model: keras.Model) -> Samples:
    return Samples(
      _first_clips(self.data.train, self.config),
      _frame_augmenter(model),
      columns=self.config.data.num_frames,
    )

  def evaluate_test(self, model: keras.Model, checkpoint: str) -> dict[str, Any] | None:
    """Clip- and video-level ROC-AUC, log-loss, accuracy (as tools.evaluate_videos)."""
    test = self.data.test
    if test is None:
      return None
    if test.records is not None:
      logging.warning(
        "No test report from TFRecord shards yet: run tools.evaluate_videos on the "
        "labels CSV the shards were written from."
      )
      return None
    result = video_scoring.evaluate_videos(
      test, video_scoring.ClipScorer(checkpoint), TEST_MAX_CLIPS, TEST_AGGREGATION
    )
    result.pop("videos")
    report = {"checkpoint": checkpoint, "num_videos": len(test), **result}
    logging.info(
      "Test (%d videos): clip ROC-AUC %s, video ROC-AUC %s.",
      len(test),
      report["clip"].get("roc_auc"),
      report["video"].get("roc_auc"),
    )
    return report

  def export(self, model: keras.Model, export_dir: str) -> str:
    return export_lib.export_detector(
      model, export_dir, self.config.data.image_size, self.config.data.class_names
    )

  def summarize(
    self, rows: Sequence[dict[str, str]], best: dict[str, str], test: dict[str, Any] | None
  ) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = {
      "best_val_loss": float(best[self.monitor]),
      "best_val_roc_auc": float(best["val_roc_auc"]),
      "best_iteration": int(best["iteration"]),
      "final_iteration": int(rows[-1]["iteration"]),
    }
    return summary | {"stop_reason": self.plateau.stop_reason}, dict(summary)
