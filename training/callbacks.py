"""Keras callbacks for the metrics CSV and crash-safe checkpoints."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from absl import logging

from common import io_utils
from common.errors import ResumeError
from training import run_record, weight_averaging

# Columns of metrics.csv, in order. `epoch` counts completed passes over the
# training data; `iteration` counts optimizer steps.
METRICS_COLUMNS = (
  "iteration",
  "epoch",
  "train_loss",
  "val_loss",
  "train_accuracy",
  "val_accuracy",
  "train_roc_auc",
  "val_roc_auc",
  "train_precision",
  "val_precision",
  "train_f1",
  "val_f1",
  "learning_rate",
)
# Metric names in the Keras logs, in the order of the columns above.
LOGGED_METRICS = ("loss", "accuracy", "roc_auc", "precision", "f1")


def read_metrics(path: str, recover: bool = False) -> list[dict[str, str]]:
  """Rows of a metrics CSV; an empty list when there is none yet (`run_record.read_metrics`)."""
  return run_record.read_metrics(path, recover=recover)


def rows_up_to(path: str, iteration: int, recover: bool = False) -> list[dict[str, str]]:
  """Rows of the metrics CSV at `path` logged at or before `iteration`."""
  return [row for row in read_metrics(path, recover) if int(row["iteration"]) <= iteration]


def best_value(rows: Sequence[dict[str, str]], column: str, mode: str) -> float | None:
  """The best value of `column` over `rows` (`max` or `min`), None if no rows."""
  values = [float(row[column]) for row in rows]
  if not values:
    return None
  return max(values) if mode == "max" else min(values)


def current_iteration(model: keras.Model) -> int:
  """The optimizer's step count (a plain or a distributed variable)."""
  return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def current_learning_rate(model: keras.Model) -> float:
  """The learning rate the optimizer applies at its current iteration."""
  return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class MetricsCsvLogger(keras.callbacks.Callback):
  """Writes one row per validation to `metrics.csv` (columns `METRICS_COLUMNS`).

  Ours because `keras.callbacks.CSVLogger` appends to an open file (not
  atomic) and, on resume, keeps the rows logged after the checkpoint.

  The whole file is rewritten atomically at each row, so it is never left
  half-written. It starts from `rows`, the rows up to the checkpoint training
  resumes from (`read_metrics` filtered by the caller); rows written after that
  checkpoint are dropped, so the file has neither duplicates nor gaps.

  Args:
    path: the CSV file.
    rows: earlier rows to keep, oldest first.
    epoch_of_iteration: maps an iteration to the `epoch` column (passes over
      the training data); by default the `model.fit` epoch number is used.
  """

  def __init__(
    self,
    path: str,
    rows: Sequence[dict[str, Any]] = (),
    epoch_of_iteration: Callable[[int], float] | None = None,
  ):
    super().__init__()
    self.path = path
    self.epoch_of_iteration = epoch_of_iteration
    self._rows = list(rows)
    self._write()

  def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    logs = logs or {}
    missing = [
      prefix + name
      for name in LOGGED_METRICS
      for prefix in ("", "val_")
      if prefix + name not in logs
    ]
    if missing:
      raise ValueError(
        f"Epoch {epoch + 1} ended without the metrics {missing}; metrics.csv "
        "needs train and validation values for every row."
      )
    iteration = current_iteration(self.model)
    row: dict[str, Any] = {
      "iteration": iteration,
      "epoch": (
        round(self.epoch_of_iteration(iteration), 4) if self.epoch_of_iteration else epoch + 1
      ),
    }
    for name in LOGGED_METRICS:
      row[f"train_{name}"] = float(logs[name])
      row[f"val_{name}"] = float(logs[f"val_{name}"])
    row["learning_rate"] = current_learning_rate(self.model)
    self._rows.append(row)
    self._write()

  def _write(self) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(self._rows)
    io_utils.write_text(self.path, buffer.getvalue())


