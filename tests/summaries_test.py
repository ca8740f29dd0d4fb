"""TensorBoard views: validation figures from the metrics' own counts, image grids, run logs."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as sk_metrics
from tensorboard.backend.event_processing import event_accumulator

from common import figures
from training import metrics as metrics_lib
from training import summaries


class CaptureValidationCounts(keras.callbacks.Callback):
  """Reads the metrics' accumulators where `ValidationFigures` reads them."""

  def on_epoch_end(self, epoch, logs=None):
    confusion = summaries.find_metric(self.model, metrics_lib.WeightedF1).confusion
    self.confusion = keras.ops.convert_to_numpy(confusion).round().astype(int)
    self.auc = summaries.find_metric(self.model, metrics_lib.OneVsRestRocAuc)


def test_validation_figures_come_from_the_validation_pass(tmp_path):
  rng = np.random.default_rng(0)
  x_train, x_val = rng.normal(size=(64, 5)), rng.normal(size=(40, 5))
  y_train = keras.utils.to_categorical(rng.integers(0, 3, 64), 3)
  y_val = keras.utils.to_categorical(rng.integers(0, 3, 40), 3)
  model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
  model.compile(
    "adam",
    "categorical_crossentropy",
    metrics=[metrics_lib.OneVsRestRocAuc(3), metrics_lib.WeightedF1(3)],
  )
  capture = CaptureValidationCounts()
  figures_callback = summaries.ValidationFigures(str(tmp_path), ["a", "b", "c"], positive_class=1)
  model.fit(
    x_train,
    y_train,
    validation_data=(x_val, y_val),
    epochs=1,
    batch_size=16,
    verbose=0,
    callbacks=[capture, figures_callback],
  )
  predictions = model.predict(x_val, verbose=0)
  expected = sk_metrics.confusion_matrix(y_val.argmax(-1), predictions.argmax(-1), labels=[0, 1, 2])
  np.testing.assert_array_equal(capture.confusion, expected)  # validation, not training counts
  tp = keras.ops.convert_to_numpy(capture.auc.true_positives)[:, 1]
  assert tp[0] == y_val[:, 1].sum()  # at threshold 0 every positive is found

  accumulator = event_accumulator.EventAccumulator(str(tmp_path), {"tensors": 0})
  accumulator.Reload()
  assert set(accumulator.Tags()["tensors"]) == {
    "validation/confusion_matrix",
    "validation/roc_pr_curves",
  }
  png = tf.make_ndarray(accumulator.Tensors("validation/confusion_matrix")[0].tensor_proto)[2]
  assert png.startswith(figures.PNG_MAGIC)


@pytest.mark.parametrize("count,columns,shape", [(5, 2, (300, 200, 3)), (4, 8, (100, 400, 3))])
def test_image_grid_tiles_and_enlarges_small_images(count, columns, shape):
  tiles = np.arange(1, count + 1, dtype=np.uint8)[:, None, None, None]
  grid = summaries.image_grid(tiles * np.ones((1, 10, 10, 3), np.uint8), columns, min_side=96)
  assert grid.shape == shape  # 10-pixel tiles enlarged 10x (the least factor reaching 96)
  assert grid[0, 0, 0] == 1 and grid[99, 99, 0] == 1 and grid[0, 100, 0] == 2
  if count > columns:
    assert grid[100, 0, 0] == 1 + columns  # second row
    assert grid[-1, -1, 0] == 0  # the unused last tile stays black


def test_config_text_is_logged(tmp_path):
  from configs import emotion as emotion_config

  summaries.write_config_text(str(tmp_path), emotion_config.get_config("tiny"))
  accumulator = event_accumulator.EventAccumulator(str(tmp_path), {"tensors": 0})
  accumulator.Reload()
  text = tf.make_ndarray(accumulator.Tensors("config")[0].tensor_proto).ravel()[0].decode()
  assert '"name": "emotion_tiny"' in text
  assert os.listdir(tmp_path)


def test_hparams_name_every_config_field_and_the_final_metrics(tmp_path):
  from configs import emotion as emotion_config

  config = emotion_config.get_config("quick")
  flat = summaries.flatten_config(config)
  assert flat["optimizer.learning_rate"] == 2e-3 and flat["model.stem_pool"] is True
  assert flat["augment.crop_area"] == "[0.8, 1.0]"  # Lists and tuples as their JSON text.
  assert all(isinstance(v, bool | int | float | str) for v in flat.values())
  log_dir = str(tmp_path / "emotion_quick" / "tensorboard")
  summaries.write_hparams(log_dir, config, {"best_val_accuracy": 0.75, "test_accuracy": None}, 62)
  hparams, metrics = summaries.read_hparams(log_dir)
  assert hparams == flat
  assert metrics == {"best_val_accuracy": 0.75}  # None (no test split) is left out.
  # A resumed run replaces the summary of its first part (TensorBoard would show the first).
  config.schedule.num_epochs = 20
  summaries.write_hparams(log_dir, config, {"best_val_accuracy": 0.8}, 124)
  hparams, metrics = summaries.read_hparams(log_dir)
  assert hparams["schedule.num_epochs"] == 20
  assert metrics == pytest.approx({"best_val_accuracy": 0.8})
  assert len(os.listdir(log_dir)) == 1
  with pytest.raises(ValueError, match="holds no HParams summary"):
    summaries.read_hparams(str(tmp_path))
