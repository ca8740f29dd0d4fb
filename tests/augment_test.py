"""On-device preprocessing: shapes, dtypes, inference is deterministic, tf.data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import images as images_lib
from keras_models import augment


def _batch(channels=3, size=20, batch=4, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (batch, size, size, channels), dtype=np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_training_keeps_shape_and_dtype(channels):
  layer = augment.ImagePreprocessor(image_size=16, seed=1)
  out = layer(_batch(channels), training=True)
  assert tuple(out.shape) == (4, 16, 16, 3)
  assert out.dtype == "float32"
  assert np.isfinite(keras.ops.convert_to_numpy(out)).all()


def test_inference_is_resize_and_normalize_only():
  images = _batch(1, size=8)
  layer = augment.ImagePreprocessor(image_size=16, seed=1)
  first = keras.ops.convert_to_numpy(layer(images, training=False))
  second = keras.ops.convert_to_numpy(layer(images, training=False))
  np.testing.assert_array_equal(first, second)
  rgb = np.repeat(images, 3, axis=-1).astype("float32")
  expected = (
    tf.image.resize(rgb, (16, 16), antialias=True).numpy() - np.array(augment.IMAGENET_MEAN)
  ) / np.array(augment.IMAGENET_STD)
  np.testing.assert_allclose(first, expected, atol=1e-4)


def test_training_augments():
  images = _batch(3, size=16)
  layer = augment.ImagePreprocessor(image_size=16, seed=1)
  train = keras.ops.convert_to_numpy(layer(images, training=True))
  infer = keras.ops.convert_to_numpy(layer(images, training=False))
  assert np.abs(train - infer).mean() > 0.05


def _only(**kwargs):
  """An ImagePreprocessor with every augmentation off but those in `kwargs`."""
  settings = dict(
    image_size=16,
    crop_area=(1.0, 1.0),
    crop_aspect_ratio=(1.0, 1.0),
    horizontal_flip=False,
    color_jitter=(0, 0, 0, 0),
    grayscale_probability=0.0,
    rotation_degrees=0.0,
    erasing_probability=0.0,
    seed=5,
  )
  return augment.ImagePreprocessor(**{**settings, **kwargs})


def test_each_augmentation_can_be_switched_off():
  images = _batch(3, size=16)
  layer = _only()
  train = keras.ops.convert_to_numpy(layer(images, training=True))
  infer = keras.ops.convert_to_numpy(layer(images, training=False))
  np.testing.assert_allclose(train, infer, atol=1e-3)


@pytest.mark.parametrize(
  "last",
  [
    dict(horizontal_flip=True),
    dict(color_jitter=(0.2, 0.2, 0.0, 0.0), color_jitter_probability=1.0),
    dict(grayscale_probability=0.5),
    dict(erasing_probability=0.5),
  ],
)
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_every_augmentation_runs_in_float32_under_a_mixed_policy(policy, last):
  # Each stock Keras augmentation, even the last one switched on, keeps the
  # pixels in float32 under a global mixed policy.
  keras.mixed_precision.set_global_policy(policy)
  try:
    layer = _only(**last)
    out = layer(_batch(3, size=16), training=True)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert out.dtype == "float32"


def test_random_resized_crop_samples_per_image_crops():
  images = np.repeat(np.arange(32, dtype=np.float32)[None, None, :, None], 32, axis=1)
  images = np.repeat(images, 64, axis=0)  # a horizontal ramp, 64 copies
  layer = augment.RandomResizedCrop(8, area=(0.1, 0.3), seed=0)
  out = keras.ops.convert_to_numpy(layer(images, training=True))
  assert out.shape == (64, 8, 8, 1)
  widths = out[:, 0, -1, 0] - out[:, 0, 0, 0]
  assert widths.max() < 31 and widths.std() > 0.5  # crops, of varying size
  assert len(np.unique(out[:, 0, 0, 0].round(3))) > 10  # at varying positions


def test_works_inside_tf_data_map():
  layer = augment.ImagePreprocessor(image_size=16, seed=1)
  dataset = (
    tf.data.Dataset.from_tensor_slices(_batch(1, batch=6))
    .batch(3)
    .map(lambda images: layer(images, training=True))
  )
  batches = list(dataset)
  assert [tuple(b.shape) for b in batches] == [(3, 16, 16, 3)] * 2
  assert all(b.dtype == tf.float32 for b in batches)


def test_layer_config_round_trip():
  layer = augment.ImagePreprocessor(image_size=24, rotation_degrees=5.0, seed=3)
  clone = augment.ImagePreprocessor.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()


def test_resize_to_uint8_rounds_eagerly_and_in_tf_data():
  image = np.array([[[0], [255]], [[255], [0]]], np.uint8).repeat(3, -1)  # 2x2 checkerboard
  eager = images_lib.resize_to_uint8(tf.constant(image), 4).numpy()
  assert eager.dtype == np.uint8 and eager.shape == (4, 4, 3)
  expected = np.round(tf.image.resize(image.astype(np.float32), (4, 4)).numpy())
  np.testing.assert_array_equal(eager, expected)
  mapped = next(
    iter(tf.data.Dataset.from_tensors(image).map(lambda x: images_lib.resize_to_uint8(x, 4)))
  )
  np.testing.assert_array_equal(mapped.numpy(), eager)


def _compiled(layer):
  """The layer's training-mode call, compiled with XLA (as in a jit-compiled train step)."""
  return tf.function(lambda images: layer(images, training=True), jit_compile=True)


