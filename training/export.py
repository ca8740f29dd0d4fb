"""SavedModel export for TF Serving.

`DIR/export/<version>/` follows TF Serving's versioned layout: point
`--model_base_path` at `DIR/export` and the server loads the highest version.
The `serving_default` signature takes raw uint8 images and does all the
preprocessing itself, so clients send pixels, not normalised tensors.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import keras
import tensorflow as tf

from training import io_utils


def export_image_classifier(model: keras.Model, export_dir: str, class_names: Sequence[str]) -> str:
  """Writes `model` as a SavedModel with a `serving_default` signature.

  Signature: `images` uint8 `[batch, height, width, channels]` (any height and
  width, 1 or 3 channels) -> `probabilities` float32 `[batch, num_classes]` and
  `labels` string `[batch]` (the most probable class name).

  Returns:
    `export_dir`.
  """
  names = tf.constant(list(class_names))

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
  def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
    channels = tf.shape(images)[-1]
    check = tf.debugging.Assert(
      tf.logical_or(tf.equal(channels, 1), tf.equal(channels, 3)),
      ["images must have 1 (grayscale) or 3 (RGB) channels; got shape", tf.shape(images)],
    )
    with tf.control_dependencies([check]):
      images = tf.identity(images)
    images = tf.cond(tf.equal(channels, 1), lambda: tf.tile(images, [1, 1, 1, 3]), lambda: images)
    images = tf.ensure_shape(images, [None, None, None, 3])
    probabilities = model(images, training=False)
    return {
      "probabilities": probabilities,
      "labels": tf.gather(names, tf.argmax(probabilities, axis=-1)),
    }

  return write_saved_model(model, serve, export_dir)


def write_saved_model(
  model: keras.Model, serve: tf.types.experimental.GenericFunction, export_dir: str
) -> str:
  """Writes `model` with `serve` as its `serving_default` signature, atomically.

  The SavedModel is written beside `export_dir` and renamed into place, so an
  interrupted export never leaves a half-written model where TF Serving looks.
  """
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint("serving_default", serve)
  partial = f"{export_dir}.partial"
  if os.path.exists(partial):
    shutil.rmtree(partial)
  archive.write_out(partial, verbose=False)
  io_utils.replace_directory(partial, export_dir)
  return export_dir
