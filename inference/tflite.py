"""TFLite export of the emotion model, and a runner for the exported files.

The TFLite model takes uint8 RGB images `[batch, size, size, 3]` of the model's
input size and returns float32 class probabilities `[batch, classes]`; the cast
and ImageNet normalisation are inside, so an app feeds pixels. Three variants:

* `none`: float32 weights and ops.
* `float16`: float16 weights, dequantised to float32 at load (half the size).
* `int8`: full-integer quantisation: int8 weights and activations, every
  convolution and dense op in int8, calibrated on training images of the
  run's own config. The uint8 input is cast and quantised inside the model
  and the output dequantised, so the interface is the same as the others.

The class names, the input size and how the file was made travel inside the
`.tflite` file, as a flatbuffer metadata entry named `face_analysis` (the
`metadata` table of the TFLite schema, read back with `read_metadata`);
`tflite_support`'s metadata writers are not needed for that.

The resize at the front of the Keras model (the preprocessor's) is left out:
the TFLite input already has the model's size, where that resize is the
identity, and two fewer matrix products keep int8 quantisation to the
network itself. `inference_function` checks that the result equals the Keras
model's `training=False` output.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.python.framework import convert_to_constants

from common import io_utils, outputs
from common.errors import ConfigError
from inference import model_io
from input_pipeline import emotion_data
from input_pipeline.images import resize_to_uint8
from keras_models import augment

QUANTIZATIONS = ("none", "float16", "int8")
METADATA_NAME = "face_analysis"  # The flatbuffer metadata entry this module writes.
METADATA_VERSION = 1
# Largest |difference| allowed between the TFLite graph without the front
# resize and the Keras model, in probabilities (float32 round-off only).
BYPASS_TOLERANCE = 1e-4


class ConversionError(ValueError):
  """The TFLite converter cannot convert a model; the message says what fails."""


def preprocess_layer(model: keras.Model) -> augment.ImagePreprocessor:
  """The emotion model's `ImagePreprocessor`; a clear error for other models."""
  for layer in model.layers:
    if isinstance(layer, augment.ImagePreprocessor):
      return layer
  raise ConfigError(
    f"Model {model.name!r} has no ImagePreprocessor layer; expected an emotion model "
    "(training/emotion.py build_model) or a deepfake detector."
  )


def inference_function(model: keras.Model, check_images: np.ndarray | None = None) -> Callable:
  """uint8 `[b, size, size, 3]` -> probabilities: the model in inference mode, minus resizing.

  The layers after the preprocessor run with `training=False`; the
  preprocessor's own inference path (resize, then normalise) is replaced by
  the normalisation alone, since the input already has the model's size.
  With `check_images` (uint8 at that size), the result is compared with
  `model(images, training=False)`.

  Raises:
    ValueError: the two differ by more than `BYPASS_TOLERANCE`.
  """
  preprocessor = preprocess_layer(model)
  size = preprocessor.image_size
  head = keras.Model(preprocessor.output, model.output, name=f"{model.name}_after_preprocess")

  @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
  def classify(images: tf.Tensor) -> dict[str, tf.Tensor]:
    normalized = augment.normalize(tf.cast(images, tf.float32))
    return {"probabilities": tf.cast(head(normalized, training=False), tf.float32)}

  if check_images is not None:
    expected = keras.ops.convert_to_numpy(model(check_images, training=False))
    got = classify(tf.constant(check_images))["probabilities"].numpy()
    difference = float(np.max(np.abs(expected - got)))
    if difference > BYPASS_TOLERANCE:
      raise ValueError(
        f"The TFLite inference graph differs from the Keras model by {difference:.3g} "
        f"(allowed {BYPASS_TOLERANCE}); the preprocessor's inference path has changed. "
        "Update inference/tflite.py inference_function to match it."
      )
  return classify


