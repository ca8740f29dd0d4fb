"""ResNet18 for small face images, as a Keras functional model.

The network follows torchvision's ResNet18 (BasicBlocks of 64/128/256/512
filters, two per stage, 1x1 projection shortcuts) with the changes the emotion
recipe makes for 48-96 pixel faces: a 3x3 stride-1 stem without max-pooling
(`stem_pool=True` restores the pool) and a classification head
Linear -> BatchNorm -> GELU -> Dropout -> Linear.

Padding follows PyTorch: a 3x3 stride-2 convolution pads one pixel on every
side (`ZeroPadding2D(1)` + `valid`), where Keras' `same` would pad only the
bottom and right and shift the features by one pixel. BatchNorm uses PyTorch's
epsilon and momentum, so weights ported from the PyTorch model give the same
outputs.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_models.batch_norm import FusedBatchNormalization

# PyTorch's BatchNorm defaults: eps=1e-5, momentum=0.1 (Keras counts momentum
# the other way round).
_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9

STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)


def _conv(x: Any, filters: int, kernel_size: int, strides: int, name: str, dtype: Any) -> Any:
  """A bias-free convolution padded the PyTorch way (kernel_size // 2 each side)."""
  padding = kernel_size // 2
  if padding and strides > 1:
    x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad", dtype=dtype)(x)
    mode = "valid"
  else:
    mode = "same" if padding else "valid"
  return keras.layers.Conv2D(
    filters,
    kernel_size,
    strides=strides,
    padding=mode,
    use_bias=False,
    kernel_initializer="he_normal",
    name=name,
    dtype=dtype,
  )(x)


def _batch_norm(x: Any, name: str, dtype: Any) -> Any:
  return FusedBatchNormalization(
    epsilon=_BN_EPSILON,
    momentum=_BN_MOMENTUM,
    name=name,
    dtype=dtype,
  )(x)


def basic_block(x: Any, filters: int, strides: int, name: str, dtype: Any = None) -> Any:
  """Two 3x3 conv-BN layers with an identity or 1x1-projection shortcut."""
  shortcut = x
  if strides != 1 or x.shape[-1] != filters:
    shortcut = _conv(x, filters, 1, strides, f"{name}_downsample_conv", dtype)
    shortcut = _batch_norm(shortcut, f"{name}_downsample_bn", dtype)
  x = _conv(x, filters, 3, strides, f"{name}_conv1", dtype)
  x = _batch_norm(x, f"{name}_bn1", dtype)
  x = keras.layers.ReLU(name=f"{name}_relu1", dtype=dtype)(x)
  x = _conv(x, filters, 3, 1, f"{name}_conv2", dtype)
  x = _batch_norm(x, f"{name}_bn2", dtype)
  x = keras.layers.Add(name=f"{name}_add", dtype=dtype)([shortcut, x])
  return keras.layers.ReLU(name=f"{name}_out", dtype=dtype)(x)


def build_resnet18(
  input_shape: tuple[int | None, int | None, int] = (96, 96, 3),
  num_classes: int = 7,
  dropout: float = 0.5,
  head_units: int = 256,
  width: int = 64,
  stem_pool: bool = False,
  dtype: Any = None,
  name: str = "resnet18",
) -> keras.Model:
  """Builds the emotion ResNet18.

  Args:
    input_shape: `(height, width, channels)` of the normalised float input.
    num_classes: size of the output layer.
    dropout: dropout rate in the head, between the GELU and the last Linear.
    head_units: width of the head's hidden Linear layer.
    width: filters of the first stage; later stages double it (64 is
      ResNet18; smaller values make cheap models for tests and quick runs).
    stem_pool: add torchvision's 3x3 stride-2 max-pool after the stem.
    dtype: a Keras dtype policy name, e.g. `mixed_float16`; `None` uses the
      global policy. The `logits` and `probabilities` are float32 regardless.
    name: model name.

  Returns:
    A functional model mapping images to class probabilities (softmax).
  """
  inputs = keras.Input(shape=input_shape, name="images")
  x = _conv(inputs, width, 3, 1, "stem_conv", dtype)
  x = _batch_norm(x, "stem_bn", dtype)
  x = keras.layers.ReLU(name="stem_relu", dtype=dtype)(x)
  if stem_pool:
    # ReLU output is >= 0, so zero padding acts like PyTorch's -inf padding.
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad", dtype=dtype)(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool", dtype=dtype)(x)
  for stage, num_blocks in enumerate(BLOCKS_PER_STAGE):
    filters = width * 2**stage
    for block in range(num_blocks):
      strides = 2 if stage > 0 and block == 0 else 1
      x = basic_block(x, filters, strides, f"stage{stage + 1}_block{block + 1}", dtype)
  x = keras.layers.GlobalAveragePooling2D(name="avg_pool", dtype=dtype)(x)
  x = keras.layers.Dense(head_units, name="head_dense", dtype=dtype)(x)
  x = keras.layers.BatchNormalization(
    epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name="head_bn", dtype=dtype
  )(x)
  x = keras.layers.Activation("gelu", name="head_gelu", dtype=dtype)(x)
  x = keras.layers.Dropout(dropout, name="head_dropout", dtype=dtype)(x)
  logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
  probabilities = keras.layers.Activation("softmax", name="probabilities", dtype="float32")(logits)
  return keras.Model(inputs, probabilities, name=name)
