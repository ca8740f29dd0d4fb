"""On-device preprocessing: shapes, dtypes, inference is deterministic, tf.data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import augment


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


def test_each_augmentation_can_be_switched_off():
  images = _batch(3, size=16)
  layer = augment.ImagePreprocessor(
    image_size=16,
    crop_area=(1.0, 1.0),
    crop_aspect_ratio=(1.0, 1.0),
    horizontal_flip=False,
    color_jitter=(0, 0, 0, 0),
    grayscale_probability=0.0,
    rotation_degrees=0.0,
    erasing_probability=0.0,
  )
  train = keras.ops.convert_to_numpy(layer(images, training=True))
  infer = keras.ops.convert_to_numpy(layer(images, training=False))
  np.testing.assert_allclose(train, infer, atol=1e-3)


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
  eager = augment.resize_to_uint8(tf.constant(image), 4).numpy()
  assert eager.dtype == np.uint8 and eager.shape == (4, 4, 3)
  expected = np.round(tf.image.resize(image.astype(np.float32), (4, 4)).numpy())
  np.testing.assert_array_equal(eager, expected)
  mapped = next(
    iter(tf.data.Dataset.from_tensors(image).map(lambda x: augment.resize_to_uint8(x, 4)))
  )
  np.testing.assert_array_equal(mapped.numpy(), eager)