def calibration_images(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
  """`count` uint8 training images of the config's data at its input size, seeded order.

  Read with the loader training uses (`emotion_data.load`, `make_dataset`
  in training order: shuffled by `config.seed`, so the sample spans the
  classes), then resized as the `serving_bytes` export resizes files.
  """
  data = emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR)
  count = min(count, len(data.train))
  batch = min(64, count)
  dataset = emotion_data.make_dataset(
    data.train,
    batch,
    len(config.data.class_names),
    training=True,
    seed=config.seed,
    shuffle_buffer=config.data.shuffle_buffer,
  )
  size = config.data.image_size
  chunks, total = [], 0
  for images, _ in dataset:
    chunks.append(resize_to_uint8(images, size, antialias=True).numpy())
    total += len(chunks[-1])
    if total >= count:
      break
  return np.concatenate(chunks)[:count]


def convert(
  function: Callable,
  trackable: Any,
  quantize: str,
  representative_images: np.ndarray | None = None,
) -> bytes:
  """The TFLite flatbuffer of tf.function `function` (one uint8 input), quantised as asked.

  Args:
    function: a `tf.function` with an input signature.
    trackable: the object holding its variables (the Keras model).
    quantize: `none`, `float16` or `int8`.
    representative_images: uint8 calibration images, required for int8.

  Raises:
    ValueError: an unknown `quantize`, or int8 without images.
    ConversionError: the converter fails; its error lines are in the message.
  """
  if quantize not in QUANTIZATIONS:
    raise ValueError(f"--quantize={quantize!r}; expected one of {list(QUANTIZATIONS)}.")
  # Variables frozen into constants first: left to the converter (through
  # `trackable`), the int8 calibrator was handed a graph still reading a
  # resource variable once the preprocessor held a layer of its own
  # (`READ_VARIABLE ... variable != nullptr`).
  frozen = convert_to_constants.convert_variables_to_constants_v2(function.get_concrete_function())
  converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], trackable)
  if quantize == "float16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == "int8":
    if representative_images is None or not len(representative_images):
      raise ValueError("int8 quantisation needs calibration images.")

    def representative_dataset() -> Iterator[list[np.ndarray]]:
      for image in representative_images:
        yield [image[None]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    # Int8 builtins only: conversion fails rather than leave an op in float.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  try:
    return converter.convert()
  except Exception as error:  # The converter raises ConverterError and others.
    lines = [line.strip() for line in str(error).splitlines()]
    reasons = [line for line in lines if "error" in line.lower() or line.startswith("tf.")]
    raise ConversionError(
      "The TFLite converter failed: " + (" | ".join(reasons[:8]) or lines[-1][:500])
    ) from error


def add_metadata(model_bytes: bytes, metadata: dict[str, Any]) -> bytes:
  """`model_bytes` with `metadata` (JSON) as the flatbuffer metadata entry `METADATA_NAME`."""
  from tensorflow.lite.python import schema_py_generated as schema
  from tensorflow.lite.tools import flatbuffer_utils

  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
  buffer = schema.BufferT()
  buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
  model.buffers.append(buffer)
  entry = schema.MetadataT()
  entry.name = METADATA_NAME
  entry.buffer = len(model.buffers) - 1
  model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()]
  model.metadata.append(entry)
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(model_bytes: bytes) -> dict[str, Any] | None:
  """The `METADATA_NAME` entry of a TFLite flatbuffer, None if it has none."""
  from tensorflow.lite.python import schema_py_generated as schema

  model = schema.Model.GetRootAs(model_bytes, 0)
  for index in range(model.MetadataLength()):
    entry = model.Metadata(index)
    if entry.Name() == METADATA_NAME.encode():
      data = model.Buffers(entry.Buffer()).DataAsNumpy()
      return json.loads(np.asarray(data, np.uint8).tobytes().decode("utf-8"))
  return None


