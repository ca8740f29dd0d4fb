"""Deepfake detector trainer: iteration-based cadence through `model.fit`.

The original counts in iterations, not epochs: train metrics every
`log_every_steps` iterations, validation every `validation_interval`. Here a
`model.fit` epoch is `validation_interval` steps over a training set that
repeats forever, so each Keras "epoch end" is a validation round.

Outputs under the working directory: config.json, metrics.csv (a row per
validation, `epoch` = passes over the training videos), checkpoints/last.keras
(every log interval), checkpoints/it{iteration:06d}.keras (every validation),
checkpoints/best.keras (lowest validation loss), attention/it*.png and
TensorBoard images of the attention maps, tensorboard/, export/<version>/.

Rerunning the same command resumes from last.keras; a run interrupted inside
a validation round first finishes that round, so validations stay at
multiples of `validation_interval`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import cv2
import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from common import io_utils
from common import labels as labels_lib
from inference import export as export_lib
from input_pipeline import deepfake_data, tfrecords
from keras_models import deepfake as deepfake_model
from training import callbacks as callbacks_lib
from training import distribution, runtime, schedules, summaries
from training import metrics as metrics_lib

MONITOR = "val_loss"


def build_model(
  config: ml_collections.ConfigDict, dtype_policy: str | None = None, jit_compile: bool = False
) -> keras.Model:
  """The detector; with `jit_compile` its LSTM avoids cuDNN, which XLA cannot compile."""
  return deepfake_model.build_deepfake_detector(
    num_frames=config.data.num_frames,
    frame_size=config.data.image_size,
    lstm_units=config.model.lstm_units,
    dropout=config.model.dropout,
    weights=config.model.backbone_weights or None,
    attention_after=config.model.attention_after,
    batch_norm_momentum=config.model.batch_norm_momentum or None,
    drop_connect_rate=config.model.drop_connect_rate,
    augment=config.augment.to_dict(),
    lstm_use_cudnn=False if jit_compile else "auto",
    dtype=dtype_policy,
  )


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


def compile_model(
  model: keras.Model,
  config: ml_collections.ConfigDict,
  steps_per_epoch: float,
  policy: str,
  jit_compile: bool,
) -> None:
  runtime.compile_model(
    model,
    jit_compile,
    optimizer=runtime.wrap_optimizer_for_policy(
      keras.optimizers.Adam(learning_rate=learning_rate(config, steps_per_epoch)), policy
    ),
    loss=keras.losses.CategoricalCrossentropy(),
    metrics=[
      keras.metrics.CategoricalAccuracy(name="accuracy"),
      metrics_lib.OneVsRestRocAuc(2, name="roc_auc"),
      metrics_lib.WeightedPrecision(2, name="precision"),
      metrics_lib.WeightedF1(2, name="f1"),
    ],
    steps_per_execution=config.training.steps_per_execution,
  )


def overlay_attention(clip: np.ndarray, maps: np.ndarray, min_side: int = 128) -> np.ndarray:
  """Frames side by side, each blended with its attention map (JET colours).

  Args:
    clip: uint8 `[t, s, s, 3]` RGB.
    maps: float `[t, h, w]` in 0-1.
    min_side: frames smaller than this are enlarged to it, to be legible.

  Returns:
    uint8 RGB `[2 * side, t * side, 3]`: the frames above, the overlays below.
  """
  side = max(clip.shape[1], min_side)
  frames, overlays = [], []
  for frame, attention in zip(clip, maps, strict=True):
    frame = cv2.resize(frame, (side, side), interpolation=cv2.INTER_NEAREST)
    heat = cv2.resize(attention.astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    heat = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)
    frames.append(frame)
    overlays.append(cv2.addWeighted(frame, 0.55, cv2.cvtColor(heat, cv2.COLOR_BGR2RGB), 0.45, 0))
  return np.concatenate([np.concatenate(frames, 1), np.concatenate(overlays, 1)], 0)


class AttentionSnapshots(keras.callbacks.Callback):
  """At each validation, draws the attention of a fixed real and a fixed fake clip.

  Writes `attention/it{iteration:06d}.png` (real on top, fake below: frames,
  then overlays, with the model's probability of fake in the TensorBoard
  description) and the same images to TensorBoard.
  """

  def __init__(self, clips: np.ndarray, labels: list[str], png_dir: str, log_dir: str):
    super().__init__()
    self.clips = clips
    self.labels = labels
    self.png_dir = png_dir
    self.writer = tf.summary.create_file_writer(log_dir)
    self._explainer: keras.Model | None = None

  def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    if self._explainer is None:
      self._explainer = deepfake_model.build_explainer(self.model)
    outputs = self._explainer(self.clips, training=False)
    maps = keras.ops.convert_to_numpy(outputs["spatial_attention"])
    fake_probability = keras.ops.convert_to_numpy(outputs["probabilities"])[:, 1]
    panels = [overlay_attention(clip, m) for clip, m in zip(self.clips, maps, strict=True)]
    iteration = callbacks_lib.current_iteration(self.model)
    path = os.path.join(self.png_dir, f"it{iteration:06d}.png")
    image = np.concatenate(panels, 0)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if ok:
      io_utils.write_bytes(path, encoded.tobytes())
    with summaries.recording(self.writer):
      for label, panel, probability in zip(self.labels, panels, fake_probability, strict=True):
        tf.summary.image(
          f"attention/{label}",
          panel[None],
          step=iteration,
          description=f"{label} clip; model's probability of fake {probability:.3f}",
        )
    self.writer.flush()


@contextlib.contextmanager
def naming_bad_frames(*video_sets: deepfake_data.Videos) -> Iterator[None]:
  """Turns tf.data's decode error, which names no file, into one naming the frame
  (or the corrupt TFRecord shard)."""
  try:
    with tfrecords.naming_corrupt_shards(*(videos.records for videos in video_sets)):
      yield
  except tf.errors.InvalidArgumentError as error:
    bad = deepfake_data.find_undecodable_frame(*video_sets)
    if bad is None:
      raise
    raise deepfake_data.DataError(
      f"Frame {bad[0]!r} cannot be decoded ({bad[1]}); replace or delete it. The "
      "checkpoints written so far are intact: rerun the command to resume."
    ) from error


def _first_clips(videos: deepfake_data.Videos, config: ml_collections.ConfigDict) -> np.ndarray:
  """Four training clips (evaluation-mode sampling, from a dataset of their own: an
  iterator over the training dataset would advance its seeded shuffle)."""
  head = videos.subset(np.arange(min(4, len(videos))))
  clips, _ = next(iter(deepfake_data.make_dataset(head, config, training=False)))
  return clips.numpy()[:4]


def _frame_augmenter(model: keras.Model):
  """uint8 clips -> their frames as uint8 after (a copy of) the model's training augmentation."""
  augment = summaries.detached_copy(model.get_layer("augment"))

  def frames(clips: np.ndarray) -> np.ndarray:
    augmented = keras.ops.convert_to_numpy(augment(clips, training=True)).astype(np.float32)
    augmented = np.clip(np.round(augmented), 0, 255).astype(np.uint8)
    return augmented.reshape(-1, *augmented.shape[2:])  # one grid row per clip

  return frames


