"""The cheaper SiLU and the model rebuild that swaps in the fast kernels."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models import activations
from keras_models.batch_norm import FusedBatchNormalization
from keras_models.fast_kernels import with_fast_kernels


def _value_and_gradient(function, x, dtype="float32"):
  x = tf.cast(x, dtype)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = function(x)
    loss = tf.reduce_sum(tf.cast(y, "float32") * tf.linspace(-2.0, 3.0, int(tf.size(y))))
  return y, tape.gradient(loss, x)


_X = np.linspace(-12.0, 12.0, 97, dtype="float32")


@pytest.mark.parametrize("jit_compile", [False, True])
def test_silu_and_its_gradient_match_tensorflows(jit_compile):
  ours = tf.function(lambda x: _value_and_gradient(activations.silu, x), jit_compile=jit_compile)
  y, gradient = ours(_X)
  expected_y, expected_gradient = _value_and_gradient(tf.nn.silu, _X)
  np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-6)
  assert np.abs(gradient).max() > 1  # the test gradient is not trivial


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_silu_in_half_precision(dtype):
  y, gradient = _value_and_gradient(activations.silu, _X, dtype)
  expected_y, expected_gradient = _value_and_gradient(tf.nn.silu, _X, dtype)
  assert y.dtype == dtype and gradient.dtype == dtype
  np.testing.assert_allclose(np.float32(y), np.float32(expected_y), rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(
    np.float32(gradient), np.float32(expected_gradient), rtol=3e-2, atol=3e-2
  )


def test_silu_layer_saves_and_loads(tmp_path):
  inputs = keras.Input((5,))
  outputs = keras.layers.Dense(3, activation=activations.silu, name="dense")(inputs)
  model = keras.Model(inputs, outputs)
  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert loaded.get_layer("dense").activation is activations.silu
  x = np.random.default_rng(0).normal(size=(2, 5)).astype("float32")
  np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_with_fast_kernels_keeps_a_models_weights_and_outputs():
  model = keras.applications.EfficientNetB0(
    include_top=False, weights=None, input_shape=(32, 32, 3)
  )
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
      layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
  rebuilt = with_fast_kernels(model)
  norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
  assert len(norms) == 49
  assert all(isinstance(rebuilt.get_layer(layer.name), FusedBatchNormalization) for layer in norms)
  swished = [
    layer.name
    for layer in model.layers
    if getattr(layer, "activation", None) is not None
    and layer.get_config().get("activation") in ("silu", "swish")
  ]
  assert len(swished) == 49  # 33 Activation layers and 16 squeeze-excite convolutions
  assert all(rebuilt.get_layer(name).activation is activations.silu for name in swished)
  assert rebuilt.count_params() == model.count_params()
  x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
  np.testing.assert_allclose(rebuilt(x, training=False), model(x, training=False), atol=1e-4)
