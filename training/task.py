"""The task interface: what a task supplies to the one training loop (`training.loop`).

The TF Model Garden `Task` shape: a task names its data, model, optimizer,
loss, the quantity that picks the best checkpoint, its own extra callbacks,
its test evaluation, its export and the figures of its summary. Everything
else (strategy, precision, XLA, compile, resume, metrics CSV, checkpoints,
TensorBoard, NaN stop, the HParams summary) is the loop's, once for all tasks.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from training import metrics as metrics_lib
from training.run_paths import RunPaths


@dataclasses.dataclass
class TrainingData:
  """The datasets of a run (sharded for the strategy) and its cadence in optimizer steps."""

  train: tf.data.Dataset
  validation: tf.data.Dataset
  steps_per_epoch: float  # Steps per pass over the training data.
  steps_per_round: int  # Steps between validations (a `model.fit` epoch).
  max_steps: int  # The step training ends at.
  repeats: bool  # `train` repeats forever: each fit epoch takes `steps_per_round` steps of it.


@dataclasses.dataclass
class Samples:
  """Training inputs for TensorBoard's `train/augmented_samples` grid."""

  inputs: np.ndarray
  augment: Callable[[np.ndarray], np.ndarray]  # inputs -> uint8 images after augmentation
  columns: int = 8


class Task(abc.ABC):
  """One task: emotion recognition, deepfake detection, ...

  Attributes:
    monitor: the Keras log key that picks `checkpoints/best.keras`.
    monitor_mode: `max` or `min`.
    positive_class: the class whose ROC and PR curves TensorBoard draws
      (None: one-vs-rest confusion matrices only).
    keep_validation_checkpoints: also keep `checkpoints/it{iteration}.keras`
      at every validation.
  """

  monitor: str = "val_accuracy"
  monitor_mode: str = "max"
  positive_class: int | None = None
  keep_validation_checkpoints: bool = False

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @property
  def class_names(self) -> list[str]:
    return list(self.config.data.class_names)

  @abc.abstractmethod
  def load_data(self, strategy: tf.distribute.Strategy) -> TrainingData:
    """Reads the data and makes the training and validation datasets."""

  @abc.abstractmethod
  def build_model(self, dtype_policy: str | None = None, jit_compile: bool = False) -> keras.Model:
    """The model (uint8 inputs -> class probabilities) under `dtype_policy`."""

  @abc.abstractmethod
  def optimizer(self, steps_per_epoch: float) -> keras.optimizers.Optimizer:
    """The optimizer with its learning-rate schedule."""

  @abc.abstractmethod
  def loss(self) -> keras.losses.Loss:
    """The training loss."""

  def metrics(self) -> list[keras.metrics.Metric]:
    """The compiled metrics: the columns of metrics.csv (`callbacks.LOGGED_METRICS`)."""
    return metrics_lib.classification_metrics(len(self.class_names))

  def epoch_of_iteration(self, iteration: int) -> float:
    """The `epoch` column of metrics.csv at `iteration` (passes over the training data)."""
    raise NotImplementedError

  def reading_errors(self) -> ContextManager[None]:
    """Wraps reading the data: turns tf.data's errors into ones naming the bad file."""
    return contextlib.nullcontext()

  def callbacks(
    self, model: keras.Model, paths: RunPaths, history: Sequence[dict[str, str]]
  ) -> tuple[list[keras.callbacks.Callback], list[keras.callbacks.Callback]]:
    """The task's own callbacks: (before the checkpoints: they may stop or change the
    learning rate; after them: they draw). `history` holds the metrics rows so far."""
    return [], []

  def finished(self, model: keras.Model) -> bool:
    """Whether a resumed run has nothing left to train (beside reaching `max_steps`)."""
    return False

  @abc.abstractmethod
  def samples(self, model: keras.Model) -> Samples:
    """Inputs for the augmented-samples grid (read without advancing the training data)."""

  @abc.abstractmethod
  def evaluate_test(self, model: keras.Model, checkpoint: str) -> dict[str, Any] | None:
    """The test report of the best model (`checkpoint`), or None without a test split."""

  @abc.abstractmethod
  def export(self, model: keras.Model, export_dir: str) -> str:
    """Writes the SavedModel (through `inference.export`); returns its path."""

  @abc.abstractmethod
  def summarize(
    self, rows: Sequence[dict[str, str]], best: dict[str, str], test: dict[str, Any] | None
  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the task's keys of the run summary, the `final/...` HParams metrics)."""
