"""Deepfake detector: shapes, attention outputs, serialisation, plateau logic."""

import keras
import numpy as np
import pytest

from keras_models import deepfake
from training import callbacks


@pytest.fixture(scope="module")
def detector():
  return deepfake.build_deepfake_detector(
    num_frames=2, frame_size=32, lstm_units=8, attention_after="block3b_add"
  )


def test_detector_and_explainer_shapes(detector):
  clips = np.random.default_rng(0).integers(0, 256, (3, 2, 32, 32, 3), dtype=np.uint8)
  probabilities = keras.ops.convert_to_numpy(detector(clips, training=False))
  assert probabilities.shape == (3, 2) and probabilities.dtype == np.float32
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
  outputs = deepfake.build_explainer(detector)(clips, training=False)
  spatial = keras.ops.convert_to_numpy(outputs["spatial_attention"])
  temporal = keras.ops.convert_to_numpy(outputs["temporal_attention"])
  assert spatial.shape == (3, 2, 4, 4)  # block3b is at stride 8
  assert ((spatial > 0) & (spatial < 1)).all()
  np.testing.assert_allclose(temporal.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(
    keras.ops.convert_to_numpy(outputs["probabilities"]), probabilities, rtol=1e-5
  )


def test_attention_gate_multiplies_the_backbone_features():
  encoder = deepfake.build_frame_encoder(32, attention_after="block3b_add")
  gate = encoder.get_layer("attention_gate")
  assert [t.name for t in gate.input] and encoder.get_layer(
    "spatial_attention"
  ).activation.__name__ == "sigmoid"
  late = encoder.get_layer("efficientnet_late")
  assert late.input.shape[1:] == (4, 4, 40)
  with pytest.raises(ValueError, match="attention_after='nope'"):
    deepfake.build_frame_encoder(32, attention_after="nope")


def test_save_load_round_trip(detector, tmp_path):
  path = str(tmp_path / "detector.keras")
  detector.save(path)
  restored = keras.saving.load_model(path)
  clips = np.random.default_rng(1).integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)
  np.testing.assert_allclose(
    keras.ops.convert_to_numpy(detector(clips)),
    keras.ops.convert_to_numpy(restored(clips)),
    atol=1e-5,
  )


def test_mixed_precision_backbone_keeps_float32_outputs():
  model = deepfake.build_deepfake_detector(
    num_frames=2,
    frame_size=32,
    lstm_units=8,
    attention_after="block3b_add",
    dtype="mixed_float16",
  )
  encoder = model.get_layer("frame_encoder").layer
  assert encoder.get_layer("efficientnet_early").get_layer("stem_conv").compute_dtype == "float16"
  assert model.get_layer("lstm").compute_dtype == "float16"
  assert model.output.dtype == "float32"
  assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def _plateau_model(learning_rate=1e-2):
  model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
  model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
  return model


def test_plateau_reduces_then_stops_at_min_lr():
  model = _plateau_model(1e-2)
  plateau = callbacks.ValidationPlateau(
    "val_loss", 0.1, patience=2, cooldown=0, min_lr=1e-4, early_stopping_patience=100
  )
  plateau.set_model(model)
  rates = []
  for epoch, loss in enumerate([1.0, 1.1, 1.2, 1.3, 1.4]):
    plateau.on_epoch_end(epoch, {"val_loss": loss})
    rates.append(callbacks.current_learning_rate(model))
    if model.stop_training:
      break
  assert rates == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4])
  assert model.stop_training and "minimum" in plateau.stop_reason


def test_plateau_early_stopping_and_replayed_history():
  history = [{"val_loss": str(v)} for v in (1.0, 0.9, 0.95, 0.97)]
  plateau = callbacks.ValidationPlateau(
    "val_loss", 0.1, patience=10, cooldown=0, min_lr=0.0, early_stopping_patience=3, history=history
  )
  assert (plateau.best, plateau.wait, plateau.epochs_without_improvement) == (0.9, 2, 2)
  model = _plateau_model()
  plateau.set_model(model)
  plateau.on_epoch_end(0, {"val_loss": 0.99})
  assert model.stop_training and "has not improved for 3" in plateau.stop_reason


def test_frame_distributed_runs_the_encoder_once_over_all_frames():
  encoder = keras.Sequential(
    [keras.Input((4, 4, 3)), keras.layers.BatchNormalization(), keras.layers.Flatten()]
  )
  wrapped = deepfake.FrameDistributed(encoder)
  clips = np.random.default_rng(0).normal(size=(2, 3, 4, 4, 3)).astype(np.float32)
  # Training-mode BatchNorm: statistics over all 6 frames together, as one batch.
  expected = keras.ops.convert_to_numpy(encoder(clips.reshape(6, 4, 4, 3), training=True))
  actual = keras.ops.convert_to_numpy(wrapped(clips, training=True))
  assert actual.shape == (2, 3, 48)
  np.testing.assert_allclose(actual, expected.reshape(2, 3, 48), atol=1e-5)
  assert wrapped.compute_output_shape((None, 3, 4, 4, 3)) == (None, 3, 48)


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_drop_connect_rate_rescales_the_backbone_stochastic_depth(rate):
  default = deepfake.build_frame_encoder(32, attention_after="block3b_add")
  changed = deepfake.build_frame_encoder(32, attention_after="block3b_add", drop_connect_rate=rate)

  def rates(encoder):
    parts = [encoder.get_layer("efficientnet_early"), encoder.get_layer("efficientnet_late")]
    return [layer.rate for part in parts for layer in part.layers if layer.name.endswith("_drop")]

  assert len(rates(default)) == 9 and max(rates(default)) < deepfake.KERAS_DROP_CONNECT_RATE
  np.testing.assert_allclose(
    rates(changed), np.array(rates(default)) * rate / deepfake.KERAS_DROP_CONNECT_RATE
  )


def test_plateau_with_factor_one_never_touches_the_rate():
  model = _plateau_model(1e-2)
  plateau = callbacks.ValidationPlateau(
    "val_loss", 1.0, patience=1, cooldown=0, min_lr=None, early_stopping_patience=3
  )
  plateau.set_model(model)
  for epoch, loss in enumerate([1.0, 1.1, 1.2]):
    plateau.on_epoch_end(epoch, {"val_loss": loss})
  assert callbacks.current_learning_rate(model) == pytest.approx(1e-2)
  assert not model.stop_training and not plateau.should_stop(0.0)
  plateau.on_epoch_end(3, {"val_loss": 1.3})
  assert model.stop_training and "has not improved for 3" in plateau.stop_reason


def test_plateau_without_min_lr_still_reduces():
  model = _plateau_model(1e-2)
  plateau = callbacks.ValidationPlateau(
    "val_loss", 0.5, patience=1, cooldown=0, min_lr=None, early_stopping_patience=10
  )
  plateau.set_model(model)
  for epoch, loss in enumerate([1.0, 1.1]):
    plateau.on_epoch_end(epoch, {"val_loss": loss})
  assert callbacks.current_learning_rate(model) == pytest.approx(5e-3)
  assert not model.stop_training
