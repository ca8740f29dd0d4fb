"""ResNet18: exact size, stage shapes, PyTorch padding, dtypes, save/load."""

import keras
import numpy as np
import pytest

from keras_models import resnet


def _trainable(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _expected_trainable(width=64, head_units=256, num_classes=7, in_channels=3):
  """Counts ResNet18 parameters by hand: conv kernels plus BN gamma/beta."""
  total = 9 * in_channels * width + 2 * width  # stem conv + BN
  channels = width
  for stage in range(4):
    filters = width * 2**stage
    for _block in range(2):
      total += 9 * channels * filters + 2 * filters  # conv1 + bn1
      total += 9 * filters * filters + 2 * filters  # conv2 + bn2
      if channels != filters:
        total += channels * filters + 2 * filters  # 1x1 projection + BN
      channels = filters
  total += channels * head_units + head_units + 2 * head_units  # Linear + BN
  total += head_units * num_classes + num_classes  # Linear
  return total


def test_full_resnet18_has_exact_parameter_count():
  model = resnet.build_resnet18()
  # torchvision's ResNet18 without its fc has 11,176,512 parameters; the 3x3
  # stem saves 9,408 - 1,728 = 7,680 of them, and the head adds 133,639.
  assert _trainable(model) == 11_176_512 - 7_680 + 133_639 == 11_302_471
  assert _trainable(model) == _expected_trainable()
  # Non-trainable: BN moving mean and variance.
  bn_channels = 64 + 4 * 64 + 4 * 128 + 4 * 256 + 4 * 512 + 128 + 256 + 512 + 256
  assert model.count_params() - _trainable(model) == 2 * bn_channels


@pytest.mark.parametrize("width,head_units,num_classes", [(4, 8, 7), (8, 16, 3)])
def test_small_variants_parameter_count(width, head_units, num_classes):
  model = resnet.build_resnet18(
    input_shape=(16, 16, 3), width=width, head_units=head_units, num_classes=num_classes
  )
  assert _trainable(model) == _expected_trainable(width, head_units, num_classes)


@pytest.mark.parametrize(
  "size,stem_pool,expected",
  [
    (96, False, [96, 48, 24, 12]),
    (96, True, [48, 24, 12, 6]),
    # Odd sizes: PyTorch's (n + 2 - 3) // 2 + 1 per stride-2 conv.
    (33, False, [33, 17, 9, 5]),
  ],
)
def test_stage_output_shapes(size, stem_pool, expected):
  model = resnet.build_resnet18(
    input_shape=(size, size, 3), width=4, head_units=8, stem_pool=stem_pool
  )
  for stage, side in enumerate(expected, start=1):
    layer = model.get_layer(f"stage{stage}_block2_out")
    assert layer.output.shape[1:] == (side, side, 4 * 2 ** (stage - 1))
  assert model.output.shape == (None, 7)


def test_stride2_conv_pads_symmetrically_like_pytorch():
  """A centred impulse must stay centred; Keras 'same' would shift it."""
  model = resnet.build_resnet18(input_shape=(9, 9, 3), width=1, head_units=2)
  pad = model.get_layer("stage2_block1_conv1_pad")
  assert pad.padding == ((1, 1), (1, 1))
  assert model.get_layer("stage2_block1_conv1").padding == "valid"
  conv = keras.layers.Conv2D(
    1, 3, strides=2, padding="valid", use_bias=False, kernel_initializer="ones"
  )
  image = np.zeros((1, 9, 9, 1), np.float32)
  image[0, 4, 4] = 1.0
  out = conv(pad(image)).numpy()[0, :, :, 0]
  assert out.shape == (5, 5)
  assert np.argwhere(out == 1.0).tolist() == [[2, 2]]


def test_outputs_are_probabilities_and_float32_under_mixed_precision():
  model = resnet.build_resnet18(
    input_shape=(16, 16, 3), width=4, head_units=8, dtype="mixed_float16"
  )
  assert model.get_layer("stem_conv").compute_dtype == "float16"
  assert model.get_layer("stem_conv").variable_dtype == "float32"
  assert model.get_layer("logits").compute_dtype == "float32"
  out = model(np.random.rand(2, 16, 16, 3).astype("float32"), training=False)
  assert out.dtype == "float32"
  np.testing.assert_allclose(np.sum(out, axis=-1), 1.0, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
  model = resnet.build_resnet18(input_shape=(16, 16, 3), width=4, head_units=8)
  images = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)
  path = str(tmp_path / "model.keras")
  model.save(path)
  restored = keras.saving.load_model(path)
  np.testing.assert_allclose(
    model.predict(images, verbose=0), restored.predict(images, verbose=0), atol=1e-6
  )
