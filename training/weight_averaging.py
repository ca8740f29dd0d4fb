"""Polyak averaging: an exponential moving average of the weights for evaluation.

With `config.training.ema_momentum` = m > 0 the optimizer keeps, for every
trainable weight, `average = m * average + (1 - m) * weight` after each step
(Keras' `use_ema`, one slot per weight, saved with the optimizer state).
Training goes on with the raw weights; everything that judges or ships the
model uses the average: validation (so the best-checkpoint choice), the
checkpoints, the test report and the export.

Every checkpoint holds the average as the model's weights and the raw weights
in the optimizer's average slots, so any `.keras` file is ready for inference
as it is, and resuming swaps the two back (`restored_for_training`).
Keras' `SwapEMAWeights` callback is not used: it keeps which of the two is in
the model in the callback itself, which a resume forgets, and it hands the
average over only when `fit` runs to its last epoch, not when training stops
early.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras

from training import optimizers


def with_weight_averaging(
  optimizer: keras.optimizers.Optimizer, momentum: float
) -> keras.optimizers.Optimizer:
  """`optimizer` rebuilt to keep the moving average (momentum 0: unchanged).

  Raises:
    TypeError: `optimizer` is not a `training.optimizers.LoopWeightAveraging`
      (Keras' own start the average at zero and copy it into the model when
      `fit` ends).
  """
  if not momentum:
    return optimizer
  if not isinstance(optimizer, optimizers.LoopWeightAveraging):
    raise TypeError(
      f"Weight averaging needs a training.optimizers.LoopWeightAveraging optimizer; "
      f"{type(optimizer).__name__} is not one."
    )
  config = optimizer.get_config()
  config.update(use_ema=True, ema_momentum=float(momentum), ema_overwrite_frequency=None)
  return optimizer.__class__.from_config(config)


def _averaging_optimizer(model: keras.Model) -> keras.optimizers.Optimizer | None:
  optimizer = getattr(model, "optimizer", None)
  optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # A LossScaleOptimizer.
  return optimizer if getattr(optimizer, "use_ema", False) else None


def swap_weights(model: keras.Model) -> None:
  """Exchanges the model's trainable weights with the optimizer's averages."""
  optimizer = _averaging_optimizer(model)
  if optimizer is None or not optimizer.built:
    return
  for weight, average in zip(
    optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True
  ):
    trained = keras.ops.convert_to_numpy(weight.value)
    weight.assign(average.value)
    average.assign(trained)


@contextlib.contextmanager
def averaged_weights(model: keras.Model) -> Iterator[None]:
  """The average in the model inside the block; the raw weights again after it."""
  swap_weights(model)
  try:
    yield
  finally:
    swap_weights(model)


def restored_for_training(model: keras.Model) -> None:
  """After loading a checkpoint (average in the model), puts the raw weights back."""
  swap_weights(model)


class ValidateAveragedWeights(keras.callbacks.Callback):
  """Validates (and so picks the best checkpoint by) the averaged weights."""

  def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
    swap_weights(self.model)

  def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
    swap_weights(self.model)
