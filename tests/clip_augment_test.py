"""Clip augmentation: one draw per clip, shapes, JPEG on the device."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models import clip_augment


def _clips(batch=6, frames=3, size=24, seed=0):
  """Clips whose frames are all the same image, different per clip."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, 1, size, size, 3), dtype=np.uint8)
  return np.repeat(images, frames, axis=1)


def test_every_frame_of_a_clip_gets_the_same_augmentation():
  layer = clip_augment.ClipAugmenter(
    blur_probability=0.5, jpeg_probability=0.5, rotation_degrees=20, seed=3
  )
  clips = _clips()
  out = keras.ops.convert_to_numpy(layer(clips, training=True))
  assert out.shape == clips.shape and out.dtype == np.float32
  for clip in out:
    for frame in clip[1:]:
      np.testing.assert_allclose(frame, clip[0], atol=1e-3)
  assert np.abs(out - clips).mean() > 1.0  # something changed


def test_inference_only_casts():
  clips = _clips()
  out = keras.ops.convert_to_numpy(clip_augment.ClipAugmenter()(clips, training=False))
  np.testing.assert_array_equal(out, clips.astype(np.float32))


def _only(**kwargs):
  """A ClipAugmenter with every augmentation off but those in `kwargs`."""
  off = dict(horizontal_flip=False, rotation_degrees=0, scale=(1.0, 1.0), translation=0)
  off.update(color_jitter=(0, 0, 0), blur_probability=0, jpeg_probability=0)
  return clip_augment.ClipAugmenter(**{**off, **kwargs})


def test_switched_off_is_identity():
  layer = _only()
  clips = _clips()
  np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(clips, training=True)), clips)


def test_works_inside_tf_data_map():
  layer = clip_augment.ClipAugmenter(seed=0)
  dataset = (
    tf.data.Dataset.from_tensor_slices(_clips(batch=4))
    .batch(2)
    .map(lambda clips: layer(clips, training=True))
  )
  assert [tuple(b.shape) for b in dataset] == [(2, 3, 24, 24, 3)] * 2


@pytest.mark.parametrize("quality,low,high", [(100.0, 0.0, 2.0), (10.0, 5.0, 80.0)])
def test_jpeg_compress_error_grows_as_quality_drops(quality, low, high):
  rng = np.random.default_rng(0)
  smooth = tf.image.resize(rng.uniform(0, 255, (2, 6, 6, 3)).astype(np.float32), (30, 27))
  out = clip_augment.jpeg_compress(smooth, tf.constant([quality, quality])).numpy()
  assert out.shape == (2, 30, 27, 3)
  error = np.abs(out - smooth.numpy()).mean()
  assert low <= error <= high


def test_jpeg_compress_matches_libjpeg_on_gray_images():
  rng = np.random.default_rng(1)
  colour = tf.image.resize(rng.uniform(0, 255, (1, 16, 16, 3)).astype(np.float32), (64, 64))
  gray = tf.repeat(tf.reduce_mean(colour, -1, keepdims=True), 3, axis=-1)
  for quality in (30.0, 80.0):
    ours = clip_augment.jpeg_compress(gray, tf.constant([quality])).numpy()[0]
    libjpeg = tf.image.adjust_jpeg_quality(gray[0] / 255.0, int(quality)).numpy() * 255.0
    # Same tables, same quality scaling: within rounding of libjpeg's output.
    assert np.abs(ours - libjpeg).mean() < 1.5
    # In colour libjpeg also subsamples chroma, which we skip: our error is lower.
    ours = clip_augment.jpeg_compress(colour, tf.constant([quality])).numpy()[0]
    libjpeg = tf.image.adjust_jpeg_quality(colour[0] / 255.0, int(quality)).numpy() * 255.0
    assert 0 < np.abs(ours - colour[0]).mean() < np.abs(libjpeg - colour[0]).mean()


def _compiled(layer):
  """The layer's training-mode call, compiled with XLA (as in a jit-compiled train step)."""
  return tf.function(lambda clips: layer(clips, training=True), jit_compile=True)


def test_under_xla_every_frame_of_a_clip_gets_the_same_augmentation():
  layer = clip_augment.ClipAugmenter(
    blur_probability=0.5, jpeg_probability=0.5, rotation_degrees=20, seed=3
  )
  clips = _clips()
  out = _compiled(layer)(clips).numpy()
  assert out.shape == clips.shape and out.dtype == np.float32
  for clip in out:
    for frame in clip[1:]:
      np.testing.assert_allclose(frame, clip[0], atol=1e-3)
  assert np.abs(out - clips).mean() > 1.0


def test_affine_under_xla_stays_within_its_rotation_scale_and_shift():
  size, count = 33, 256
  rows, columns = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  ramp = np.stack([columns, rows, np.zeros_like(rows)], -1).astype(np.float32) + 100.0
  clips = np.repeat(ramp[None, None], count, 0)  # one-frame clips: column, row ramps
  layer = _only(rotation_degrees=10.0, scale=(0.8, 1.2), translation=0.1, seed=0)
  out = _compiled(layer)(clips).numpy()[:, 0] - 100.0
  c = size // 2
  # The map from output to input pixels, read off the ramps at the centre.
  gradient = np.stack(
    [
      (out[:, c, c + 1, :2] - out[:, c, c - 1, :2]) / 2,
      (out[:, c + 1, c, :2] - out[:, c - 1, c, :2]) / 2,
    ],
    -1,
  )  # [n, input axis (x, y), output axis (x, y)]
  angle = np.degrees(np.arctan2(gradient[:, 0, 1], gradient[:, 0, 0]))
  zoom = 1.0 / np.hypot(gradient[:, 0, 0], gradient[:, 0, 1])
  # The output centre shows input position M (c - t); the shift is t - c.
  source = out[:, c, c, :2] - c
  shift = -np.linalg.solve(gradient, source[..., None])[..., 0] / size
  assert np.abs(angle).max() <= 10.1 and np.abs(angle).max() > 8.5
  assert zoom.min() > 0.8 - 0.01 and zoom.max() < 1.2 + 0.01
  assert zoom.min() < 0.85 and zoom.max() > 1.15
  assert np.abs(shift).max() <= 0.1 + 0.01 and np.abs(shift).max() > 0.08


@pytest.mark.parametrize("kind", ["blur", "jpeg"])
def test_under_xla_blur_and_jpeg_apply_per_clip_with_their_probability(kind):
  rate = 0.3
  layer = _only(**{f"{kind}_probability": rate}, seed=1)
  clips = _clips(batch=400, frames=2, size=16)
  out = _compiled(layer)(clips).numpy()
  observed = (np.abs(out - clips).max((1, 2, 3, 4)) > 1e-2).mean()
  assert abs(observed - rate) < 4 * np.sqrt(rate * (1 - rate) / 400), observed
