"""Emotion recognition trainer: ResNet18 through `model.fit`.

Outputs under the working directory (names in `run_paths.RunPaths`):
config.json, metrics.csv, checkpoints/{best,last}.keras, tensorboard/,
test_report.json, export/<version>/ (SavedModel).

Rerunning the same command after an interruption resumes from
`checkpoints/last.keras`: weights, optimizer state and its iteration counter
(which drives the learning-rate schedule), hence the epoch. The best
validation accuracy so far is read back from metrics.csv.
"""

from __future__ import annotations

import json
from typing import Any

import keras
import ml_collections
import numpy as np
from absl import logging
from sklearn import metrics as sk_metrics

from common import io_utils
from inference import export as export_lib
from input_pipeline import emotion_data, tfrecords
from keras_models.augment import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor
from keras_models.resnet import build_resnet18
from training import callbacks as callbacks_lib
from training import distribution, runtime, schedules, summaries
from training import metrics as metrics_lib

BEST_METRIC = "val_accuracy"


def build_preprocessor(config: ml_collections.ConfigDict) -> ImagePreprocessor:
  """Resizing, the train-time augmentations and normalisation, as one layer."""
  augment = config.augment
  return ImagePreprocessor(
    image_size=config.data.image_size,
    crop_area=augment.crop_area,
    crop_aspect_ratio=augment.crop_aspect_ratio,
    horizontal_flip=augment.horizontal_flip,
    color_jitter=augment.color_jitter,
    color_jitter_probability=augment.color_jitter_probability,
    grayscale_probability=augment.grayscale_probability,
    rotation_degrees=augment.rotation_degrees,
    erasing_probability=augment.erasing_probability,
    erasing_area=augment.erasing_area,
    name="preprocess",
  )


def build_model(config: ml_collections.ConfigDict, dtype_policy: str | None = None) -> keras.Model:
  """uint8 images `[batch, h, w, 3]` -> class probabilities, augmenting in training."""
  size = config.data.image_size
  inputs = keras.Input(shape=(None, None, 3), dtype="uint8", name="images")
  preprocessor = build_preprocessor(config)
  backbone = build_resnet18(
    input_shape=(size, size, 3),
    num_classes=len(config.data.class_names),
    dropout=config.model.dropout,
    head_units=config.model.head_units,
    width=config.model.width,
    stem_pool=config.model.stem_pool,
    dtype=dtype_policy,
  )
  return keras.Model(inputs, backbone(preprocessor(inputs)), name="emotion_classifier")


def make_optimizer(
  config: ml_collections.ConfigDict, steps_per_epoch: int
) -> keras.optimizers.Optimizer:
  """AdamW with (warmup and) cosine decay over all training steps."""
  total_steps = config.schedule.num_epochs * steps_per_epoch
  warmup_steps = int(round(config.schedule.warmup_epochs * steps_per_epoch))
  schedule = schedules.warmup_cosine(
    config.optimizer.learning_rate, total_steps, warmup_steps, config.schedule.min_lr_fraction
  )
  return keras.optimizers.AdamW(
    learning_rate=schedule,
    weight_decay=config.optimizer.weight_decay,
    beta_1=config.optimizer.beta_1,
    beta_2=config.optimizer.beta_2,
    clipnorm=config.optimizer.clipnorm or None,
  )


def compile_model(
  model: keras.Model,
  config: ml_collections.ConfigDict,
  steps_per_epoch: int,
  policy: str,
  jit_compile: bool,
) -> None:
  num_classes = len(config.data.class_names)
  runtime.compile_model(
    model,
    jit_compile,
    optimizer=runtime.wrap_optimizer_for_policy(make_optimizer(config, steps_per_epoch), policy),
    loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.training.label_smoothing),
    metrics=[
      keras.metrics.CategoricalAccuracy(name="accuracy"),
      metrics_lib.OneVsRestRocAuc(num_classes, name="roc_auc"),
      metrics_lib.WeightedPrecision(num_classes, name="precision"),
      metrics_lib.WeightedF1(num_classes, name="f1"),
    ],
    steps_per_execution=config.training.steps_per_execution,
  )


def _first_images(split: emotion_data.Split, config: ml_collections.ConfigDict) -> np.ndarray:
  """The first training images as the model receives them.

  From an evaluation-mode dataset of its own: an iterator over the training
  dataset would advance its seeded shuffle and change the run's data order.
  """
  count = min(32, len(split))
  head = emotion_data.head(split, count)
  num_classes = len(config.data.class_names)
  images, _ = next(iter(emotion_data.make_dataset(head, count, num_classes, False, config.seed)))
  return images.numpy()


