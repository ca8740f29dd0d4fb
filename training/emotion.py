"""The emotion task: ResNet18 on faces, validated after every epoch (`training.loop` runs it).

Its own parts: the FER2013 / synthetic / shard data, AdamW with warmup and
cosine decay over all steps, label smoothing, the best checkpoint by
validation accuracy, a test report on the test split (`test_report.json`) and
the image-classifier export (`inference.export`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from common.errors import ConfigError
from inference import export as export_lib
from inference import reports
from input_pipeline import emotion_data, tfrecords
from keras_models import emotion as emotion_model
from keras_models.augment import IMAGENET_MEAN, IMAGENET_STD
from training import distribution, optimizers, schedules, summaries
from training.task import Samples, Task, TrainingData


class EmotionTask(Task):
  """Emotion recognition: seven classes, one validation per epoch of the training data."""

  monitor = "val_accuracy"
  monitor_mode = "max"

  def load_data(self, strategy: tf.distribute.Strategy) -> TrainingData:
    config = self.config
    self.data = emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR)
    batch_size = config.schedule.batch_size
    self.steps_per_epoch = len(self.data.train) // batch_size
    if self.steps_per_epoch == 0:
      raise ConfigError(
        f"config.schedule.batch_size={batch_size}: the training split has only "
        f"{len(self.data.train)} images, fewer than one batch; set a batch size of at most "
        f"{len(self.data.train)} or give more training data."
      )
    keep = distribution.evaluation_count(len(self.data.validation), strategy, "validation")
    validation = emotion_data.head(self.data.validation, keep)
    train_ds, val_ds = (
      distribution.shard_by_data(
        emotion_data.make_dataset(
          split,
          batch_size,
          len(self.class_names),
          training,
          config.seed,
          config.data.shuffle_buffer,
        )
      )
      for split, training in ((self.data.train, True), (validation, False))
    )
    return TrainingData(
      train=train_ds,
      validation=val_ds,
      steps_per_epoch=self.steps_per_epoch,
      steps_per_round=self.steps_per_epoch,
      max_steps=config.schedule.num_epochs * self.steps_per_epoch,
      repeats=False,  # One pass per fit epoch; the dataset reshuffles itself.
    )

  def build_model(self, dtype_policy: str | None = None, jit_compile: bool = False) -> keras.Model:
    return emotion_model.build_model(self.config, dtype_policy, jit_compile)

  def optimizer(self, steps_per_epoch: float) -> keras.optimizers.Optimizer:
    """AdamW (or Nesterov SGD) with (warmup and) cosine decay over all training steps."""
    config = self.config
    total_steps = config.schedule.num_epochs * steps_per_epoch
    warmup_steps = int(round(config.schedule.warmup_epochs * steps_per_epoch))
    schedule = schedules.warmup_cosine(
      config.optimizer.learning_rate, total_steps, warmup_steps, config.schedule.min_lr_fraction
    )
    common = {
      "learning_rate": schedule,
      "weight_decay": config.optimizer.weight_decay,
      "clipnorm": config.optimizer.clipnorm or None,
    }
    if config.optimizer.name == "sgd":
      return optimizers.SGD(momentum=config.optimizer.momentum, nesterov=True, **common)
    return optimizers.FusedAdamW(
      beta_1=config.optimizer.beta_1, beta_2=config.optimizer.beta_2, **common
    )

  def loss(self) -> keras.losses.Loss:
    return keras.losses.CategoricalCrossentropy(
      label_smoothing=self.config.training.label_smoothing
    )

  def epoch_of_iteration(self, iteration: int) -> int:
    return iteration // self.steps_per_epoch

  def reading_errors(self) -> ContextManager[None]:
    # Shards are read lazily: a corrupt one is named here, not by tf.data.
    return tfrecords.naming_corrupt_shards(self.data.train, self.data.validation)

  def samples(self, model: keras.Model) -> Samples:
    return Samples(_first_images(self.data.train, self.config), _augmenter(model))

  def evaluate_test(self, model: keras.Model, checkpoint: str) -> dict[str, Any] | None:
    if self.data.test is None:
      return None
    with tfrecords.naming_corrupt_shards(self.data.test):
      report = evaluate_on_test(model, self.data.test, self.config)
    report["checkpoint"] = checkpoint
    return report

  def export(self, model: keras.Model, export_dir: str) -> str:
    config = self.config
    return export_lib.export_image_classifier(
      model, export_dir, config.data.class_names, config.data.image_size
    )

  def summarize(
    self, rows: Sequence[dict[str, str]], best: dict[str, str], test: dict[str, Any] | None
  ) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = {"best_val_accuracy": float(best[self.monitor]), "best_epoch": int(best["epoch"])}
    if test is not None:
      test["epoch"] = self.epoch_of_iteration(test["iteration"])
      logging.info(
        "Test (%d images, %s, epoch %d): accuracy %.4f, weighted F1 %.4f.",
        test["num_images"],
        os.path.basename(test["checkpoint"]),
        test["epoch"],
        test["accuracy"],
        test["f1_weighted"],
      )
    test = test or {}
    return summary, {
      **summary,
      "test_accuracy": test.get("accuracy"),
      "test_f1_weighted": test.get("f1_weighted"),
      "test_roc_auc": test.get("roc_auc_ovr_macro"),
    }


def _first_images(split: emotion_data.Split, config: Any) -> np.ndarray:
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


def evaluate_on_test(model: keras.Model, split: emotion_data.Split, config: Any) -> dict[str, Any]:
  """The classification report (`inference.reports`) of `model` on `split`."""
  class_names = list(config.data.class_names)
  dataset = emotion_data.make_dataset(
    split, config.schedule.batch_size, len(class_names), training=False, seed=config.seed
  )
  probabilities = model.predict(dataset.map(lambda images, _: images), verbose=0)
  return reports.classification_report(emotion_data.labels_of(split), probabilities, class_names)
