"""The non-finite-loss stop: a clear error naming the iteration, checkpoints untouched."""

import keras
import numpy as np
import pytest

from training import callbacks


def test_a_nan_loss_stops_before_any_checkpoint_or_row_is_written(tmp_path):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  model.compile(optimizer="sgd", loss="mse")
  last = str(tmp_path / "last.keras")
  metrics = str(tmp_path / "metrics.csv")
  x, y = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)
  model.fit(
    x, y, batch_size=4, epochs=1, verbose=0, callbacks=[callbacks.AtomicModelCheckpoint(last)]
  )
  saved = open(last, "rb").read()
  logger = callbacks.MetricsCsvLogger(metrics, [{"iteration": 2, "epoch": 1}])
  rows = open(metrics).read()
  x[5] = np.nan  # The second batch of the next epoch: optimizer iteration 4.
  with pytest.raises(FloatingPointError, match="Loss became nan at iteration 4; training stopped"):
    model.fit(
      x,
      y,
      batch_size=4,
      epochs=2,
      initial_epoch=1,
      shuffle=False,
      verbose=0,
      callbacks=[
        callbacks.StopOnNonFiniteLoss(),
        logger,
        callbacks.AtomicModelCheckpoint(last),
      ],
    )
  assert open(last, "rb").read() == saved
  assert open(metrics).read() == rows
