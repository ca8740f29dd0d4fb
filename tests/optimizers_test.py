"""The fused Adam and AdamW follow Keras' own, step for step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import emotion as emotion_config
from training import emotion
from training.optimizers import SGD, FusedAdam, FusedAdamW
from training.runtime import StepCountingLossScaleOptimizer

_CASES = [
  (FusedAdam, keras.optimizers.Adam, {}),
  (FusedAdamW, keras.optimizers.AdamW, {"weight_decay": 0.05}),
  (FusedAdam, keras.optimizers.Adam, {"amsgrad": True}),  # Keras' update
]


def _run(fused, plain, steps=15, jit_compile=False, shape=(6, 4)):
  """Applies the same gradients with both optimizers; returns both weights."""
  rng = np.random.default_rng(0)
  start = rng.normal(size=shape).astype("float32")
  fused_weight, plain_weight = keras.Variable(start), keras.Variable(start)

  @tf.function(jit_compile=jit_compile)
  def step(gradient):
    fused.apply([gradient], [fused_weight])
    plain.apply([gradient], [plain_weight])

  for _ in range(steps):
    step(tf.constant(rng.normal(size=shape).astype("float32")))
  return fused_weight.numpy(), plain_weight.numpy(), start


@pytest.mark.parametrize("fused_class, keras_class, kwargs", _CASES)
@pytest.mark.parametrize("jit_compile", [False, True])
def test_updates_match_keras(fused_class, keras_class, kwargs, jit_compile):
  schedule = keras.optimizers.schedules.CosineDecay(3e-2, decay_steps=20)
  fused = fused_class(learning_rate=schedule, **kwargs)
  plain = keras_class(learning_rate=schedule, **kwargs)
  fused_weight, plain_weight, start = _run(fused, plain, jit_compile=jit_compile)
  assert np.abs(fused_weight - start).max() > 0.05  # it did move
  np.testing.assert_allclose(fused_weight, plain_weight, atol=1e-5)
  assert int(fused.iterations.numpy()) == int(plain.iterations.numpy()) == 15
  for mine, theirs in zip(fused.variables, plain.variables, strict=True):
    np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-7)


def test_inside_the_loss_scale_optimizer():
  fused = StepCountingLossScaleOptimizer(FusedAdam(learning_rate=1e-2))
  plain = StepCountingLossScaleOptimizer(keras.optimizers.Adam(learning_rate=1e-2))
  fused_weight, plain_weight, _ = _run(fused, plain, steps=5)
  np.testing.assert_allclose(fused_weight, plain_weight, atol=1e-6)


@pytest.mark.parametrize(
  "optimizer_class, kwargs",
  [(FusedAdam, {"beta_2": 0.99}), (FusedAdamW, {"beta_2": 0.99}), (SGD, {"nesterov": True})],
)
def test_serialises(optimizer_class, kwargs):
  optimizer = optimizer_class(learning_rate=2e-3, **kwargs)
  restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
  assert type(restored) is optimizer_class
  assert restored.get_config() == optimizer.get_config()


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_the_emotion_config_names_its_optimizer(name):
  config = emotion_config.get_config("tiny")
  config.optimizer.name = name
  config.optimizer.weight_decay = 0.03
  config.optimizer.momentum = 0.8
  optimizer = emotion.EmotionTask(config).optimizer(steps_per_epoch=10)
  assert type(optimizer) is {"adamw": FusedAdamW, "sgd": SGD}[name]
  assert optimizer.weight_decay == pytest.approx(0.03)
  if name == "sgd":
    assert optimizer.nesterov and optimizer.momentum == pytest.approx(0.8)
  else:
    assert optimizer.beta_1 == pytest.approx(config.optimizer.beta_1)
