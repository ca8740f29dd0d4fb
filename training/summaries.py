"""TensorBoard views beyond Keras' scalars: config, HParams, augmented samples, validation figures.

The validation figures cost no extra pass over the data: after each
validation the compiled metrics still hold that validation's accumulators,
so the confusion matrix is read from `WeightedF1`'s count matrix and the ROC
and precision-recall curves from `OneVsRestRocAuc`'s per-threshold counts.
Images are logged at the optimizer iteration, the step of the attention
snapshots and of Keras' batch-level scalars.

Every write here goes through `recording(writer)`: during `fit`, Keras'
TensorBoard callback with an integer `update_freq` leaves a `record_if` in
force that drops any summary whose step is not a multiple of `update_freq`,
which would silently lose validation images at other iterations.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from PIL import Image

from common import figures
from training import callbacks as callbacks_lib
from training import metrics as metrics_lib

EVENT_FILE_PREFIX = "events.out.tfevents."  # TensorBoard's event file names.


@contextlib.contextmanager
def recording(writer: tf.summary.SummaryWriter) -> Iterator[None]:
  """`writer` as the default, recording whatever `record_if` is in force."""
  with writer.as_default(), tf.summary.record_if(True):
    yield


def write_config_text(log_dir: str, config: ml_collections.ConfigDict) -> None:
  """The resolved config, under TensorBoard's Text tab (`config`)."""
  writer = tf.summary.create_file_writer(log_dir)
  body = "\n".join("    " + line for line in config.to_json_best_effort(indent=2).splitlines())
  with recording(writer):
    tf.summary.text("config", body, step=0)
  writer.flush()
  writer.close()


