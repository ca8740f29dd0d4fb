"""Loading a checkpoint, and the class names a model was trained with."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import tensorflow as tf
from absl import logging

from common import model_metadata
from common.errors import ConfigError

# Every custom layer of both models registers itself on import (the fused
# batch norm, SiLU and augmentation layers included), so a checkpoint loads
# in a process that has built no model.
from keras_models import deepfake as _registers_deepfake_layers  # noqa: F401
from keras_models import emotion as _registers_emotion_layers  # noqa: F401


def load_checkpoint(path: str) -> keras.Model:
  """A `.keras` checkpoint of either task, for inference (not compiled).

  Every `.keras` load goes through here, so it finds every custom layer.
  """
  return keras.saving.load_model(path, compile=False)


def load_checkpoint_flag(path: str, flag: str = "--model") -> keras.Model:
  """The `.keras` checkpoint a user named with `flag`; a clear error for anything else.

  For the tools that need the Keras model itself (inner activations for
  Grad-CAM, the layers for TFLite conversion): a SavedModel export keeps only
  its traced serving functions.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{flag}={path!r} does not exist.")
  if os.path.isdir(path) and tf.saved_model.contains_saved_model(path):
    raise ConfigError(
      f"{flag}={path!r} is a SavedModel export, which keeps only its serving functions, "
      "not the Keras layers. Give the .keras checkpoint of the same run instead, e.g. "
      "runs/<name>/checkpoints/best.keras."
    )
  if not (os.path.isfile(path) and path.endswith(".keras")):
    raise ConfigError(
      f"{flag}={path!r} is not a .keras checkpoint; expected e.g. "
      "runs/<name>/checkpoints/best.keras."
    )
  return load_checkpoint(path)


def class_names(
  path: str, default: Sequence[str], stored: Sequence[str] | None = None
) -> list[str]:
  """The class names stored with the checkpoint, export or `.tflite` at `path`.

  `stored`: the names already read from the model (a `.tflite` file's
  metadata). A model saved before class names were stored with it falls back
  to `default` (the built-in list of its task), with a warning.
  """
  names = list(stored) if stored else model_metadata.class_names(path)
  if names is None:
    logging.warning(
      "%s stores no class names (saved before they were stored with models); using %s.",
      path,
      list(default),
    )
    return list(default)
  return names
