"""Bilinear image resampling that XLA compiles: matrix products and gathers.

TensorFlow's own resampling kernels have no XLA implementation: `CropAndResize`,
`ScaleAndTranslate` (behind every antialiased `tf.image.resize` and Keras'
`Resizing(antialias=True)`) and `ImageProjectiveTransformV3` (behind Keras'
`RandomRotation` and `keras.ops.image.affine_transform`). A train step that uses
any of them cannot be compiled with `jit_compile=True` on any device, so the
augmentation layers resample with these functions instead:

* `resize` and `crop_and_resize` are separable: each output row (column) is a
  normalised triangle-kernel combination of input rows (columns), so the
  resampling is two batched matrix products, the cheapest op on a GPU or TPU.
  With `antialias` the kernel widens when shrinking, exactly as
  `tf.image.resize(..., antialias=True)` (ScaleAndTranslate) does.
* `affine_warp` (rotation, scale, shift) gathers the four neighbours of each
  output pixel's source position, with TensorFlow's `constant` (zeros outside)
  or `reflect` (`dcba|abcd|dcba`) border rules, matching
  `keras.ops.image.affine_transform`'s bilinear output.

All take float `[batch, height, width, channels]` images and are pure
`keras.ops`, so they run eagerly, inside `tf.data.Dataset.map` and under XLA.
"""

from __future__ import annotations

from typing import Any

from keras import ops

FILL_MODES = ("constant", "reflect")


def _triangle_weights(start: Any, extent: Any, in_size: Any, out_size: int, antialias: bool) -> Any:
  """Weights `[..., out_size, in_size]` resampling the span `[start, start + extent)`.

  `start` and `extent` are in input pixels (any leading shape). Output pixel
  `i` samples at `start + (i + 0.5) * step - 0.5` with `step = extent /
  out_size` (pixel centres, as `tf.image.resize`); the triangle kernel has
  radius 1, or `step` when shrinking with `antialias`. Each row is normalised
  to sum to 1 over the taps inside the image.
  """
  step = extent / out_size
  centres = ops.arange(out_size, dtype="float32") + 0.5
  positions = start[..., None] + centres * step[..., None] - 0.5
  radius = ops.maximum(step, 1.0) if antialias else ops.ones_like(step)
  taps = ops.arange(in_size, dtype="float32")
  distance = ops.abs(taps - positions[..., None]) / radius[..., None, None]
  weights = ops.maximum(1.0 - distance, 0.0)
  return ops.divide_no_nan(weights, ops.sum(weights, axis=-1, keepdims=True))


def resize(images: Any, size: int, antialias: bool = True) -> Any:
  """Bilinear resize of `[n, h, w, c]` float images to `size` x `size`.

  Equal (to float rounding) to `tf.image.resize(images, (size, size),
  antialias=antialias)`.
  """
  shape = ops.shape(images)
  height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
  zero = ops.zeros((), "float32")
  rows = _triangle_weights(zero, height, shape[1], size, antialias)
  columns = _triangle_weights(zero, width, shape[2], size, antialias)
  return ops.einsum("yh,nhwc,xw->nyxc", rows, images, columns)


def crop_and_resize(images: Any, boxes: Any, size: int, antialias: bool = True) -> Any:
  """Crops a box from each image and resizes it bilinearly to `size` x `size`.

  Args:
    images: float `[n, h, w, c]`.
    boxes: float `[n, 4]`: `(top, left, height, width)` of each crop as
      fractions of the image's height and width.
    size: output side.
    antialias: widen the kernel for crops larger than `size` (torchvision's
      `RandomResizedCrop` antialiases too).

  Returns:
    float `[n, size, size, c]`; a box `(0, 0, 1, 1)` gives `resize(images, size)`.
  """
  shape = ops.shape(images)
  height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
  top, left, crop_height, crop_width = ops.unstack(ops.cast(boxes, "float32"), 4, axis=-1)
  rows = _triangle_weights(top * height, crop_height * height, shape[1], size, antialias)
  columns = _triangle_weights(left * width, crop_width * width, shape[2], size, antialias)
  return ops.einsum("nyh,nhwc,nxw->nyxc", rows, images, columns)


