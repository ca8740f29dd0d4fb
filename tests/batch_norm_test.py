"""The fused batch norm matches Keras' own, in float32, mixed precision and XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.batch_norm import FusedBatchNormalization


def _pair(**kwargs):
  """A fused and a Keras layer with the same (non-trivial) weights."""
  fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
  plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
  return fused, plain


def _inputs(shape=(4, 5, 6, 3), seed=0):
  return np.random.default_rng(seed).normal(2.0, 3.0, shape).astype("float32")


def _build_same(fused, plain, shape):
  fused.build(shape)
  plain.build(shape)
  rng = np.random.default_rng(1)
  weights = [rng.normal(1.0, 0.5, w.shape).astype("float32") for w in plain.get_weights()]
  weights[3] = np.abs(weights[3]) + 0.5  # a positive moving variance
  plain.set_weights(weights)
  fused.set_weights(weights)
  return weights


def test_training_step_matches_keras_and_updates_moving_statistics():
  x = _inputs()
  fused, plain = _pair()
  old_variance = _build_same(fused, plain, x.shape)[3]
  np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-4)
  np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-5)
  # The fused kernel averages in the unbiased batch variance, as PyTorch does.
  n = x.shape[0] * x.shape[1] * x.shape[2]
  batch_variance = x.reshape(-1, 3).var(axis=0) * n / (n - 1)
  expected = 0.9 * old_variance + 0.1 * batch_variance
  np.testing.assert_allclose(fused.moving_variance.numpy(), expected, rtol=1e-4)


def test_inference_matches_keras():
  x = _inputs()
  fused, plain = _pair()
  _build_same(fused, plain, x.shape)
  np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-4)


def test_other_ranks_fall_back_to_keras():
  x = _inputs((8, 3))
  fused, plain = _pair()
  _build_same(fused, plain, x.shape)
  np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_float32_statistics(policy):
  x = _inputs()
  fused, plain = _pair(dtype=policy)
  _build_same(fused, plain, x.shape)
  out = fused(x, training=True)
  assert out.dtype == policy.removeprefix("mixed_")
  assert fused.moving_mean.dtype == "float32" and fused.gamma.dtype == "float32"
  expected = plain(x, training=True)
  np.testing.assert_allclose(np.asarray(out, "float32"), np.asarray(expected, "float32"), atol=0.1)


def test_compiles_with_xla():
  x = _inputs()
  fused, plain = _pair()
  _build_same(fused, plain, x.shape)
  compiled = tf.function(lambda t: fused(t, training=True), jit_compile=True)
  np.testing.assert_allclose(compiled(x), plain(x, training=True), atol=1e-4)


def test_saves_and_loads_in_a_model(tmp_path):
  inputs = keras.Input((5, 6, 3))
  model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
  model.layers[-1].set_weights([w + 0.5 for w in model.layers[-1].get_weights()])
  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded.get_layer("bn"), FusedBatchNormalization)
  x = _inputs()
  np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
