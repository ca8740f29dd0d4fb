"""Loading a checkpoint, and the class names a model was trained with."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from absl import logging

from common import model_metadata

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