def test_no_layer_turns_xla_off():
  layer = augment.ImagePreprocessor(image_size=16, seed=1)
  layer(_batch(), training=True)
  assert [sub.name for sub in layer._flatten_layers() if not sub.supports_jit] == []


@pytest.mark.parametrize("channels", [1, 3])
def test_training_under_xla_keeps_shape_and_dtype(channels):
  layer = augment.ImagePreprocessor(image_size=16, seed=1)
  out = _compiled(layer)(_batch(channels)).numpy()
  assert out.shape == (4, 16, 16, 3) and out.dtype == np.float32
  assert np.isfinite(out).all()


def _coordinate_images(batch, size):
  """Images whose channel 0 is the column and channel 1 the row of each pixel."""
  rows, columns = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  image = np.stack([columns, rows, np.zeros_like(rows)], -1).astype(np.float32)
  return np.repeat(image[None], batch, 0)


def test_random_resized_crop_under_xla_stays_in_its_area_and_aspect_ranges():
  size, out_size = 64, 32
  layer = augment.RandomResizedCrop(out_size, area=(0.2, 0.6), aspect_ratio=(3 / 4, 4 / 3), seed=0)
  out = _compiled(layer)(_coordinate_images(256, size)).numpy()
  assert out.shape == (256, out_size, out_size, 3)
  # Output pixels sample a linear ramp, so the sampled positions give the box.
  width = (out[:, 0, -1, 0] - out[:, 0, 0, 0]) * out_size / (out_size - 1)
  height = (out[:, -1, 0, 1] - out[:, 0, 0, 1]) * out_size / (out_size - 1)
  area = width * height / size**2
  aspect = width / height
  assert area.min() > 0.2 - 0.01 and area.max() < 0.6 + 0.01
  assert area.min() < 0.25 and area.max() > 0.55  # the whole range is drawn
  assert aspect.min() > 3 / 4 - 0.01 and aspect.max() < 4 / 3 + 0.01
  assert out[..., :2].min() >= 0 and out[..., :2].max() <= size - 1


def _angles_at_centre(out, offset):
  """Rotation angles (degrees) of images that were `column - centre + offset` ramps."""
  c = out.shape[1] // 2
  d_dx = (out[:, c, c + 1, 0] - out[:, c, c - 1, 0]) / 2
  d_dy = (out[:, c + 1, c, 0] - out[:, c - 1, c, 0]) / 2
  assert np.allclose(out[:, c, c, 0], offset, atol=0.6)  # about the centre
  return np.degrees(np.arctan2(d_dy, d_dx))


def test_rotation_under_xla_stays_within_its_degrees():
  size, offset = 33, 100.0
  ramp = _coordinate_images(256, size)
  ramp[..., 0] += offset - (size - 1) / 2
  angles = _angles_at_centre(_compiled(augment.RandomRotation(20.0, seed=0))(ramp).numpy(), offset)
  assert np.abs(angles).max() <= 20.0 + 0.1
  assert angles.min() < -17 and angles.max() > 17 and abs(angles.mean()) < 3


@pytest.mark.parametrize(
  "kwargs,rate,changed",
  [
    (dict(horizontal_flip=True), 0.5, lambda out, plain: ~np.isclose(out, plain).all((1, 2, 3))),
    (
      dict(color_jitter=(0.2, 0.2, 0.2, 0.05)),
      0.8,
      lambda out, plain: np.abs(out - plain).max((1, 2, 3)) > 1e-3,
    ),
    (
      dict(grayscale_probability=0.2),
      0.2,
      lambda out, plain: (
        np.ptp(out * augment.IMAGENET_STD + augment.IMAGENET_MEAN, -1).max((1, 2)) < 1e-2
      ),
    ),
    (
      dict(erasing_probability=0.25),
      0.25,
      lambda out, plain: np.abs(out - plain).max((1, 2, 3)) > 1e-3,
    ),
  ],
  ids=["flip", "color_jitter", "grayscale", "erasing"],
)
def test_probabilities_under_xla_are_per_image_and_as_configured(kwargs, rate, changed):
  images = _batch(3, size=16, batch=400, seed=1)
  layer = _only(**kwargs)
  out = _compiled(layer)(images).numpy()
  plain = keras.ops.convert_to_numpy(layer(images, training=False))
  observed = changed(out, plain).mean()
  # Four binomial standard deviations of 400 draws.
  assert abs(observed - rate) < 4 * np.sqrt(rate * (1 - rate) / 400), observed