def _augmenter(model: keras.Model):
  """uint8 images -> uint8 images after (a copy of) the model's training-mode preprocessing."""
  preprocess = summaries.detached_copy(model.get_layer("preprocess"))

  def augment(images: np.ndarray) -> np.ndarray:
    normalized = keras.ops.convert_to_numpy(preprocess(images, training=True)).astype(np.float32)
    pixels = normalized * np.array(IMAGENET_STD, np.float32) + np.array(IMAGENET_MEAN, np.float32)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)

  return augment


def restore_last_checkpoint(model: keras.Model, path: str, steps_per_epoch: int) -> int:
  """Loads weights and optimizer state from `path`; returns the epoch to resume at."""
  iterations = callbacks_lib.restore_training_state(model, path)
  if iterations % steps_per_epoch:
    raise ValueError(
      f"Cannot resume from {path}: it was saved after {iterations} steps, not a "
      f"whole number of epochs of {steps_per_epoch} steps; the batch size or data "
      "changed since. Use a new --workdir for a new configuration."
    )
  epoch = iterations // steps_per_epoch
  if iterations:
    logging.info("Resuming from %s: epoch %d, iteration %d.", path, epoch, iterations)
  return epoch


def evaluate_on_test(
  model: keras.Model,
  split: emotion_data.Split,
  config: ml_collections.ConfigDict,
) -> dict[str, Any]:
  """Accuracy and per-class precision/recall/F1 (scikit-learn) on `split`."""
  class_names = list(config.data.class_names)
  dataset = emotion_data.make_dataset(
    split, config.schedule.batch_size, len(class_names), training=False, seed=config.seed
  )
  probabilities = model.predict(dataset.map(lambda images, _: images), verbose=0)
  predicted = probabilities.argmax(axis=-1)
  true = emotion_data.labels_of(split)
  indices = list(range(len(class_names)))
  report = sk_metrics.classification_report(
    true,
    predicted,
    labels=indices,
    target_names=class_names,
    output_dict=True,
    zero_division=0,
  )
  # One-vs-rest ROC-AUC per class, macro-averaged over the classes that
  # have both positives and negatives (as the training metric does).
  roc_auc_by_class = {
    name: float(sk_metrics.roc_auc_score(true == k, probabilities[:, k]))
    for k, name in enumerate(class_names)
    if 0 < np.sum(true == k) < len(true)
  }
  roc_auc = float(np.mean(list(roc_auc_by_class.values()))) if roc_auc_by_class else None
  return {
    "num_images": int(len(true)),
    "accuracy": float(sk_metrics.accuracy_score(true, predicted)),
    "roc_auc_ovr_macro": roc_auc,
    "precision_weighted": report["weighted avg"]["precision"],
    "recall_weighted": report["weighted avg"]["recall"],
    "f1_weighted": report["weighted avg"]["f1-score"],
    "per_class": {
      name: {
        "precision": report[name]["precision"],
        "recall": report[name]["recall"],
        "f1": report[name]["f1-score"],
        "support": int(report[name]["support"]),
        "roc_auc": roc_auc_by_class.get(name),
      }
      for name in class_names
    },
    "confusion_matrix": sk_metrics.confusion_matrix(true, predicted, labels=indices).tolist(),
  }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, evaluates the best checkpoint on the test split and exports it.

  Returns:
    A summary: the best validation accuracy, its epoch, the test report (or
    None without a test split) and the export path (or None).
  """
  run = runtime.start_run(config, workdir)
  paths = run.paths

  data = emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR)
  batch_size = config.schedule.batch_size
  steps_per_epoch = len(data.train) // batch_size
  if steps_per_epoch == 0:
    raise ValueError(
      f"The training split has {len(data.train)} images, fewer than one batch "
      f"(config.schedule.batch_size={batch_size})."
    )
  num_classes = len(config.data.class_names)
  keep = distribution.evaluation_count(len(data.validation), run.strategy, "validation")
  validation = emotion_data.head(data.validation, keep)
  train_ds, val_ds = (
    distribution.shard_by_data(
      emotion_data.make_dataset(
        split, batch_size, num_classes, training, config.seed, config.data.shuffle_buffer
      )
    )
    for split, training in ((data.train, True), (validation, False))
  )

  policy = runtime.resolve_dtype_policy(config.training.mixed_precision)
  jit_compile = runtime.resolve_jit_compile(
    config.training.jit_compile, run.strategy, config.training.deterministic
  )
  with run.scope():
    model = build_model(config, policy)
    runtime.prepare_model_for_strategy(model, run.strategy)
    compile_model(model, config, steps_per_epoch, policy, jit_compile)
    initial_epoch = restore_last_checkpoint(model, run.resume.last_checkpoint, steps_per_epoch)
  done_rows = callbacks_lib.rows_up_to(run.resume.metrics, initial_epoch * steps_per_epoch)
  logging.info(
    "Training %s (%s, XLA %s, %d parameters) for %d epochs of %d steps, from epoch %d.",
    model.name,
    policy,
    "on" if jit_compile else "off",
    model.count_params(),
    config.schedule.num_epochs,
    steps_per_epoch,
    initial_epoch,
  )
  tensorboard_freq = config.schedule.log_every_steps or "epoch"
  # Shards are read lazily: a corrupt one is named here, not by tf.data.
  with tfrecords.naming_corrupt_shards(data.train, data.validation):
    model.fit(
      train_ds,
      validation_data=val_ds,
      epochs=config.schedule.num_epochs,
      initial_epoch=initial_epoch,
      shuffle=False,  # The dataset reshuffles itself every epoch.
      verbose=runtime.resolve_verbose(config.logging.verbose),
      callbacks=[
        callbacks_lib.StopOnNonFiniteLoss(),
        callbacks_lib.MetricsCsvLogger(paths.metrics, done_rows),
        callbacks_lib.AtomicModelCheckpoint(
          paths.best_checkpoint,
          monitor=BEST_METRIC,
          mode="max",
          initial_best=callbacks_lib.best_value(done_rows, BEST_METRIC, "max"),
        ),
        callbacks_lib.AtomicModelCheckpoint(paths.last_checkpoint),
        keras.callbacks.TensorBoard(paths.tensorboard, update_freq=tensorboard_freq),
        summaries.AugmentedSamples(
          paths.tensorboard_images, _first_images(data.train, config), _augmenter(model)
        ),
        summaries.ValidationFigures(paths.tensorboard_images, config.data.class_names),
      ],
    )

  rows = callbacks_lib.read_metrics(paths.metrics)
  best_row = max(rows, key=lambda r: float(r[BEST_METRIC]))
  summary: dict[str, Any] = {
    "best_val_accuracy": float(best_row[BEST_METRIC]),
    "replicas": run.strategy.num_replicas_in_sync,
    "best_epoch": int(best_row["epoch"]),
    "dtype_policy": policy,
    "jit_compile": bool(model.jit_compile),  # What Keras compiled the train step with.
    "test": None,
    "export": None,
  }
  best = keras.saving.load_model(paths.best_checkpoint, compile=False)
  if data.test is not None:
    with tfrecords.naming_corrupt_shards(data.test):
      report = evaluate_on_test(best, data.test, config)
    report["checkpoint"] = paths.best_checkpoint
    report["epoch"] = summary["best_epoch"]
    io_utils.write_json(paths.test_report, report)
    summary["test"] = report
    logging.info(
      "Test (%d images, best checkpoint of epoch %d): accuracy %.4f, weighted F1 %.4f.",
      report["num_images"],
      report["epoch"],
      report["accuracy"],
      report["f1_weighted"],
    )
  if config.export.enabled:
    summary["export"] = export_lib.export_image_classifier(
      best, paths.export(config.export.version), config.data.class_names, config.data.image_size
    )
    logging.info("Exported the SavedModel to %s.", summary["export"])
  if distribution.is_chief(run.strategy):  # One HParams row per run, not per worker.
    test = summary["test"] or {}
    summaries.write_hparams(
      paths.tensorboard,
      config,
      {
        "best_val_accuracy": summary["best_val_accuracy"],
        "best_epoch": summary["best_epoch"],
        "test_accuracy": test.get("accuracy"),
        "test_f1_weighted": test.get("f1_weighted"),
        "test_roc_auc": test.get("roc_auc_ovr_macro"),
      },
      step=int(rows[-1]["iteration"]),
    )
  logging.info("Summary: %s", json.dumps({k: v for k, v in summary.items() if k != "test"}))
  return summary
