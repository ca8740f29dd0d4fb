"""Clip augmentation on the accelerator, one random draw per clip.

Every transformation draws its parameters once per clip and applies them to
all of the clip's frames. Independent draws per frame (what per-image Keras
layers would do on the frames of a TimeDistributed model) would make real
videos flicker from frame to frame, which is exactly the temporal artefact a
deepfake detector should learn to flag, so they would teach it the wrong thing.

The chain: horizontal flip, an affine transform (rotation, scale, translation,
one `resampling.affine_warp` for the whole batch, which XLA compiles where
`keras.ops.image.affine_transform` cannot be), colour jitter
(brightness, contrast, saturation), Gaussian blur, and JPEG compression
computed on the device (8x8 block DCT of YCbCr, quantised with the standard
JPEG tables at a random quality), the artefact every video in the wild carries.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_models import resampling

# The standard JPEG quantisation tables (ITU-T T.81, Annex K).
_LUMA_TABLE = np.array(
  [
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
  ],
  np.float32,
)
_CHROMA_TABLE = np.full((8, 8), 99, np.float32)
_CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
_RGB_TO_YCBCR = np.array(
  [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32
)


def _dct_matrix() -> np.ndarray:
  """The orthonormal 8-point DCT-II matrix."""
  k, n = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
  matrix = np.sqrt(2 / 8) * np.cos((2 * n + 1) * k * math.pi / 16)
  matrix[0] /= np.sqrt(2)
  return matrix.astype(np.float32)


def jpeg_compress(images: tf.Tensor, quality: tf.Tensor) -> tf.Tensor:
  """JPEG-compresses and decompresses float 0-255 RGB images, differentiably.

  Args:
    images: float32 `[n, h, w, 3]`.
    quality: float32 `[n]`, JPEG quality 1-100 per image.

  Returns:
    The decompressed images, float32 `[n, h, w, 3]` (no chroma subsampling).
  """
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  pad_h, pad_w = (-height) % 8, (-width) % 8
  padded = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="SYMMETRIC")
  ycbcr = tf.einsum("nhwc,dc->nhwd", padded, _RGB_TO_YCBCR) - tf.constant([128.0, 0.0, 0.0])
  n, h, w = tf.shape(ycbcr)[0], tf.shape(ycbcr)[1], tf.shape(ycbcr)[2]
  blocks = tf.reshape(ycbcr, [n, h // 8, 8, w // 8, 8, 3])
  dct = tf.constant(_dct_matrix())
  coefficients = tf.einsum("ui,nyixjc,vj->nyuxvc", dct, blocks, dct)
  # libjpeg's quality scaling of the tables.
  quality = tf.clip_by_value(quality, 1.0, 100.0)
  scale = tf.where(quality < 50, 5000.0 / quality, 200.0 - 2.0 * quality)
  tables = tf.stack([_LUMA_TABLE, _CHROMA_TABLE, _CHROMA_TABLE], axis=-1)  # [8, 8, 3]
  tables = tf.clip_by_value(
    tf.floor((tables[None] * scale[:, None, None, None] + 50.0) / 100.0), 1.0, 255.0
  )
  tables = tables[:, None, :, None, :, :]  # [n, 1, 8, 1, 8, 3]
  quantised = tf.round(coefficients / tables) * tables
  restored = tf.einsum("ui,nyuxvc,vj->nyixjc", dct, quantised, dct)
  restored = tf.reshape(restored, [n, h, w, 3]) + tf.constant([128.0, 0.0, 0.0])
  rgb = tf.einsum("nhwd,cd->nhwc", restored, tf.constant(np.linalg.inv(_RGB_TO_YCBCR)))
  return tf.clip_by_value(rgb[:, :height, :width, :], 0.0, 255.0)


def _gaussian_kernel(sigma: float) -> np.ndarray:
  radius = max(1, int(math.ceil(2.5 * sigma)))
  x = np.arange(-radius, radius + 1, dtype=np.float32)
  kernel_1d = np.exp(-(x**2) / (2 * sigma**2))
  kernel = np.outer(kernel_1d, kernel_1d)
  kernel /= kernel.sum()
  return np.tile(kernel[:, :, None, None], (1, 1, 3, 1)).astype(np.float32)


@keras.saving.register_keras_serializable(package="face_analysis")
class ClipAugmenter(keras.layers.Layer):
  """Augments `[batch, frames, h, w, 3]` clips (0-255) with one draw per clip.

  With `training=False` it only casts to float32.
  """

  def __init__(
    self,
    horizontal_flip: bool = True,
    rotation_degrees: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    translation: float = 0.05,
    color_jitter: tuple[float, float, float] = (0.2, 0.2, 0.2),
    blur_probability: float = 0.2,
    blur_sigma: float = 1.0,
    jpeg_probability: float = 0.3,
    jpeg_quality: tuple[float, float] = (30.0, 90.0),
    seed: int | None = None,
    **kwargs: Any,
  ):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.horizontal_flip = horizontal_flip
    self.rotation_degrees = rotation_degrees
    self.scale = tuple(scale)
    self.translation = translation
    self.color_jitter = tuple(color_jitter)
    self.blur_probability = blur_probability
    self.blur_sigma = blur_sigma
    self.jpeg_probability = jpeg_probability
    self.jpeg_quality = tuple(jpeg_quality)
    self.seed = seed
    self._seed_generator = keras.random.SeedGenerator(seed)

  def _uniform(self, batch: Any, low: float, high: float) -> Any:
    return keras.random.uniform((batch,), low, high, seed=self._seed_generator)

  def _chance(self, batch: Any, probability: float) -> Any:
    return self._uniform(batch, 0.0, 1.0) < probability

  def call(self, clips: Any, training: bool | None = None) -> Any:
    clips = ops.cast(clips, "float32")
    if not training:
      return clips
    shape = ops.shape(clips)
    batch, frames, height, width = shape[0], shape[1], shape[2], shape[3]

    def per_clip(values: Any) -> Any:  # [batch] -> broadcastable to clips
      return ops.reshape(values, (-1, 1, 1, 1, 1))

    if self.horizontal_flip:
      flip = self._chance(batch, 0.5)
      clips = ops.where(per_clip(flip), ops.flip(clips, axis=3), clips)

    images = ops.reshape(clips, (-1, height, width, 3))  # frames of all clips

    def repeat_per_frame(values: Any) -> Any:  # [batch, ...] -> [batch * frames, ...]
      return ops.repeat(values, frames, axis=0)

    if self.rotation_degrees or self.scale != (1.0, 1.0) or self.translation:
      angle = self._uniform(batch, -1.0, 1.0) * (self.rotation_degrees * math.pi / 180)
      zoom = self._uniform(batch, *self.scale)
      shift_x = self._uniform(batch, -self.translation, self.translation)
      shift_y = self._uniform(batch, -self.translation, self.translation)
      w, h = ops.cast(width, "float32"), ops.cast(height, "float32")
      cx, cy = (w - 1) / 2, (h - 1) / 2
      # Output pixel -> input pixel: rotate by -angle and shrink by the zoom
      # about the centre, then undo the shift.
      cos, sin = ops.cos(angle) / zoom, ops.sin(angle) / zoom
      tx, ty = cx + shift_x * w, cy + shift_y * h
      transform = ops.stack(
        [
          cos,
          sin,
          cx - cos * tx - sin * ty,
          -sin,
          cos,
          cy + sin * tx - cos * ty,
        ],
        axis=-1,
      )
      images = resampling.affine_warp(images, repeat_per_frame(transform), fill_mode="reflect")

    brightness, contrast, saturation = self.color_jitter
    if brightness or contrast or saturation:
      gain_b = repeat_per_frame(self._uniform(batch, -brightness, brightness) * 255.0)
      gain_c = repeat_per_frame(self._uniform(batch, 1 - contrast, 1 + contrast))
      gain_s = repeat_per_frame(self._uniform(batch, 1 - saturation, 1 + saturation))
      gray = ops.sum(images * ops.convert_to_tensor([0.299, 0.587, 0.114]), -1, keepdims=True)
      images = gray + (images - gray) * gain_s[:, None, None, None]
      mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
      images = (images - mean) * gain_c[:, None, None, None] + mean + gain_b[:, None, None, None]
      images = ops.clip(images, 0.0, 255.0)

    if self.blur_probability > 0:
      blurred = tf.nn.depthwise_conv2d(
        tf.pad(images, [[0, 0]] + [[_pad(self.blur_sigma)] * 2] * 2 + [[0, 0]], "SYMMETRIC"),
        _gaussian_kernel(self.blur_sigma),
        [1, 1, 1, 1],
        "VALID",
      )
      chosen = repeat_per_frame(self._chance(batch, self.blur_probability))
      images = ops.where(chosen[:, None, None, None], blurred, images)

    if self.jpeg_probability > 0:
      quality = repeat_per_frame(self._uniform(batch, *self.jpeg_quality))
      chosen = repeat_per_frame(self._chance(batch, self.jpeg_probability))
      images = ops.where(chosen[:, None, None, None], jpeg_compress(images, quality), images)

    return ops.reshape(images, shape)

  def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
    return tuple(input_shape)

  def get_config(self) -> dict[str, Any]:
    return {
      **super().get_config(),
      "horizontal_flip": self.horizontal_flip,
      "rotation_degrees": self.rotation_degrees,
      "scale": self.scale,
      "translation": self.translation,
      "color_jitter": self.color_jitter,
      "blur_probability": self.blur_probability,
      "blur_sigma": self.blur_sigma,
      "jpeg_probability": self.jpeg_probability,
      "jpeg_quality": self.jpeg_quality,
      "seed": self.seed,
    }


def _pad(sigma: float) -> int:
  return max(1, int(math.ceil(2.5 * sigma)))