def _reflect(coordinates: Any, size: Any) -> Any:
  """TensorFlow's `reflect` fill: `dcba|abcd|dcba` about the outer pixel edges."""
  size = ops.cast(size, "float32")
  period = ops.mod(coordinates + 0.5, 2.0 * size)
  mirrored = ops.where(period < size, period, 2.0 * size - period) - 0.5
  return ops.clip(mirrored, 0.0, ops.maximum(size - 1.0, 0.0))


def affine_warp(images: Any, transforms: Any, fill_mode: str = "constant") -> Any:
  """Bilinear affine resampling of `[n, h, w, c]` float images, one transform each.

  Args:
    images: float `[n, h, w, c]`.
    transforms: float `[n, 6]` (or `[n, 8]`, the last two ignored and taken to
      be 0): `(a0, a1, a2, b0, b1, b2)` maps each output pixel `(x, y)` to the
      input position `(a0 x + a1 y + a2, b0 x + b1 y + b2)`, the convention of
      `keras.ops.image.affine_transform`.
    fill_mode: `constant` (zeros outside the image) or `reflect`.

  Returns:
    float `[n, h, w, c]`.
  """
  if fill_mode not in FILL_MODES:
    raise ValueError(f"fill_mode={fill_mode!r}; expected one of {list(FILL_MODES)}.")
  shape = ops.shape(images)
  batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
  transforms = ops.cast(transforms, "float32")[:, :6, None, None]  # [n, 6, 1, 1]
  ys, xs = ops.meshgrid(
    ops.arange(height, dtype="float32"), ops.arange(width, dtype="float32"), indexing="ij"
  )
  x = transforms[:, 0] * xs + transforms[:, 1] * ys + transforms[:, 2]  # [n, h, w]
  y = transforms[:, 3] * xs + transforms[:, 4] * ys + transforms[:, 5]
  if fill_mode == "reflect":
    x, y = _reflect(x, width), _reflect(y, height)
  # A one-pixel frame of zeros around each image: positions clipped to
  # [-1, size] read only zeros outside, with no per-tap bounds checks.
  x = ops.clip(x, -1.0, ops.cast(width, "float32"))
  y = ops.clip(y, -1.0, ops.cast(height, "float32"))
  padded = ops.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
  # At `size` itself, the weight 1 goes to the right (lower) neighbour, a zero.
  x0 = ops.minimum(ops.floor(x), ops.cast(width - 1, "float32"))
  y0 = ops.minimum(ops.floor(y), ops.cast(height - 1, "float32"))
  fx, fy = x - x0, y - y0
  # Indices into the padded pixels of all images, for the four neighbours at once.
  first_row = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1)) * (height + 2)
  row = first_row + ops.cast(y0, "int32") + 1
  column = ops.cast(x0, "int32") + 1
  top_left = row * (width + 2) + column
  index = ops.stack([top_left, top_left + 1, top_left + width + 2, top_left + width + 3])
  weights = ops.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
  neighbours = ops.take(ops.reshape(padded, (-1, channels)), index, axis=0)  # [4, n, h, w, c]
  return ops.sum(neighbours * ops.cast(weights, images.dtype)[..., None], axis=0)


def rotation_transforms(angles: Any, height: Any, width: Any) -> Any:
  """`affine_warp` transforms `[n, 6]` rotating images by `angles` (radians) about their centre."""
  angles = ops.cast(angles, "float32")
  cos, sin = ops.cos(angles), ops.sin(angles)
  cx = (ops.cast(width, "float32") - 1.0) / 2.0
  cy = (ops.cast(height, "float32") - 1.0) / 2.0
  # Output pixel p maps to R(-angle) (p - c) + c.
  return ops.stack(
    [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy], axis=-1
  )
