"""Polyak averaging: validation, checkpoints and resumes use the average, training the weights."""

import keras
import numpy as np
import pytest

from configs import emotion as emotion_config
from training import callbacks, loop, runtime, weight_averaging
from training.optimizers import FusedAdam, FusedAdamW
from training.run_paths import RunPaths

_MOMENTUM = 0.8


def _data(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype("float32")
  return x, (x @ rng.normal(size=(5, 1))).astype("float32")


def _model(optimizer):
  inputs = keras.Input((5,))
  hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
  model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
  model.compile(optimizer=optimizer, loss="mse")
  return model


def _weights(model):
  return [w.numpy() for w in model.trainable_weights]


def _averages(model):
  with weight_averaging.averaged_weights(model):
    return _weights(model)


def test_with_weight_averaging_keeps_the_optimizer():
  schedule = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=10)
  optimizer = FusedAdamW(learning_rate=schedule, weight_decay=0.05)
  assert weight_averaging.with_weight_averaging(optimizer, 0.0) is optimizer
  averaging = weight_averaging.with_weight_averaging(optimizer, 0.99)
  assert type(averaging) is FusedAdamW
  assert averaging.use_ema and averaging.ema_momentum == 0.99
  expected = {**optimizer.get_config(), "use_ema": True, "ema_momentum": 0.99}
  assert averaging.get_config() == expected
  with pytest.raises(TypeError, match="LoopWeightAveraging"):
    weight_averaging.with_weight_averaging(keras.optimizers.Adam(), 0.99)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Six steps with averaging, validated and checkpointed each epoch of two steps."""
  optimizer = weight_averaging.with_weight_averaging(FusedAdam(learning_rate=0.05), _MOMENTUM)
  model = _model(optimizer)
  path = str(tmp_path_factory.mktemp("ckpt") / "last.keras")
  train, validation = _data(16, 0), _data(8, 1)
  history = model.fit(
    *train,
    batch_size=8,
    epochs=3,
    validation_data=validation,
    callbacks=[weight_averaging.ValidateAveragedWeights(), callbacks.AtomicModelCheckpoint(path)],
    verbose=0,
  )
  return model, path, validation, history.history


def test_training_keeps_the_weights_and_validation_uses_the_average(trained):
  model, _, validation, history = trained
  # `fit` left the trained weights in the model (Keras would copy the average in).
  raw, averaged = _weights(model), _averages(model)
  assert max(np.abs(r - a).max() for r, a in zip(raw, averaged, strict=True)) > 1e-3
  with weight_averaging.averaged_weights(model):
    averaged_loss = model.evaluate(*validation, verbose=0)
  raw_loss = model.evaluate(*validation, verbose=0)
  assert history["val_loss"][-1] == pytest.approx(averaged_loss, rel=1e-5)
  assert abs(raw_loss - averaged_loss) > 1e-4


def test_the_average_follows_its_momentum():
  optimizer = weight_averaging.with_weight_averaging(FusedAdam(learning_rate=0.1), _MOMENTUM)
  model = _model(optimizer)
  x, y = _data(8, 0)
  history_of_weights = [_weights(model)]
  for _ in range(3):
    model.train_on_batch(x, y)
    history_of_weights.append(_weights(model))
  # The first step sets the average to the weights, each later one moves it by 1 - m.
  expected = history_of_weights[1]
  for step in history_of_weights[2:]:
    expected = [_MOMENTUM * e + (1 - _MOMENTUM) * w for e, w in zip(expected, step, strict=True)]
  for got, want in zip(_averages(model), expected, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_checkpoints_hold_the_average_and_resume_the_weights(trained):
  model, path, validation, _ = trained
  saved = keras.saving.load_model(path, compile=False)  # As the tools load it.
  for got, want in zip(_weights(saved), _averages(model), strict=True):
    np.testing.assert_array_equal(got, want)
  optimizer = weight_averaging.with_weight_averaging(FusedAdam(learning_rate=0.05), _MOMENTUM)
  resumed = _model(optimizer)
  assert callbacks.restore_training_state(resumed, path) == 6
  for got, want in zip(_weights(resumed), _weights(model), strict=True):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(_averages(resumed), _averages(model), strict=True):
    np.testing.assert_array_equal(got, want)


def test_float16_steps_skipped_at_the_start_leave_the_initial_weights_as_the_average():
  # The loop's loss scaling counts a skipped (overflowing) step, so the first
  # applied step is not step 0, where Keras would copy the weights in.
  optimizer = runtime.wrap_optimizer_for_policy(
    weight_averaging.with_weight_averaging(FusedAdam(learning_rate=0.1), _MOMENTUM),
    "mixed_float16",
  )
  weight = keras.Variable(np.linspace(-1, 1, 6, dtype="float32"))
  start = weight.numpy()
  optimizer.apply([keras.ops.full((6,), np.inf)], [weight])  # skipped, but counted
  assert int(optimizer.iterations) == 1
  np.testing.assert_array_equal(weight.numpy(), start)
  np.testing.assert_array_equal(optimizer.inner_optimizer._model_variables_moving_average[0], start)
  optimizer.apply([keras.ops.ones((6,))], [weight])
  assert np.abs(weight.numpy() - start).max() > 0.05
  expected = _MOMENTUM * start + (1 - _MOMENTUM) * weight.numpy()
  average = optimizer.inner_optimizer._model_variables_moving_average[0].numpy()
  np.testing.assert_allclose(average, expected, rtol=1e-6)


def test_without_averaging_nothing_is_swapped():
  model = _model(FusedAdam(learning_rate=0.1))
  model.train_on_batch(*_data(8, 0))
  raw = _weights(model)
  weight_averaging.swap_weights(model)
  for got, want in zip(_weights(model), raw, strict=True):
    np.testing.assert_array_equal(got, want)


def test_a_run_with_averaging_trains_resumes_and_exports(tmp_path):
  config = emotion_config.get_config("tiny")
  config.training.ema_momentum = 0.5
  config.export.enabled = True
  config.schedule.num_epochs = 1
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  config.schedule.num_epochs = 2
  config.export.checkpoint = "final"
  summary = loop.train_and_evaluate(config, workdir)
  paths = RunPaths(workdir)
  rows = callbacks.read_metrics(paths.metrics)
  assert [int(r["epoch"]) for r in rows] == [1, 2]
  last = keras.saving.load_model(paths.last_checkpoint)
  assert int(last.optimizer.iterations) == 2 * int(rows[0]["iteration"])
  # The checkpoint's weights are the average; its optimizer holds the trained weights.
  stored = [v.numpy() for v in last.optimizer._model_variables_moving_average]
  model_weights = _weights(last)
  assert any(np.abs(a - b).max() > 0 for a, b in zip(stored, model_weights, strict=True))
  # The final weights tested and exported are the average too.
  assert summary["checkpoint"] == paths.final_checkpoint
  final = keras.saving.load_model(paths.final_checkpoint, compile=False)
  for got, want in zip(_weights(final), model_weights, strict=True):
    np.testing.assert_array_equal(got, want)
  assert summary["export"] is not None
