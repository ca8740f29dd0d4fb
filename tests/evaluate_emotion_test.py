"""Emotion evaluation (inference.emotion_evaluation): ten-crop, reports, checkpoint vs export."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from common import figures
from common.errors import ConfigError, DataError
from configs import emotion as emotion_config
from inference import emotion_evaluation, emotion_inference, reports
from input_pipeline import emotion_data
from input_pipeline.fer2013 import LabelledImages


@pytest.fixture(scope="module")
def checkpoint_report(tiny_model, tmp_path_factory):
  config, checkpoint, _ = tiny_model
  output = str(tmp_path_factory.mktemp("eval"))
  return emotion_evaluation.evaluate(checkpoint, config, output, "test", use_ten_crop=True), output


def test_ten_crop_cuts_corners_centre_and_their_mirrors():
  images = np.arange(2 * 5 * 6 * 2, dtype=np.uint8).reshape(2, 5, 6, 2)
  crops = emotion_evaluation.ten_crop(tf.constant(images), 3).numpy()
  assert crops.shape == (2, 10, 3, 3, 2) and crops.dtype == np.uint8
  expected = [
    images[:, 0:3, 0:3],  # top-left
    images[:, 0:3, 3:6],  # top-right
    images[:, 2:5, 0:3],  # bottom-left
    images[:, 2:5, 3:6],  # bottom-right
    images[:, 1:4, 1:4],  # centre, offsets (5-3)//2 and (6-3)//2
  ]
  for k, crop in enumerate(expected):
    np.testing.assert_array_equal(crops[:, k], crop)
    np.testing.assert_array_equal(crops[:, 5 + k], crop[:, :, ::-1])


def test_ten_crop_rejects_images_smaller_than_the_crop():
  with pytest.raises(ValueError, match="smaller than the crop size 8"):
    emotion_evaluation.ten_crop(tf.zeros((1, 6, 9, 3), tf.uint8), 8)


def test_resize_and_ten_crop_keeps_uint8_and_flattens_the_crops():
  assert emotion_evaluation.ten_crop_resize_size(224) == 256
  assert emotion_evaluation.ten_crop_resize_size(48) == 55
  images = tf.fill((3, 24, 24, 3), tf.constant(77, tf.uint8))
  crops = emotion_evaluation.resize_and_ten_crop(images, 16)
  assert crops.shape == (30, 16, 16, 3) and crops.dtype == tf.uint8
  assert np.all(crops.numpy() == 77)


def test_build_report_on_known_predictions():
  labels = np.array([0, 1, 1, 2])
  probabilities = np.eye(3)[[0, 1, 2, 2]]
  report = reports.classification_report(labels, probabilities, ["a", "b", "c"])
  assert report["accuracy"] == 0.75
  assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
  per_class = report["per_class"]["b"]
  assert per_class.pop("roc_auc") == pytest.approx(0.75)
  assert per_class == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
  assert report["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_checkpoint_evaluation_writes_every_report(checkpoint_report):
  report, output = checkpoint_report
  assert sorted(os.listdir(output)) == [
    "classification_report.txt",
    "confusion_matrix.png",
    "confusion_matrix_ten_crop.png",
    "report.json",
  ]
  with open(os.path.join(output, "report.json")) as file:
    assert json.load(file) == report
  assert report["model_format"] == "keras" and report["split"] == "test"
  assert report["class_names"] == list(emotion_config.get_config("tiny").data.class_names)
  for name in ("plain", "ten_crop"):
    result = report[name]
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["f1_macro"] <= 1
    assert np.sum(result["confusion_matrix"]) == report["num_images"] == 32
    assert sum(c["support"] for c in result["per_class"].values()) == 32
  assert report["ten_crop"]["crop_size"] == 16 and report["ten_crop"]["resize_size"] == 18
  assert report["ten_crop"]["view_fraction"] == 0.875
  text = open(os.path.join(output, "classification_report.txt")).read()
  assert "Plain (test, 32 images)" in text and "Ten-crop (test, 32 images)" in text
  for name in ("confusion_matrix.png", "confusion_matrix_ten_crop.png"):
    with open(os.path.join(output, name), "rb") as file:
      assert file.read(8) == figures.PNG_MAGIC


def test_plain_predictions_are_the_models(tiny_model):
  config, checkpoint, _ = tiny_model
  split = LabelledImages(
    np.random.default_rng(0).integers(0, 256, (5, 24, 24, 1), dtype=np.uint8), np.zeros(5, int)
  )
  classifier = emotion_inference.Classifier(checkpoint)
  probabilities = emotion_evaluation.predict_split(classifier, split, 7, batch_size=2)
  direct = classifier.model.predict(np.repeat(split.images, 3, axis=-1), verbose=0)
  np.testing.assert_allclose(probabilities, direct, rtol=1e-5, atol=1e-6)
  ten_crop = emotion_evaluation.predict_split(classifier, split, 7, batch_size=2, crop_size=16)
  assert ten_crop.shape == (5, 7)
  np.testing.assert_allclose(ten_crop.sum(axis=-1), 1.0, rtol=1e-5)


def test_ten_crop_views_cover_the_configured_fraction():
  assert emotion_evaluation.ten_crop_fraction(0.875, 1.0) == 0.875
  # A model that centre-crops 0.95 itself gets views of 0.875 / 0.95 of the resized image.
  assert emotion_evaluation.ten_crop_fraction(0.875, 0.95) == pytest.approx(0.875 / 0.95)
  assert emotion_evaluation.ten_crop_fraction(0.95, 0.95) == 1.0


def test_full_views_average_each_image_and_its_mirror(tiny_model):
  config, checkpoint, _ = tiny_model
  # Images at the model's size, so that no resize rounds them differently.
  images = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
  split = LabelledImages(images, np.zeros(4, int))
  classifier = emotion_inference.Classifier(checkpoint)
  views = emotion_evaluation.predict_split(classifier, split, 7, 2, crop_size=16, crop_fraction=1.0)
  mirrored = LabelledImages(images[:, :, ::-1].copy(), np.zeros(4, int))
  plain = emotion_evaluation.predict_split(classifier, split, 7, 2)
  flipped = emotion_evaluation.predict_split(classifier, mirrored, 7, 2)
  assert np.abs(plain - flipped).max() > 1e-4  # the mirror images do differ
  np.testing.assert_allclose(views, (plain + flipped) / 2, atol=2e-5)


def test_export_gives_the_checkpoints_results(tiny_model, checkpoint_report, tmp_path):
  config, _, export = tiny_model
  report = emotion_evaluation.evaluate(export, config, str(tmp_path), "test", use_ten_crop=True)
  assert report["model_format"] == "saved_model"
  for name in ("plain", "ten_crop"):
    assert report[name]["accuracy"] == checkpoint_report[0][name]["accuracy"]
    assert report[name]["confusion_matrix"] == checkpoint_report[0][name]["confusion_matrix"]


def test_validation_split_without_ten_crop(tiny_model, tmp_path):
  config, checkpoint, _ = tiny_model
  report = emotion_evaluation.evaluate(checkpoint, config, str(tmp_path), "validation")
  assert report["ten_crop"] is None
  assert report["num_images"] == config.data.synthetic.num_validation
  assert not (tmp_path / "confusion_matrix_ten_crop.png").exists()


def test_bad_model_paths_and_configs_are_clear_errors(tiny_model, tmp_path):
  config, checkpoint, _ = tiny_model
  with pytest.raises(FileNotFoundError, match="nowhere.keras"):
    emotion_inference.Classifier(str(tmp_path / "nowhere.keras"))
  with pytest.raises(ConfigError, match="neither a .keras file nor a SavedModel"):
    emotion_inference.Classifier(str(tmp_path))
  wrong = emotion_config.get_config("tiny")
  wrong.data.image_size = 20
  with pytest.raises(ValueError, match="resizes images to 16, but config.data.image_size is 20"):
    emotion_evaluation.evaluate(checkpoint, wrong, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_a_missing_split_is_a_data_error():
  images = LabelledImages(np.zeros((1, 4, 4, 1), np.uint8), np.zeros(1, int))
  data = emotion_data.EmotionData(images, images, None, "FER2013 CSV /data/fer2013.csv")
  with pytest.raises(DataError, match="/data/fer2013.csv has no test split"):
    emotion_evaluation.select_split(data, "test")
  assert emotion_evaluation.select_split(data, "validation") is images
