"""TFLite export (none, float16, int8): agreement with the SavedModel, metadata, evaluation."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from inference import emotion_evaluation, emotion_inference, tflite
from input_pipeline import emotion_data
from input_pipeline.images import resize_to_uint8

# (max, mean) |TFLite - SavedModel| probability allowed per variant, on the
# tiny config's own test faces. The tiny model is untrained (random weights,
# BatchNorm at its initial statistics), which is hard on int8: measured over
# 20 random initialisations, int8 differed by up to 0.16 (max) and 0.013
# (mean), float16 by up to 0.002 and 0.0003. `none` is allowed the export's own
# check (the Keras model resizes 16 -> 16 with antialiasing, the .tflite not).
TOLERANCES = {
  "none": (tflite.BYPASS_TOLERANCE, 1e-5),
  "float16": (5e-3, 1e-3),
  "int8": (0.25, 0.02),
}


def faces_of(config):
  """The tiny config's test split at the model's input size, uint8 RGB."""
  test = emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR).test
  images = np.repeat(test.images, 3, axis=-1)
  return resize_to_uint8(images, config.data.image_size, antialias=True).numpy()


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
  images = faces_of(config)
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
  largest, mean = TOLERANCES[quantize]
  difference = np.abs(got - expected)
  assert difference.max() <= largest and difference.mean() <= mean, (
    difference.max(),
    difference.mean(),
  )
  assert tflite.read_metadata(model_bytes) == {
    k: v for k, v in metadata.items() if k != "size_bytes"
  }
  assert metadata["class_names"] == list(config.data.class_names)
  assert metadata["image_size"] == 16 and metadata["quantize"] == quantize
  assert metadata["size_bytes"] == os.path.getsize(path)
  # Images of another size are resized before the interpreter, as files are by the export.
  runner = tflite.TFLiteModel(path)
  larger = tf.image.resize(images, (24, 24)).numpy().round().astype(np.uint8)
  assert runner(larger).shape == (len(images), 7)


def test_int8_runs_its_convolutions_in_int8_and_is_smallest(exported):
  with open(exported["int8"][0], "rb") as file:
    types = tflite.quantized_op_types(file.read())
  for op in ("CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN", "SOFTMAX"):
    assert types[op] == {"int8"}, (op, types[op])
  assert exported["int8"][1]["calibration_images"] == 64
  sizes = {q: meta["size_bytes"] for q, (_, meta) in exported.items()}
  assert sizes["int8"] < sizes["float16"] < sizes["none"]


def test_every_format_gives_the_same_report_keys(tiny_model, exported, tmp_path):
  _, checkpoint, export = tiny_model
  # Faces drawn at the model's input size: the .tflite gets them as they are (larger
  # ones reach it resized and rounded to uint8, which can flip near-tied classes of
  # this untrained model).
  config = tiny_model[0].copy_and_resolve_references()
  config.data.synthetic.image_size = config.data.image_size
  reports = {
    name: emotion_evaluation.evaluate(path, config, str(tmp_path / name), "test")
    for name, path in (
      ("keras", checkpoint),
      ("saved_model", export),
      ("none", exported["none"][0]),
      ("int8", exported["int8"][0]),
    )
  }
  for report in reports.values():
    assert set(report) == set(reports["keras"])
    assert set(report["plain"]) == set(reports["keras"]["plain"])
    assert report["model_size_bytes"] > 0 and report["latency_ms_per_image"] > 0
  assert reports["keras"]["reference"] is None and reports["saved_model"]["reference"] is None
  int8 = reports["int8"]
  assert int8["model_format"] == "tflite"
  assert int8["model_size_bytes"] == os.path.getsize(exported["int8"][0])
  assert set(int8["reference"]) == set(reports["none"]["reference"])
  # The reference defaults to the .tflite's source checkpoint (no run export beside it here);
  # the unquantised model gives its predictions.
  reference = reports["none"]["reference"]
  assert reference["model"] == os.path.abspath(checkpoint)
  assert reference["model_format"] == "keras"
  assert reference["accuracy"] == reports["keras"]["plain"]["accuracy"]
  assert reference["agreement"] == 1.0 and reference["accuracy_difference_points"] == 0.0
  assert reference["max_probability_difference"] <= tflite.BYPASS_TOLERANCE
  assert int8["reference"]["accuracy_difference_points"] == pytest.approx(
    100 * (int8["plain"]["accuracy"] - int8["reference"]["accuracy"])
  )


def test_classifier_loads_tflite_like_the_other_formats(tiny_model, exported):
  _, checkpoint, _ = tiny_model
  images = np.random.default_rng(2).integers(0, 256, (5, 16, 16, 3), np.uint8)
  keras_probabilities = emotion_inference.Classifier(checkpoint)(images)
  classifier = emotion_inference.Classifier(exported["none"][0])
  assert classifier.format == "tflite" and classifier.input_size() == 16
  assert classifier.class_names == list(tiny_model[0].data.class_names)
  np.testing.assert_allclose(classifier(images), keras_probabilities, atol=tflite.BYPASS_TOLERANCE)


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
    emotion_evaluation.evaluate(exported["none"][0], wrong, str(tmp_path / "eval"))


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
    assert tflite_row["probability"] == pytest.approx(
      keras_row["probability"], abs=tflite.BYPASS_TOLERANCE
    )


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
