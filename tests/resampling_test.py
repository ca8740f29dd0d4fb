"""XLA-compilable resampling: equal to TensorFlow's kernels, eagerly, in tf.data and under XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models import resampling

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (3, 24, 30, 3)).astype(np.float32)


def _transforms():
  """Rotation, anisotropic scale and shift: three different affine maps."""
  transforms = np.array(resampling.rotation_transforms(np.array([0.3, -0.5, 2.0]), 24, 30))
  transforms[:, :2] *= 1.2
  transforms[:, 3:5] *= 0.8
  transforms[:, 2] += [1.3, -4.2, 7.7]
  transforms[:, 5] += [0.4, 2.5, -9.1]
  return transforms.astype(np.float32)


@pytest.mark.parametrize("size", [11, 24, 48])
@pytest.mark.parametrize("antialias", [True, False])
def test_resize_equals_tf_image_resize(size, antialias):
  expected = tf.image.resize(IMAGES, (size, size), antialias=antialias).numpy()
  got = keras.ops.convert_to_numpy(resampling.resize(IMAGES, size, antialias))
  np.testing.assert_allclose(got, expected, atol=1e-3)


def test_crop_and_resize_of_the_whole_image_is_resize():
  boxes = np.tile([[0.0, 0.0, 1.0, 1.0]], (3, 1)).astype(np.float32)
  np.testing.assert_allclose(
    keras.ops.convert_to_numpy(resampling.crop_and_resize(IMAGES, boxes, 16)),
    keras.ops.convert_to_numpy(resampling.resize(IMAGES, 16)),
    atol=1e-4,
  )


@pytest.mark.parametrize("size", [8, 16])  # shrinking (antialiased) and enlarging
def test_crop_and_resize_resizes_the_box(size):
  boxes = np.array([[0.25, 0.2, 0.5, 0.5]] * 3, np.float32)  # rows 6:18, columns 6:21
  expected = tf.image.resize(IMAGES[:, 6:18, 6:21], (size, size), antialias=True).numpy()
  got = keras.ops.convert_to_numpy(resampling.crop_and_resize(IMAGES, boxes, size))
  # At the border the kernel reaches pixels just outside the box, which a
  # resize of the cut-out crop cannot see.
  np.testing.assert_allclose(got[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-3)


@pytest.mark.parametrize("fill_mode", ["constant", "reflect"])
def test_affine_warp_equals_keras_affine_transform(fill_mode):
  transforms = _transforms()
  expected = keras.ops.image.affine_transform(
    IMAGES,
    np.concatenate([transforms, np.zeros((3, 2), np.float32)], 1),
    interpolation="bilinear",
    fill_mode=fill_mode,
  )
  got = resampling.affine_warp(IMAGES, transforms, fill_mode)
  np.testing.assert_allclose(
    keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected), atol=1e-2
  )


@pytest.mark.parametrize("shift", [-100.0, -24.0, 24.0, 30.0, 100.0])
def test_affine_warp_reads_zeros_outside_the_image_up_to_its_edges(shift):
  """Shifts that put every output pixel outside, or exactly at the far edges."""
  transforms = np.tile([[1.0, 0.0, shift, 0.0, 1.0, shift]], (3, 1)).astype(np.float32)
  expected = keras.ops.image.affine_transform(
    IMAGES, np.pad(transforms, ((0, 0), (0, 2))), interpolation="bilinear", fill_mode="constant"
  )
  got = keras.ops.convert_to_numpy(resampling.affine_warp(IMAGES, transforms, "constant"))
  np.testing.assert_allclose(got, keras.ops.convert_to_numpy(expected), atol=1e-3)
  assert np.abs(got).max() == 0.0 if abs(shift) >= 30 else True


def test_affine_warp_refuses_an_unknown_fill_mode():
  with pytest.raises(ValueError, match="fill_mode='wrap'"):
    resampling.affine_warp(IMAGES, _transforms(), "wrap")


def _all_three(images, boxes, transforms):
  return (
    resampling.resize(images, 16),
    resampling.crop_and_resize(images, boxes, 16),
    resampling.affine_warp(images, transforms, "reflect"),
  )


def test_xla_and_tf_data_give_the_eager_results():
  boxes = np.array([[0.1, 0.2, 0.7, 0.6]] * 3, np.float32)
  transforms = _transforms()
  eager = [keras.ops.convert_to_numpy(x) for x in _all_three(IMAGES, boxes, transforms)]
  compiled = tf.function(_all_three, jit_compile=True)(IMAGES, boxes, transforms)
  dataset = tf.data.Dataset.from_tensors((IMAGES, boxes, transforms)).map(_all_three)
  for outputs in (compiled, next(iter(dataset))):
    for got, expected in zip(outputs, eager, strict=True):
      np.testing.assert_allclose(got.numpy(), expected, atol=1e-3)
