"""SavedModel export for TF Serving, of both tasks: the one module that writes exports.

`DIR/export/<version>/` follows TF Serving's versioned layout: point
`--model_base_path` at `DIR/export` and the server loads the highest version.
The signatures take raw uint8 images (or encoded image files) and do all the
preprocessing themselves, so clients send pixels, not normalised tensors.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from common import io_utils, labels, model_metadata
from input_pipeline import images as images_lib
from input_pipeline.images import resize_to_uint8
from keras_models import deepfake as deepfake_model

BYTES_SIGNATURE = "serving_bytes"
# What each signature's input must be, in the messages a bad request gets.
IMAGES_EXPECTED = "uint8 [batch >= 1, height >= 1, width >= 1, channels 1 or 3]"
BYTES_EXPECTED = "string [batch >= 1] of encoded image files"


def checked_input(
  tensor: tf.Tensor,
  name: str,
  expected: str,
  rank: int,
  valid: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> tf.Tensor:
  """`tensor` after in-graph checks of its rank and sizes, with a static rank.

  The signatures are declared of unknown rank, so that a request of the wrong
  rank reaches this check and TF Serving answers with its message (`name:
  expected ...; got shape [...]`) rather than a placeholder error. Every
  dimension must be at least 1 (no empty batch or zero-sized image);
  `valid(shape)` adds conditions on the shape (rank `rank`).
  """
  shape = tf.shape(tensor)
  right_rank = tf.equal(tf.size(shape), rank)
  padded = tf.concat([shape, tf.zeros([rank], tf.int32)], 0)[:rank]  # Indexable at any rank.
  ok = right_rank & tf.reduce_all(padded >= 1)
  if valid is not None:
    ok &= valid(padded)
  check = tf.debugging.Assert(ok, [f"{name}: expected {expected}; got shape", shape], summarize=16)
  with tf.control_dependencies([check]):
    tensor = tf.identity(tensor)
  return tf.ensure_shape(tensor, [None] * rank)


def export_image_classifier(
  model: keras.Model, export_dir: str, class_names: Sequence[str], image_size: int
) -> str:
  """Writes `model` as a SavedModel with two signatures.

  `serving_default`: `images` uint8 `[batch, height, width, channels]` (any
  height and width, 1 or 3 channels). `serving_bytes`: `image_bytes` string
  `[batch]`, encoded JPEG, PNG, GIF, BMP or WebP files (what TF Serving's REST
  API delivers for `{"b64": ...}` values: it decodes base64 for inputs whose
  name ends in `_bytes`); each is decoded to RGB by `images.decode_tf` (the
  pixels training decodes) and resized to `image_size`, so the files may
  differ in size. Both return `probabilities` float32 `[batch, num_classes]`
  and `labels` string `[batch]` (the most probable class name). A wrong rank,
  channel count, empty batch, zero-sized image or undecodable file is refused
  with a message naming the input and what it expects (`checked_input`).

  Returns:
    `export_dir`.
  """
  names = tf.constant(list(class_names))

  def classify(images: tf.Tensor) -> dict[str, tf.Tensor]:
    probabilities = model(images, training=False)
    return {
      "probabilities": probabilities,
      "labels": tf.gather(names, tf.argmax(probabilities, axis=-1)),
    }

  @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
  def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
    images = checked_input(
      images,
      "images",
      IMAGES_EXPECTED,
      rank=4,
      valid=lambda shape: tf.equal(shape[3], 1) | tf.equal(shape[3], 3),
    )
    channels = tf.shape(images)[-1]
    images = tf.cond(tf.equal(channels, 1), lambda: tf.tile(images, [1, 1, 1, 3]), lambda: images)
    return classify(tf.ensure_shape(images, [None, None, None, 3]))

  @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="image_bytes")])
  def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
    image_bytes = checked_input(image_bytes, "image_bytes", BYTES_EXPECTED, rank=1)
    # Antialiased, as the model's own resize of the other signature's images.
    return classify(images_lib.decode_files(image_bytes, image_size, "image_bytes", antialias=True))

  return write_saved_model(
    model,
    {"serving_default": serve, BYTES_SIGNATURE: serve_bytes},
    export_dir,
    model_metadata.describe("emotion", class_names),
  )


def export_detector(
  model: keras.Model,
  export_dir: str,
  frame_size: int,
  class_names: Sequence[str] = labels.DEEPFAKE_CLASSES,
) -> str:
  """Writes the detector as a SavedModel with two signatures.

  `serving_default`: `clips` uint8 `[batch, num_frames, height, width, 3]`
  (any height and width). `serving_bytes`: `clip_bytes` string `[batch,
  num_frames]`, each an encoded face crop (JPEG, PNG, GIF, BMP or WebP, as
  `tools.prepare_faces` writes them; TF Serving's REST API base64-decodes
  `{"b64": ...}` values for it), decoded as training decodes frame files; the
  crops may differ in size. Frames of both are resized to `frame_size` as the
  training frames are. Both return `probability_fake` `[batch]`,
  `spatial_attention` `[batch, num_frames, h, w]` and `temporal_attention`
  `[batch, num_frames]`. A wrong rank, frame or channel count, an empty batch,
  zero-sized frames or an undecodable file is refused with a message naming
  the input and what it expects.
  """
  explainer = deepfake_model.build_explainer(model)
  num_frames = model.input.shape[1]
  expected = f"uint8 [batch >= 1, {num_frames} frames, height >= 1, width >= 1, 3 channels]"
  bytes_expected = f"string [batch >= 1, {num_frames} frames] of encoded image files"

  def detect(frames: tf.Tensor) -> dict[str, tf.Tensor]:
    """uint8 `[batch * num_frames, frame_size, frame_size, 3]` -> the outputs."""
    outputs = explainer(tf.reshape(frames, [-1, num_frames, frame_size, frame_size, 3]))
    return {
      "probability_fake": outputs["probabilities"][:, 1],
      "spatial_attention": tf.cast(outputs["spatial_attention"], tf.float32),
      "temporal_attention": tf.cast(outputs["temporal_attention"], tf.float32),
    }

  @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="clips")])
  def serve(clips: tf.Tensor) -> dict[str, tf.Tensor]:
    clips = checked_input(
      clips,
      "clips",
      expected,
      rank=5,
      valid=lambda shape: tf.equal(shape[1], num_frames) & tf.equal(shape[4], 3),
    )
    clips = tf.ensure_shape(clips, [None, num_frames, None, None, 3])
    shape = tf.shape(clips)
    frames = tf.reshape(clips, [-1, shape[2], shape[3], 3])
    return detect(resize_to_uint8(frames, frame_size))  # as the training frames

  @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="clip_bytes")])
  def serve_bytes(clip_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
    clip_bytes = checked_input(
      clip_bytes,
      "clip_bytes",
      bytes_expected,
      rank=2,
      valid=lambda shape: tf.equal(shape[1], num_frames),
    )
    return detect(images_lib.decode_files(tf.reshape(clip_bytes, [-1]), frame_size, "clip_bytes"))

  return write_saved_model(
    explainer,
    {"serving_default": serve, BYTES_SIGNATURE: serve_bytes},
    export_dir,
    model_metadata.describe("deepfake", class_names),
  )


def write_saved_model(
  model: keras.Model,
  signatures: dict[str, tf.types.experimental.GenericFunction],
  export_dir: str,
  metadata: dict[str, Any] | None = None,
) -> str:
  """Writes `model` with `signatures` (name -> tf.function), atomically.

  `metadata` (`common.model_metadata`: task, class names) is written beside
  `saved_model.pb`, for the tools that label outputs.

  The SavedModel is written beside `export_dir` and renamed into place, so an
  interrupted export never leaves a half-written model where TF Serving looks.
  """
  archive = keras.export.ExportArchive()
  archive.track(model)
  for name, function in signatures.items():
    archive.add_endpoint(name, function)
  partial = f"{export_dir}.partial"
  if os.path.exists(partial):
    shutil.rmtree(partial)
  archive.write_out(partial, verbose=False)
  if metadata is not None:
    model_metadata.write_to_directory(partial, metadata)
  io_utils.replace_directory(partial, export_dir)
  return export_dir