def is_tflite_file(path: str) -> bool:
  """Whether `path` is a TFLite flatbuffer (file identifier TFL3 at bytes 4-8)."""
  try:
    with open(path, "rb") as file:
      return file.read(8)[4:8] == b"TFL3"
  except OSError:
    return False


def export_emotion_model(
  model_path: str,
  output_path: str,
  quantize: str,
  config: ml_collections.ConfigDict | None = None,
  num_calibration_images: int = 300,
  overwrite: bool = False,
) -> dict[str, Any]:
  """Converts the emotion checkpoint `model_path` to `output_path` (written atomically).

  Args:
    config: the run's config; its training images calibrate int8 (required
      then) and its class names are checked against the model's outputs.
    overwrite: replace an existing `output_path`; refused otherwise.

  Returns:
    The metadata written into the file, with `size_bytes` added.
  """
  if quantize not in QUANTIZATIONS:
    raise ConfigError(f"--quantize={quantize!r}; expected one of {list(QUANTIZATIONS)}.")
  if not output_path.endswith(".tflite"):
    raise ConfigError(f"--output={output_path!r} should end in .tflite.")
  outputs.check_not_input(output_path, [model_path])
  # Only a TFLite file (this tool's output) is ever replaced.
  outputs.check_replaceable(output_path, "tools.export_tflite", is_tflite_file, "TFL3", overwrite)
  if quantize == "int8" and config is None:
    raise ConfigError("--quantize=int8 needs the run's --config for its calibration images.")
  model = model_io.load_checkpoint_flag(model_path)
  if model.name == "deepfake_detector":
    return _fail_deepfake(model, model_path)
  size = preprocess_layer(model).image_size
  num_classes = int(model.output.shape[-1])
  class_names = _class_names(config, num_classes, model_path)
  if config is not None and config.data.image_size != size:
    raise ConfigError(
      f"{model_path} takes {size}x{size} images, but config.data.image_size is "
      f"{config.data.image_size}. Is --config the run's config?"
    )
  images = None
  if quantize == "int8":
    images = calibration_images(config, num_calibration_images)
    logging.info("Calibrating int8 on %d training images of %s.", len(images), config.name)
  check = images[:16] if images is not None else _random_images(size)
  function = inference_function(model, check)
  start = time.perf_counter()
  model_bytes = convert(function, model, quantize, images)
  metadata = {
    "format_version": METADATA_VERSION,
    "task": "emotion",
    "class_names": class_names,
    "image_size": size,
    "input": "uint8 RGB [batch, image_size, image_size, 3], 0-255",
    "output": "float32 probabilities [batch, len(class_names)]",
    "quantize": quantize,
    "calibration_images": 0 if images is None else len(images),
    "source_model": os.path.abspath(model_path),
  }
  model_bytes = add_metadata(model_bytes, metadata)
  io_utils.write_bytes(output_path, model_bytes)
  logging.info(
    "Wrote %s (%s, %d bytes) in %.1f s.",
    output_path,
    quantize,
    len(model_bytes),
    time.perf_counter() - start,
  )
  return {**metadata, "size_bytes": len(model_bytes)}


def _class_names(
  config: ml_collections.ConfigDict | None, num_classes: int, model_path: str
) -> list[str]:
  from common.labels import EMOTION_CLASSES

  names = list(config.data.class_names) if config is not None else list(EMOTION_CLASSES)
  if len(names) != num_classes:
    raise ConfigError(
      f"{model_path} outputs {num_classes} classes; the class names are {names}. "
      "Is --config the run's config?"
    )
  return names


def _random_images(size: int, count: int = 8) -> np.ndarray:
  return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), np.uint8)


