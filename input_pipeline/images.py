"""Pixels brought to a model's input size outside the model (tf.data, serving signatures)."""

from __future__ import annotations

import tensorflow as tf


def resize_to_uint8(images: tf.Tensor, size: int, antialias: bool = False) -> tf.Tensor:
  """Bilinear resize of uint8 images to `size` x `size`, rounded back to uint8.

  The one resize for pixels brought to a model's input size outside the model,
  so training and serving see the same pixels: deepfake frames in tf.data and
  in the deepfake export (without antialiasing), and encoded files in the
  emotion export (`antialias=True`, as `resampling.resize` inside the emotion
  model, which resizes the other signature's images).
  """
  resized = tf.image.resize(images, (size, size), antialias=antialias)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