def _snapshot_clips(videos: deepfake_data.Videos, config: ml_collections.ConfigDict) -> tuple:
  """The first real and the first fake validation clip (deterministic frames)."""
  dataset = deepfake_data.make_dataset(videos, config, training=False)
  wanted = {0: None, 1: None}
  for clips, one_hot in dataset:
    for clip, label in zip(clips.numpy(), one_hot.numpy().argmax(-1), strict=True):
      if wanted[int(label)] is None:
        wanted[int(label)] = clip
    if all(v is not None for v in wanted.values()):
      break
  present = [k for k, v in wanted.items() if v is not None]
  return np.stack([wanted[k] for k in present]), [labels_lib.DEEPFAKE_CLASSES[k] for k in present]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the detector; returns the best validation loss, its iteration and the export."""
  run = runtime.start_run(config, workdir)
  paths = run.paths
  schedule = config.schedule

  data = deepfake_data.load(config)
  weights = deepfake_data.class_weights(data.train.labels)
  logging.info("Class weights from the training labels: %s", weights)
  train_ds = distribution.shard_by_data(
    deepfake_data.make_dataset(data.train, config, training=True, weights=weights)
  )
  keep = distribution.evaluation_count(len(data.validation), run.strategy, "validation")
  validation = data.validation.subset(np.arange(keep))
  val_ds = deepfake_data.make_dataset(validation, config, training=False)
  val_ds = distribution.shard_by_data(val_ds)

  policy = runtime.resolve_dtype_policy(config.training.mixed_precision)
  jit_compile = runtime.resolve_jit_compile(
    config.training.jit_compile, run.strategy, config.training.deterministic
  )
  with run.scope():
    model = build_model(config, policy, jit_compile)
    runtime.prepare_model_for_strategy(model, run.strategy)
    compile_model(model, config, len(data.train) / schedule.batch_size, policy, jit_compile)
    iteration = callbacks_lib.restore_training_state(model, run.resume.last_checkpoint)
  if iteration:
    logging.info("Resuming from %s at iteration %d.", run.resume.last_checkpoint, iteration)
  history = callbacks_lib.rows_up_to(run.resume.metrics, iteration)
  on_plateau = schedule.learning_rate_schedule == "plateau"
  # A cosine schedule sets the rate itself (from 0 when it warms up) and ends
  # at max_iterations: only early stopping applies.
  plateau = callbacks_lib.ValidationPlateau(
    MONITOR,
    schedule.plateau_factor if on_plateau else 1.0,
    schedule.plateau_patience,
    schedule.plateau_cooldown,
    config.optimizer.learning_rate * schedule.min_lr_fraction if on_plateau else None,
    schedule.early_stopping_patience,
    history,
  )
  with naming_bad_frames(data.train, data.validation):  # Both read frame files.
    clips, labels = _snapshot_clips(data.validation, config)
    first_clips = _first_clips(data.train, config)
  callbacks = [
    callbacks_lib.StopOnNonFiniteLoss(),
    callbacks_lib.StopAtIteration(schedule.max_iterations),
    callbacks_lib.MetricsCsvLogger(
      paths.metrics, history, lambda it: it * schedule.batch_size / len(data.train)
    ),
    plateau,
    callbacks_lib.AtomicModelCheckpoint(
      paths.best_checkpoint,
      monitor=MONITOR,
      mode="min",
      initial_best=callbacks_lib.best_value(history, MONITOR, "min"),
    ),
    callbacks_lib.AtomicModelCheckpoint(
      os.path.join(os.path.dirname(paths.last_checkpoint), "it{iteration:06d}.keras")
    ),
    callbacks_lib.AtomicModelCheckpoint(
      paths.last_checkpoint, every_n_iterations=schedule.log_every_steps
    ),
    AttentionSnapshots(
      clips,
      labels,
      os.path.join(workdir, "attention"),
      os.path.join(paths.tensorboard, "attention"),
    ),
    keras.callbacks.TensorBoard(paths.tensorboard, update_freq=schedule.log_every_steps or "epoch"),
    summaries.AugmentedSamples(
      paths.tensorboard_images,
      first_clips,
      _frame_augmenter(model),
      columns=config.data.num_frames,
    ),
    summaries.ValidationFigures(
      paths.tensorboard_images, labels_lib.DEEPFAKE_CLASSES, positive_class=1
    ),
  ]
  verbose = runtime.resolve_verbose(config.logging.verbose)
  rounds = math.ceil(schedule.max_iterations / schedule.validation_interval)
  finished = iteration >= schedule.max_iterations or plateau.should_stop(
    callbacks_lib.current_learning_rate(model)
  )
  logging.info(
    "Training %s (%s, XLA %s, %d parameters) from iteration %d to %d, validating every %d.",
    model.name,
    policy,
    "on" if jit_compile else "off",
    model.count_params(),
    iteration,
    schedule.max_iterations,
    schedule.validation_interval,
  )

  def fit(**kwargs: Any) -> None:
    with naming_bad_frames(data.train, data.validation):
      model.fit(
        train_ds,
        validation_data=val_ds,
        verbose=verbose,
        callbacks=callbacks,
        shuffle=False,
        **kwargs,
      )

  done_in_round = iteration % schedule.validation_interval
  if not finished and done_in_round:
    # Finish the interrupted round so that validations stay on the cadence.
    fit(steps_per_epoch=schedule.validation_interval - done_in_round, epochs=1)
    iteration = callbacks_lib.current_iteration(model)
    finished = model.stop_training or iteration >= schedule.max_iterations
  if not finished:
    fit(
      steps_per_epoch=schedule.validation_interval,
      initial_epoch=iteration // schedule.validation_interval,
      epochs=rounds,
    )

  rows = callbacks_lib.read_metrics(paths.metrics)
  best_row = min(rows, key=lambda r: float(r[MONITOR]))
  summary: dict[str, Any] = {
    "best_val_loss": float(best_row[MONITOR]),
    "replicas": run.strategy.num_replicas_in_sync,
    "best_val_roc_auc": float(best_row["val_roc_auc"]),
    "best_iteration": int(best_row["iteration"]),
    "dtype_policy": policy,
    "jit_compile": bool(model.jit_compile),  # What Keras compiled the train step with.
    "final_iteration": int(rows[-1]["iteration"]),
    "stop_reason": plateau.stop_reason,
    "export": None,
  }
  if distribution.is_chief(run.strategy):  # One HParams row per run, not per worker.
    summaries.write_hparams(
      paths.tensorboard,
      config,
      {
        "best_val_loss": summary["best_val_loss"],
        "best_val_roc_auc": summary["best_val_roc_auc"],
        "best_iteration": summary["best_iteration"],
        "final_iteration": summary["final_iteration"],
      },
      step=summary["final_iteration"],
    )
  if config.export.enabled:
    best = keras.saving.load_model(paths.best_checkpoint, compile=False)
    summary["export"] = export_lib.export_detector(
      best, paths.export(config.export.version), config.data.image_size
    )
    logging.info("Exported the SavedModel to %s.", summary["export"])
  logging.info("Summary: %s", summary)
  return summary