def _fail_deepfake(model: keras.Model, model_path: str) -> NoReturn:
  """Tries the deepfake detector; the converter's failure, explained, is the result."""
  shape = [None, *model.input.shape[1:]]

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8, name="clips")])
  def classify(clips: tf.Tensor) -> dict[str, tf.Tensor]:
    return {"probabilities": model(clips, training=False)}

  try:
    convert(classify, model, "none")
  except ConversionError as error:
    raise ConversionError(
      f"{model_path} is a deepfake detector, which cannot be exported to TFLite yet "
      f"(README, TensorFlow Lite, says what fails): {error}"
    ) from error
  raise ConversionError(
    f"{model_path} is a deepfake detector; it converts, but its TFLite export is not "
    "supported by this tool yet (only the emotion model is)."
  )


class TFLiteModel:
  """Runs an emotion `.tflite` file written by `export_emotion_model` in `tf.lite.Interpreter`."""

  def __init__(self, path: str, num_threads: int | None = 1):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"--model={path!r} does not exist.")
    with open(path, "rb") as file:
      model_bytes = file.read()
    try:
      metadata = read_metadata(model_bytes)
    except Exception as error:  # A file that is not a flatbuffer raises many types.
      raise ConfigError(f"--model={path!r} is not a TFLite model ({error}).") from error
    if metadata is None or metadata.get("task") != "emotion":
      raise ConfigError(
        f"--model={path!r} has no {METADATA_NAME!r} metadata of an emotion model; "
        "expected a file written by python -m tools.export_tflite from an emotion checkpoint."
      )
    self.path = path
    self.metadata = metadata
    self.class_names: list[str] = list(metadata["class_names"])
    self.image_size: int = int(metadata["image_size"])
    with warnings.catch_warnings():  # tf.lite.Interpreter warns it moves to ai_edge_litert.
      warnings.simplefilter("ignore")
      self.interpreter = tf.lite.Interpreter(model_content=model_bytes, num_threads=num_threads)
    (self._input,) = self.interpreter.get_input_details()
    (self._output,) = self.interpreter.get_output_details()
    expected = [-1, self.image_size, self.image_size, 3]
    if self._input["dtype"] != np.uint8 or list(self._input["shape_signature"]) != expected:
      raise ConfigError(
        f"--model={path!r} takes {self._input['dtype'].__name__} "
        f"{list(self._input['shape_signature'])}; expected uint8 {expected}."
      )
    self._batch = 0

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """float32 probabilities `[b, classes]` of uint8 images `[b, h, w, 3]` (resized if needed)."""
    images = np.asarray(images)
    if images.shape[1:3] != (self.image_size, self.image_size):
      images = resize_to_uint8(images, self.image_size, antialias=True).numpy()
    if len(images) != self._batch:
      self.interpreter.resize_tensor_input(self._input["index"], [len(images), *images.shape[1:]])
      self.interpreter.allocate_tensors()
      self._batch = len(images)
    self.interpreter.set_tensor(self._input["index"], images.astype(np.uint8))
    self.interpreter.invoke()
    return self.interpreter.get_tensor(self._output["index"]).copy()


def quantized_op_types(model_bytes: bytes) -> dict[str, set[str]]:
  """Op name -> the dtypes of its first input, without delegates (what runs in int8)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    interpreter = tf.lite.Interpreter(
      model_content=model_bytes,
      experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
  interpreter.allocate_tensors()
  tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
  types: dict[str, set[str]] = {}
  for op in interpreter._get_ops_details():  # noqa: SLF001  The one public-enough op list.
    inputs = [i for i in op["inputs"] if i >= 0]
    dtype = np.dtype(tensors[inputs[0]]["dtype"]).name if inputs else "none"
    types.setdefault(op["op_name"], set()).add(dtype)
  return types


def measure_latency(
  predict: Callable[[np.ndarray], Any], image: np.ndarray, runs: int = 50, warmup: int = 5
) -> float:
  """Median wall-clock milliseconds of `predict` on one image (batch of 1)."""
  batch = np.asarray(image)[None]
  for _ in range(warmup):
    predict(batch)
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    predict(batch)
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1000)


def file_size(path: str) -> int:
  """Bytes of a file, or of all files under a directory (a SavedModel)."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(
    os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
  )
