"""Video deepfake detector: TimeDistributed EfficientNetB0 + LSTM with attention.

Per frame, `keras.applications.EfficientNetB0` extracts features, with a
spatial attention gate inserted inside the backbone after an intermediate
block, as the EfficientNetAutoAtt detectors (Bonettini et al., ICPR 2020) do: a
1x1 convolution and a sigmoid give a `[h, w]` map in (0, 1) that multiplies the
block's features, so the rest of the network sees only what the map lets
through, and the map shows where the model looks. An LSTM runs over the
per-frame features; temporal attention pooling weighs its outputs by learned
per-frame scores; dropout and a 2-way softmax (float32) give real/fake
probabilities.

`FrameDistributed` runs the frame encoder over all frames of all clips as one
batch (Keras 3's `TimeDistributed` would run one backbone copy per frame). The
encoder returns its features and its flattened attention map concatenated into
one vector, so that a single-output wrapper carries both; `SplitFrameOutputs`
takes them apart. `build_explainer` turns a trained detector into a model that
also returns the spatial and temporal attention.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import ml_collections
from keras import ops

from keras_models.clip_augment import ClipAugmenter
from keras_models.fast_kernels import with_fast_kernels

FEATURE_DIM = 1280  # EfficientNetB0's last feature map depth
KERAS_DROP_CONNECT_RATE = 0.2  # keras.applications' EfficientNet stochastic depth


@contextlib.contextmanager
def _global_dtype_policy(policy: str | None) -> Iterator[None]:
  """`keras.applications` builds with the global policy: set it just for that."""
  previous = keras.config.dtype_policy()
  if policy:
    keras.config.set_dtype_policy(policy)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


@keras.saving.register_keras_serializable(package="face_analysis")
class SplitFrameOutputs(keras.layers.Layer):
  """Splits `[..., features + h*w]` into features and `[..., h, w]` attention maps."""

  def __init__(self, feature_dim: int, map_size: tuple[int, int], **kwargs: Any):
    super().__init__(**kwargs)
    self.feature_dim = feature_dim
    self.map_size = tuple(map_size)

  def call(self, inputs: Any) -> tuple[Any, Any]:
    features = inputs[..., : self.feature_dim]
    maps = inputs[..., self.feature_dim :]
    leading = ops.shape(inputs)[:-1]
    return features, ops.reshape(maps, (*leading, *self.map_size))

  def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[tuple, tuple]:
    return (*input_shape[:-1], self.feature_dim), (*input_shape[:-1], *self.map_size)

  def get_config(self) -> dict[str, Any]:
    return {**super().get_config(), "feature_dim": self.feature_dim, "map_size": self.map_size}


@keras.saving.register_keras_serializable(package="face_analysis")
class FrameDistributed(keras.layers.Wrapper):
  """Applies `layer` to every frame of `[batch, time, ...]` in one call over batch*time.

  What `TimeDistributed` means, done the way Keras 2 and PyTorch's
  `flatten(0, 1)` do it. Keras 3's `TimeDistributed` calls the layer once per
  time step instead (a Python loop over a static time axis): the graph holds a
  copy of the backbone per frame, which multiplies tracing time and per-step
  op overhead, and each BatchNorm normalises over one frame slot at a time and
  updates its moving statistics once per frame.
  """

  def build(self, input_shape: tuple[int | None, ...]) -> None:
    if not self.layer.built:
      self.layer.build((None, *input_shape[2:]))
    self.built = True

  def call(self, inputs: Any, training: bool | None = None) -> Any:
    shape = ops.shape(inputs)
    frames = ops.reshape(inputs, (-1, *inputs.shape[2:]))
    outputs = self.layer(frames, training=training)
    return ops.reshape(outputs, (shape[0], shape[1], *outputs.shape[1:]))

  def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
    per_frame = self.layer.compute_output_shape((None, *input_shape[2:]))
    return (input_shape[0], input_shape[1], *per_frame[1:])


@keras.saving.register_keras_serializable(package="face_analysis")
class TemporalAttentionPooling(keras.layers.Layer):
  """Softmax-weighted sum over time: scores from a Dense(1) of each step.

  Returns `(pooled [batch, units], weights [batch, time])`.
  """

  def __init__(self, **kwargs: Any):
    super().__init__(**kwargs)
    self.score = keras.layers.Dense(1, name="score", dtype=self.dtype_policy)

  def build(self, input_shape: tuple[int | None, ...]) -> None:
    self.score.build(input_shape)
    self.built = True

  def call(self, sequence: Any) -> tuple[Any, Any]:
    scores = ops.squeeze(self.score(sequence), -1)
    weights = ops.softmax(ops.cast(scores, "float32"), axis=-1)
    pooled = ops.sum(ops.cast(sequence, "float32") * weights[..., None], axis=1)
    return ops.cast(pooled, self.compute_dtype), weights

  def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[tuple, tuple]:
    return (input_shape[0], input_shape[-1]), (input_shape[0], input_shape[1])


def build_frame_encoder(
  frame_size: int,
  weights: str | None = None,
  attention_after: str = "block4c_add",
  batch_norm_momentum: float | None = None,
  drop_connect_rate: float | None = None,
  dtype: str | None = None,
) -> keras.Model:
  """EfficientNetB0 with a spatial attention gate after `attention_after`.

  Args:
    frame_size: side of the square RGB frames (0-255 floats).
    weights: None, `imagenet`, or a path to EfficientNetB0 weights.
    attention_after: the backbone layer whose output is gated: the end of a
      block (`block3b_add`, `block4c_add`, ...).
    batch_norm_momentum: overrides the backbone's BatchNorm momentum (Keras'
      EfficientNet uses 0.99, which needs thousands of steps before the moving
      statistics that evaluation uses are right; short runs want ~0.9).
    drop_connect_rate: overrides the backbone's stochastic depth (Keras'
      EfficientNetB0 drops residual branches at rates rising to 0.2, a
      regulariser for long runs that slows short ones down; 0 turns it off).
    dtype: Keras dtype policy for the backbone (None: the global one).

  Returns:
    A model from `[batch, s, s, 3]` to `[batch, 1280 + h*w]`: pooled features
    then the flattened attention map.
  """
  with _global_dtype_policy(dtype):
    backbone = keras.applications.EfficientNetB0(
      include_top=False, weights=weights, input_shape=(frame_size, frame_size, 3)
    )
    backbone = with_fast_kernels(backbone)
  if batch_norm_momentum is not None:
    for layer in backbone.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = batch_norm_momentum
  if drop_connect_rate is not None:
    # Keras sets block b's rate to 0.2 * b / blocks: rescale, keeping that shape.
    for layer in backbone.layers:
      if layer.name.endswith("_drop"):
        layer.rate *= drop_connect_rate / KERAS_DROP_CONNECT_RATE
  try:
    middle = backbone.get_layer(attention_after).output
  except ValueError as error:
    raise ValueError(
      f"config.model.attention_after={attention_after!r} is not a layer of EfficientNetB0; "
      "use the end of a block such as 'block3b_add' or 'block4c_add'."
    ) from error
  early = keras.Model(backbone.input, middle, name="efficientnet_early")
  late = keras.Model(middle, backbone.output, name="efficientnet_late")
  frames = keras.Input((frame_size, frame_size, 3), name="frame")
  x = early(frames)
  attention = keras.layers.Conv2D(
    1, 1, activation="sigmoid", name="spatial_attention", dtype=dtype
  )(x)
  x = keras.layers.Multiply(name="attention_gate", dtype=dtype)([x, attention])
  features = keras.layers.GlobalAveragePooling2D(name="frame_pool", dtype=dtype)(late(x))
  flat_attention = keras.layers.Flatten(name="attention_flat", dtype=dtype)(attention)
  outputs = keras.layers.Concatenate(name="frame_outputs", dtype="float32")(
    [features, flat_attention]
  )
  return keras.Model(frames, outputs, name="frame_encoder")


def build_deepfake_detector(
  num_frames: int,
  frame_size: int,
  lstm_units: int = 256,
  dropout: float = 0.5,
  weights: str | None = None,
  attention_after: str = "block4c_add",
  batch_norm_momentum: float | None = None,
  drop_connect_rate: float | None = None,
  augment: dict[str, Any] | None = None,
  lstm_use_cudnn: bool | str = "auto",
  dtype: str | None = None,
) -> keras.Model:
  """uint8 clips `[batch, num_frames, s, s, 3]` -> `[batch, 2]` (real, fake).

  `augment` holds `ClipAugmenter` arguments; the augmentation runs in training
  only. `lstm_use_cudnn` is the LSTM's `use_cudnn`: on a GPU, Keras' `auto`
  runs cuDNN's kernel, which XLA cannot compile (the LSTM then declares
  `supports_jit=False`); a model to be compiled with XLA passes False.
  """
  encoder = build_frame_encoder(
    frame_size, weights, attention_after, batch_norm_momentum, drop_connect_rate, dtype
  )
  map_size = tuple(encoder.get_layer("spatial_attention").output.shape[1:3])
  clips = keras.Input((num_frames, frame_size, frame_size, 3), dtype="uint8", name="clips")
  x = ClipAugmenter(**(augment or {}), name="augment")(clips)
  x = FrameDistributed(encoder, name="frame_encoder")(x)
  features, _ = SplitFrameOutputs(FEATURE_DIM, map_size, name="split_frame_outputs")(x)
  x = keras.layers.LSTM(
    lstm_units, return_sequences=True, use_cudnn=lstm_use_cudnn, name="lstm", dtype=dtype
  )(features)
  x, _ = TemporalAttentionPooling(name="temporal_attention", dtype=dtype)(x)
  x = keras.layers.Dropout(dropout, name="dropout", dtype=dtype)(x)
  logits = keras.layers.Dense(2, name="logits", dtype="float32")(x)
  probabilities = keras.layers.Activation("softmax", name="probabilities", dtype="float32")(logits)
  return keras.Model(clips, probabilities, name="deepfake_detector")


def build_explainer(detector: keras.Model) -> keras.Model:
  """Clips -> {probabilities, spatial_attention [b, t, h, w], temporal_attention [b, t]}.

  Shares every layer (and so every weight) with `detector`.
  """
  _, spatial = detector.get_layer("split_frame_outputs").output
  _, temporal = detector.get_layer("temporal_attention").output
  return keras.Model(
    detector.input,
    {
      "probabilities": detector.output,
      "spatial_attention": spatial,
      "temporal_attention": temporal,
    },
    name="deepfake_explainer",
  )


def build_model(
  config: ml_collections.ConfigDict, dtype_policy: str | None = None, jit_compile: bool = False
) -> keras.Model:
  """The detector of a deepfake config; with `jit_compile` its LSTM avoids cuDNN, which
  XLA cannot compile."""
  return build_deepfake_detector(
    num_frames=config.data.num_frames,
    frame_size=config.data.image_size,
    lstm_units=config.model.lstm_units,
    dropout=config.model.dropout,
    weights=config.model.backbone_weights or None,
    attention_after=config.model.attention_after,
    batch_norm_momentum=config.model.batch_norm_momentum or None,
    drop_connect_rate=config.model.drop_connect_rate,
    augment=config.augment.to_dict(),
    lstm_use_cudnn=False if jit_compile else "auto",
    dtype=dtype_policy,
  )