def flatten_config(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """`{"optimizer.learning_rate": 0.001, ...}`: the config's leaves as HParams values.

  The HParams plugin takes bools, numbers and strings only: lists, tuples and
  None become their JSON text (`[0.8, 1.0]`, `null`).
  """
  tree = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  flat: dict[str, Any] = {}

  def visit(prefix: str, value: Any) -> None:
    if isinstance(value, dict):
      for key, child in value.items():
        visit(f"{prefix}.{key}" if prefix else str(key), child)
    elif isinstance(value, bool | int | float | str):
      flat[prefix] = value
    else:
      flat[prefix] = json.dumps(value, default=str)

  visit("", tree)
  return flat


def write_hparams(
  log_dir: str,
  config: ml_collections.ConfigDict,
  final_metrics: dict[str, float | None],
  step: int,
) -> None:
  """The run's hyperparameters and final metrics, for TensorBoard's HParams dashboard.

  Written to the run's TensorBoard directory itself, so `tensorboard --logdir
  runs` shows one row per run: every config field (`flatten_config`), the
  final metrics as scalars `final/<name>` (None values are left out), and the
  last train/validation scalars Keras wrote beneath it. The trial is named
  after the run directory. A resumed run replaces the summary of its earlier
  part (TensorBoard would keep showing the first one): the new event file is
  written aside, moved in, and only then the old one deleted.
  """
  from tensorboard.plugins.hparams import api as hparams_api

  partial = os.path.join(log_dir, "hparams.partial")
  shutil.rmtree(partial, ignore_errors=True)
  old = [name for name in _listdir(log_dir) if name.startswith(EVENT_FILE_PREFIX)]
  writer = tf.summary.create_file_writer(partial)
  trial = os.path.basename(os.path.dirname(os.path.abspath(log_dir)))
  with recording(writer):
    hparams_api.hparams(flatten_config(config), trial_id=trial)
    for name, value in final_metrics.items():
      if value is not None:
        tf.summary.scalar(f"final/{name}", float(value), step=step)
  writer.flush()
  writer.close()
  (written,) = os.listdir(partial)
  os.replace(os.path.join(partial, written), os.path.join(log_dir, written))
  os.rmdir(partial)
  for name in old:
    if name != written:
      os.remove(os.path.join(log_dir, name))


def _listdir(path: str) -> list[str]:
  return os.listdir(path) if os.path.isdir(path) else []


def read_hparams(log_dir: str) -> tuple[dict[str, Any], dict[str, float]]:
  """What `write_hparams` wrote to `log_dir` (the last one): hyperparameters and final metrics."""
  from google.protobuf import json_format
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.plugins.hparams import metadata as hparams_metadata

  accumulator = event_accumulator.EventAccumulator(log_dir, {"tensors": 0})
  accumulator.Reload()
  tags = accumulator.Tags()["tensors"]
  if hparams_metadata.SESSION_START_INFO_TAG not in tags:
    raise ValueError(f"{log_dir} holds no HParams summary; its tags are {sorted(tags)}.")
  content = accumulator.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
  start = hparams_metadata.parse_session_start_info_plugin_data(content)
  hparams = {name: json_format.MessageToDict(value) for name, value in start.hparams.items()}
  metrics = {
    tag[len("final/") :]: float(tf.make_ndarray(accumulator.Tensors(tag)[-1].tensor_proto))
    for tag in tags
    if tag.startswith("final/")
  }
  return hparams, metrics


def image_grid(images: np.ndarray, columns: int = 8, min_side: int = 96) -> np.ndarray:
  """uint8 `[n, h, w, c]` tiled into one image, `columns` per row.

  Tiles smaller than `min_side` are enlarged by an integer factor (nearest
  neighbour, so no pixel is invented) to be seen at TensorBoard's size.
  """
  factor = max(1, -(-min_side // max(images.shape[1:3])))
  images = images.repeat(factor, axis=1).repeat(factor, axis=2)
  count, height, width, channels = images.shape
  columns = min(columns, count)
  rows = -(-count // columns)
  grid = np.zeros((rows * height, columns * width, channels), np.uint8)
  for index, image in enumerate(images):
    row, column = divmod(index, columns)
    grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
  return grid


def _png_to_array(png: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(png)) as image:
    return np.asarray(image.convert("RGB"))


def figure_to_array(figure: Figure) -> np.ndarray:
  """A matplotlib figure as uint8 RGB pixels, for `tf.summary.image`."""
  return _png_to_array(figures.figure_to_png_bytes(figure, dpi=90))


def detached_copy(layer: keras.layers.Layer, seed: int = 0) -> keras.layers.Layer:
  """A copy of an augmentation layer with its own seed.

  Drawing the TensorBoard samples through the model's own layer would advance
  its random stream, so logging would change what the run trains on.
  """
  return type(layer).from_config({**layer.get_config(), "seed": seed})


class AugmentedSamples(keras.callbacks.Callback):
  """At the start of training, a grid of training inputs as the model sees them.

  `augment` maps the uint8 batch to uint8 images after the model's own
  training-mode augmentation, so the grid shows exactly what is trained on.
  """

  def __init__(
    self,
    log_dir: str,
    images: np.ndarray,
    augment: Callable[[Any], np.ndarray],
    columns: int = 8,
  ):
    super().__init__()
    self.log_dir = log_dir
    self.images = images
    self.augment = augment
    self.columns = columns

  def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
    augmented = np.asarray(self.augment(self.images))
    step = callbacks_lib.current_iteration(self.model)
    writer = tf.summary.create_file_writer(self.log_dir)
    with recording(writer):
      tf.summary.image(
        "train/augmented_samples",
        image_grid(augmented, self.columns)[None],
        step=step,
        description="Training inputs after the model's augmentation (training mode).",
      )
    writer.flush()
    writer.close()


def find_metric(model: keras.Model, metric_type: type) -> keras.metrics.Metric | None:
  """The compiled metric of `metric_type` (searched inside Keras' metric containers)."""
  pending = list(model.metrics)
  while pending:
    metric = pending.pop(0)
    if isinstance(metric, metric_type):
      return metric
    pending += list(getattr(metric, "metrics", []))
  return None


def roc_pr_figure(auc_metric: metrics_lib.OneVsRestRocAuc, positive: int, title: str) -> Figure:
  """ROC and precision-recall curves of class `positive` from the metric's counts."""
  tp = keras.ops.convert_to_numpy(auc_metric.true_positives)[:, positive]
  fp = keras.ops.convert_to_numpy(auc_metric.false_positives)[:, positive]
  tn = keras.ops.convert_to_numpy(auc_metric.true_negatives)[:, positive]
  fn = keras.ops.convert_to_numpy(auc_metric.false_negatives)[:, positive]
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
    false_positive_rate = np.where(fp + tn > 0, fp / (fp + tn), 0.0)
    precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
  area = float(
    np.sum((false_positive_rate[:-1] - false_positive_rate[1:]) * (recall[:-1] + recall[1:]) / 2)
  )
  figure = Figure(figsize=(9, 4))
  figure.suptitle(title)
  roc = figure.add_subplot(1, 2, 1)
  roc.plot(false_positive_rate, recall, lw=2)
  roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
  roc.set(xlabel="False positive rate", ylabel="True positive rate", title=f"ROC (AUC {area:.3f})")
  pr = figure.add_subplot(1, 2, 2)
  pr.plot(recall, precision, lw=2)
  base_rate = (tp + fn)[0] / max((tp + fn + fp + tn)[0], 1)
  pr.axhline(base_rate, ls="--", color="grey", lw=1)
  pr.set(xlabel="Recall", ylabel="Precision", title="Precision-recall")
  for axes in (roc, pr):
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
  figure.tight_layout()
  return figure


class ValidationFigures(keras.callbacks.Callback):
  """After each validation: the confusion matrix, and ROC/PR curves for a binary task."""

  def __init__(self, log_dir: str, class_names: Sequence[str], positive_class: int | None = None):
    super().__init__()
    self.log_dir = log_dir
    self.class_names = list(class_names)
    self.positive_class = positive_class
    self._writer = None

  def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self.log_dir)
    step = callbacks_lib.current_iteration(self.model)
    images = {}
    confusion_metric = find_metric(self.model, metrics_lib.WeightedF1)
    if confusion_metric is not None:
      counts = keras.ops.convert_to_numpy(confusion_metric.confusion).round().astype(np.int64)
      images["validation/confusion_matrix"] = figures.confusion_matrix_figure(
        counts, self.class_names, f"Validation confusion matrix, iteration {step}"
      )
    auc_metric = find_metric(self.model, metrics_lib.OneVsRestRocAuc)
    if auc_metric is not None and self.positive_class is not None:
      name = self.class_names[self.positive_class]
      images["validation/roc_pr_curves"] = roc_pr_figure(
        auc_metric, self.positive_class, f"Validation, '{name}' positive, iteration {step}"
      )
    with recording(self._writer):
      for tag, figure in images.items():
        tf.summary.image(tag, figure_to_array(figure)[None], step=step)
    self._writer.flush()

  def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None