class AtomicModelCheckpoint(keras.callbacks.Callback):
  """Saves the whole model (with optimizer state) as `.keras`.

  With weight averaging the saved weights are the average and the optimizer's
  average slots hold the trained weights (`training.weight_averaging`).

  Ours because `keras.callbacks.ModelCheckpoint` saves in place, so a crash
  mid-save leaves a truncated checkpoint, and its integer `save_freq` counts
  batches since `fit` began, not optimizer iterations across resumes. Here the
  file is written to a temporary name and renamed; the best value so far is
  restored on resume with `initial_best`.

  Args:
    path: target `.keras` file; may contain `{iteration}` (e.g.
      `it{iteration:06d}.keras`), filled in with the optimizer iteration.
    monitor: a Keras log key (e.g. `val_accuracy`) to keep only the best
      model, or None to save every time.
    mode: `max` or `min`: which direction of `monitor` is better.
    initial_best: the best value reached before a resume.
    every_n_iterations: save every this many optimizer iterations instead of
      at the end of each `fit` epoch (validation).
    metadata: stored inside the checkpoint (`common.model_metadata`: the
      task and its class names), for the tools that label outputs.
  """

  def __init__(
    self,
    path: str,
    monitor: str | None = None,
    mode: str = "max",
    initial_best: float | None = None,
    every_n_iterations: int | None = None,
    metadata: dict[str, Any] | None = None,
  ):
    super().__init__()
    if mode not in ("max", "min"):
      raise ValueError(f"mode={mode!r}; expected 'max' or 'min'.")
    self.path = path
    self.monitor = monitor
    self.mode = mode
    self.best = initial_best
    self.every_n_iterations = every_n_iterations
    self.metadata = metadata

  def _improved(self, value: float) -> bool:
    if self.best is None:
      return True
    return value > self.best if self.mode == "max" else value < self.best

  def _save(self) -> None:
    path = self.path.format(iteration=current_iteration(self.model))
    save_checkpoint(self.model, path, self.metadata)

  def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
    if self.every_n_iterations and current_iteration(self.model) % self.every_n_iterations == 0:
      self._save()

  def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    if self.every_n_iterations:
      return
    if self.monitor is not None:
      value = (logs or {}).get(self.monitor)
      if value is None or math.isnan(value) or not self._improved(float(value)):
        return
      self.best = float(value)
    self._save()


def save_checkpoint(model: keras.Model, path: str, metadata: dict[str, Any] | None) -> None:
  """Atomically saves `model` as `.keras`, the average as its weights under weight averaging."""
  with weight_averaging.averaged_weights(model):
    io_utils.save_model(model, path, metadata)


def restore_training_state(model: keras.Model, path: str) -> int:
  """Builds the optimizer, then loads weights and optimizer state saved by `AtomicModelCheckpoint`.

  With weight averaging the trained weights go back into the model after
  loading (the checkpoint holds their average there).

  The optimizer is built for a fresh run too. Without a distribution strategy
  Keras would create its variables inside the first trace of the train step,
  and a tf.function that creates variables is traced twice: the first `fit` of
  the tiny deepfake detector took 68 s with the extra trace and 39 s without,
  on a 2-core CPU.

  Returns:
    The optimizer iteration of the checkpoint, 0 if `path` does not exist.

  Raises:
    ResumeError: the checkpoint does not fit the model (another config).
  """
  if not model.optimizer.built:  # A LossScaleOptimizer must not be built twice.
    model.optimizer.build(model.trainable_variables)
  if not os.path.exists(path):
    return 0
  try:
    model.load_weights(path)
  except ValueError as error:
    raise ResumeError(
      f"Cannot resume from {path}: it does not match the model of this config "
      f"({error}). Use a new --workdir, or delete the checkpoint to start over."
    ) from error
  weight_averaging.restored_for_training(model)
  return current_iteration(model)


