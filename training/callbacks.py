"""Keras callbacks for the metrics CSV and crash-safe checkpoints."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from training import io_utils

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


def read_metrics(path: str) -> list[dict[str, str]]:
  """Rows of a metrics CSV; an empty list when there is none yet."""
  if not os.path.exists(path):
    return []
  with open(path, newline="") as file:
    return list(csv.DictReader(file))


def best_value(rows: Sequence[dict[str, str]], column: str, mode: str) -> float | None:
  """The best value of `column` over `rows` (`max` or `min`), None if no rows."""
  values = [float(row[column]) for row in rows]
  if not values:
    return None
  return max(values) if mode == "max" else min(values)


def current_learning_rate(model: keras.Model) -> float:
  """The learning rate the optimizer applies at its current iteration."""
  return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class MetricsCsvLogger(keras.callbacks.Callback):
  """Writes one row per validation to `metrics.csv` (columns `METRICS_COLUMNS`).

  The whole file is rewritten atomically at each row, so it is never left
  half-written. When training resumes at epoch `e`, rows of later epochs
  (written after the checkpoint that is being resumed from) are dropped, so the
  file has neither duplicates nor gaps.
  """

  def __init__(self, path: str):
    super().__init__()
    self.path = path
    self._rows: list[dict[str, Any]] | None = None

  def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
    self._rows = None

  def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    if self._rows is None:
      self._rows = [r for r in read_metrics(self.path) if int(r["epoch"]) <= epoch]
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
    row: dict[str, Any] = {
      "iteration": int(self.model.optimizer.iterations),
      "epoch": epoch + 1,
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
  """Saves the whole model (with optimizer state) as `.keras` at epoch ends.

  Unlike `keras.callbacks.ModelCheckpoint`, the file is written to a temporary
  name and renamed, so a crash never leaves a truncated checkpoint, and the
  best value so far can be restored on resume (`initial_best`).

  Args:
    path: target `.keras` file.
    monitor: a Keras log key (e.g. `val_accuracy`) to keep only the best
      model, or None to save at every epoch.
    mode: `max` or `min`: which direction of `monitor` is better.
    initial_best: the best value reached before a resume.
  """

  def __init__(
    self,
    path: str,
    monitor: str | None = None,
    mode: str = "max",
    initial_best: float | None = None,
  ):
    super().__init__()
    if mode not in ("max", "min"):
      raise ValueError(f"mode={mode!r}; expected 'max' or 'min'.")
    self.path = path
    self.monitor = monitor
    self.mode = mode
    self.best = initial_best

  def _improved(self, value: float) -> bool:
    if self.best is None:
      return True
    return value > self.best if self.mode == "max" else value < self.best

  def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    if self.monitor is not None:
      value = (logs or {}).get(self.monitor)
      if value is None or math.isnan(value) or not self._improved(float(value)):
        return
      self.best = float(value)
    io_utils.save_model(self.model, self.path)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
  """Stops training at the first NaN or Inf loss, before anything is saved.

  `keras.callbacks.TerminateOnNaN` does the same but only sets a flag, so the
  checkpoint callbacks of that epoch would still save the broken weights; this
  raises instead, naming the iteration, and leaves every checkpoint as it was.
  """

  def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
    loss = (logs or {}).get("loss")
    if loss is not None and not np.isfinite(loss):
      raise FloatingPointError(
        f"Loss became {loss} at iteration {int(self.model.optimizer.iterations)}; "
        "training stopped. The checkpoints hold the last good state; lower "
        "the learning rate or check the data before resuming."
      )
