"""The emotion classifier: on-device preprocessing and augmentation, then a ResNet18."""

from __future__ import annotations

import keras
import ml_collections

from keras_models.augment import ImagePreprocessor
from keras_models.resnet import build_resnet18


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
    eval_crop_fraction=config.data.eval_crop_fraction,
    name="preprocess",
  )


def build_model(
  config: ml_collections.ConfigDict, dtype_policy: str | None = None, jit_compile: bool = False
) -> keras.Model:
  """uint8 images `[batch, h, w, 3]` -> class probabilities, augmenting in training.

  `jit_compile` is accepted for the one model-builder signature of both tasks;
  every layer here compiles with XLA as it is.
  """
  del jit_compile
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
