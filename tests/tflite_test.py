"""TFLite export (none, float16, int8): agreement with the SavedModel, metadata, evaluation."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tools import evaluate_emotion
from training import emotion_inference, tflite

# Largest |TFLite - SavedModel| probability allowed per variant. Measured on
# tiny untrained models: 3e-10 (none), up to 1.4e-3 (float16 weights), 0.0039
# (int8: the softmax output's quantisation step is 1/256).
TOLERANCES = {"none": 1e-5, "float16": 5e-3, "int8": 0.03}


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
  """quantize -> (path, metadata) of the tiny checkpoint's three TFLite variants."""
  config, checkpoint, _ = tiny_model
  root = tmp_path_factory.mktemp("tflite")
  return {
    quantize: (
      path := str(root / f"model_{quantize}.tflite"),
      tflite.export_emotion_model(checkpoint, path, quantize, config, num_calibration_images=64),
    )
    for quantize in tflite.QUANTIZATIONS
  }


@pytest.mark.parametrize("quantize", tflite.QUANTIZATIONS)
def test_tflite_agrees_with_the_saved_model(tiny_model, exported, quantize):
  config, _, export = tiny_model
  path, metadata = exported[quantize]
  images = np.random.default_rng(1).integers(0, 256, (24, 16, 16, 3), np.uint8)
  serve = tf.saved_model.load(export).signatures["serving_default"]
  expected = serve(images=tf.constant(images))["probabilities"].numpy()
  with open(path, "rb") as file:
    model_bytes = file.read()
  interpreter = tf.lite.Interpreter(model_content=model_bytes)
  (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
  assert inputs["dtype"] == np.uint8 and list(inputs["shape_signature"]) == [-1, 16, 16, 3]
  assert outputs["dtype"] == np.float32
  interpreter.resize_tensor_input(inputs["index"], images.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(inputs["index"], images)
  interpreter.invoke()
  got = interpreter.get_tensor(outputs["index"])
  np.testing.assert_allclose(got, expected, atol=TOLERANCES[quantize], rtol=0)
  assert tflite.read_metadata(model_bytes) == {
    k: v for k, v in metadata.items() if k != "size_bytes"
  }
  assert metadata["class_names"] == list(config.data.class_names)
  assert metadata["image_size"] == 16 and metadata["quantize"] == quantize
  assert metadata["size_bytes"] == os.path.getsize(path)
  # Images of another size are resized before the interpreter, as files are by the export.
  runner = tflite.TFLiteModel(path)
  larger = tf.image.resize(images, (24, 24)).numpy().round().astype(np.uint8)
  assert runner(larger).shape == (24, 7)


def test_int8_runs_its_convolutions_in_int8_and_is_smallest(exported):
  with open(exported["int8"][0], "rb") as file:
    types = tflite.quantized_op_types(file.read())
  for op in ("CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN", "SOFTMAX"):
    assert types[op] == {"int8"}, (op, types[op])
  assert exported["int8"][1]["calibration_images"] == 64
  sizes = {q: meta["size_bytes"] for q, (_, meta) in exported.items()}
  assert sizes["int8"] < sizes["float16"] < sizes["none"]


def test_every_format_gives_the_same_report_keys(tiny_model, exported, tmp_path):
  config, checkpoint, export = tiny_model
  reports = {
    name: evaluate_emotion.evaluate(path, config, str(tmp_path / name), "test")
    for name, path in (
      ("keras", checkpoint),
      ("saved_model", export),
      ("int8", exported["int8"][0]),
    )
  }
  keys = {name: set(report) for name, report in reports.items()}
  assert keys["keras"] == keys["saved_model"] == keys["int8"]
  assert set(reports["keras"]["plain"]) == set(reports["int8"]["plain"])
  int8 = reports["int8"]
  assert int8["model_format"] == "tflite"
  assert int8["model_size_bytes"] == os.path.getsize(exported["int8"][0])
  assert int8["latency_ms_per_image"] > 0
  # The reference defaults to the .tflite's source checkpoint (no run export beside it here).
  reference = int8["reference"]
  assert reference["model"] == os.path.abspath(checkpoint)
  assert reference["accuracy"] == reports["keras"]["plain"]["accuracy"]
  assert reference["accuracy_difference_points"] == pytest.approx(
    100 * (int8["plain"]["accuracy"] - reference["accuracy"])
  )
  assert reference["agreement"] >= 0.9
  assert reports["keras"]["reference"] is None


def test_classifier_loads_tflite_like_the_other_formats(tiny_model, exported):
  _, checkpoint, _ = tiny_model
  images = np.random.default_rng(2).integers(0, 256, (5, 16, 16, 3), np.uint8)
  keras_probabilities = emotion_inference.Classifier(checkpoint)(images)
  classifier = emotion_inference.Classifier(exported["none"][0])
  assert classifier.format == "tflite" and classifier.input_size() == 16
  assert classifier.class_names == list(tiny_model[0].data.class_names)
  np.testing.assert_allclose(classifier(images), keras_probabilities, atol=1e-5)


def test_bad_exports_and_wrong_tflite_files_are_clear_errors(tiny_model, exported, tmp_path):
  config, checkpoint, _ = tiny_model
  with pytest.raises(ValueError, match=r"--quantize='int4'; expected one of \['none'"):
    tflite.export_emotion_model(checkpoint, str(tmp_path / "a.tflite"), "int4", config)
  with pytest.raises(FileNotFoundError, match="missing.keras"):
    tflite.export_emotion_model(str(tmp_path / "missing.keras"), str(tmp_path / "a.tflite"), "none")
  with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
    tflite.export_emotion_model(checkpoint, exported["none"][0], "none")
  with pytest.raises(ValueError, match="int8 needs the run's --config"):
    tflite.export_emotion_model(checkpoint, str(tmp_path / "b.tflite"), "int8")
  assert not os.listdir(tmp_path)

  # A TFLite model of something else: no metadata of an emotion model.
  inputs = keras.Input((4,))
  other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
  converter = tf.lite.TFLiteConverter.from_keras_model(other)
  path = tmp_path / "other.tflite"
  path.write_bytes(converter.convert())
  with pytest.raises(ValueError, match="no 'face_analysis' metadata of an emotion model"):
    emotion_inference.Classifier(str(path))
  garbage = tmp_path / "garbage.tflite"
  garbage.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="is not a TFLite model"):
    emotion_inference.Classifier(str(garbage))
  # The right kind of file, but trained on other classes than the config's.
  wrong = config.copy_and_resolve_references()
  wrong.data.class_names = list(reversed(config.data.class_names))
  with pytest.raises(ValueError, match="was exported for the classes"):
    evaluate_emotion.evaluate(exported["none"][0], wrong, str(tmp_path / "eval"))


def test_predict_images_through_a_tflite_model(tiny_model, exported, tmp_path):
  config, checkpoint, _ = tiny_model
  crops = np.random.default_rng(3).integers(0, 256, (2, 16, 16, 3), np.uint8)
  for k, crop in enumerate(crops):
    tf.keras.utils.save_img(str(tmp_path / f"face{k}.png"), crop, scale=False)
  items = emotion_inference.expand_images(
    [str(tmp_path / "face0.png"), str(tmp_path / "face1.png")]
  )
  rows = {}
  for name, path in (("keras", checkpoint), ("tflite", exported["none"][0])):
    classifier = emotion_inference.Classifier(path)
    names = classifier.class_names or list(config.data.class_names)
    rows[name] = emotion_inference.predict_images(
      items, classifier, None, None, names, str(tmp_path / name), grayscale=False
    )
  assert [r["emotion"] for r in rows["tflite"]] == [r["emotion"] for r in rows["keras"]]
  for tflite_row, keras_row in zip(rows["tflite"], rows["keras"], strict=True):
    assert tflite_row["probability"] == pytest.approx(keras_row["probability"], abs=1e-5)


def test_a_model_the_converter_cannot_convert_is_a_clear_error(tmp_path):
  # Shaped like the deepfake detector where conversion fails: an LSTM over frames.
  clips = keras.Input((2, 4, 4, 3), dtype="uint8")
  x = keras.layers.Reshape((2, 48))(keras.ops.cast(clips, "float32"))
  x = keras.layers.LSTM(3)(x)
  model = keras.Model(
    clips, keras.layers.Dense(2, activation="softmax")(x), name="deepfake_detector"
  )
  path = str(tmp_path / "best.keras")
  model.save(path)
  with pytest.raises(tflite.ConversionError, match="is a deepfake detector.*TensorListReserve"):
    tflite.export_emotion_model(path, str(tmp_path / "model.tflite"), "none")
  assert not (tmp_path / "model.tflite").exists()