class ValidationPlateau(keras.callbacks.Callback):
  """Reduce-on-plateau, a min-lr stop and early stopping on one monitored value.

  The rules are those of `keras.callbacks.ReduceLROnPlateau` and
  `EarlyStopping`: after `patience` validations without improvement (none
  counted during `cooldown` validations after a reduction) the learning rate
  is multiplied by `factor`, down to `min_lr`; training stops once the
  learning rate has reached `min_lr`, or after `early_stopping_patience`
  validations without improvement. With `factor=1` the rate is never changed
  (it may follow a schedule) and only the stops apply; `min_lr=None` turns
  the min-lr stop off. The Keras callbacks reset their counters
  whenever `fit` starts, so a resumed run would forget how long it had been
  on a plateau; here the state is replayed from the metrics history instead
  (`history`), and the reasons for stopping are logged.

  Args:
    monitor: the Keras log key (e.g. `val_loss`), lower is better; its column
      in `history` is `monitor` as well.
    history: metrics rows of earlier validations, oldest first.
  """

  def __init__(
    self,
    monitor: str,
    factor: float,
    patience: int,
    cooldown: int,
    min_lr: float | None,
    early_stopping_patience: int,
    history: Sequence[dict[str, str]] = (),
  ):
    super().__init__()
    self.monitor = monitor
    self.factor = factor
    self.patience = patience
    self.cooldown = cooldown
    self.min_lr = min_lr
    self.early_stopping_patience = early_stopping_patience
    self.best = math.inf
    self.wait = 0
    self.cooldown_counter = 0
    self.epochs_without_improvement = 0
    self.stop_reason: str | None = None
    for row in history:
      self._update(float(row[self.monitor]))

  def _update(self, value: float) -> bool:
    """Advances the state by one validation; returns whether to reduce the lr."""
    if self.cooldown_counter > 0:
      self.cooldown_counter -= 1
      self.wait = 0
    if value < self.best:
      self.best = value
      self.wait = 0
      self.epochs_without_improvement = 0
      return False
    self.epochs_without_improvement += 1
    if self.cooldown_counter > 0:
      return False
    self.wait += 1
    if self.wait < self.patience:
      return False
    self.wait = 0
    self.cooldown_counter = self.cooldown
    return True

  def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    value = (logs or {}).get(self.monitor)
    if value is None:
      return
    learning_rate = current_learning_rate(self.model)
    floor = self.min_lr or 0.0
    if self._update(float(value)) and self.factor < 1 and learning_rate > floor:
      new_rate = max(learning_rate * self.factor, floor)
      self.model.optimizer.learning_rate = new_rate
      logging.info(
        "%s has not improved for %d validations: learning rate %.3g -> %.3g.",
        self.monitor,
        self.patience,
        learning_rate,
        new_rate,
      )
      learning_rate = new_rate
    if self.should_stop(learning_rate):
      iteration = current_iteration(self.model)
      logging.info("Stopping at iteration %d: %s.", iteration, self.stop_reason)
      self.model.stop_training = True

  def should_stop(self, learning_rate: float) -> bool:
    """Whether training is over at `learning_rate`; sets `stop_reason`."""
    if self.min_lr is not None and learning_rate <= self.min_lr * (1 + 1e-6):
      self.stop_reason = f"the learning rate reached its minimum {self.min_lr:.3g}"
    elif self.epochs_without_improvement >= self.early_stopping_patience:
      self.stop_reason = (
        f"{self.monitor} has not improved for {self.early_stopping_patience} validations"
      )
    return self.stop_reason is not None


class StopAtIteration(keras.callbacks.Callback):
  """Ends training after `max_iterations` optimizer steps (validating once more).

  Ours because Keras stops on epochs and steps of one `fit` call, not on the
  optimizer iteration, which a resumed run continues from.
  """

  def __init__(self, max_iterations: int):
    super().__init__()
    self.max_iterations = max_iterations

  def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
    if current_iteration(self.model) >= self.max_iterations:
      self.model.stop_training = True


class StopOnNonFiniteLoss(keras.callbacks.Callback):
  """Stops training at the first NaN or Inf loss, before anything is saved.

  Ours because `keras.callbacks.TerminateOnNaN(raise_error=True)` (Keras 3.15)
  also raises before any save, but names only the batch index within the
  epoch, not the optimizer iteration a resume counts in, and says nothing
  of the checkpoints. This raises `FloatingPointError` naming the iteration
  and leaves every checkpoint and metrics.csv as they were.
  """

  def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
    loss = (logs or {}).get("loss")
    if loss is not None and not np.isfinite(loss):
      raise FloatingPointError(
        f"Loss became {loss} at iteration {current_iteration(self.model)}; "
        "training stopped. The checkpoints hold the last good state; lower "
        "the learning rate or check the data before resuming."
      )
