"""Source selection, validation carving and the tf.data pipeline."""

import os

import ml_collections
import numpy as np
import pytest
from conftest import write_fer_csv, write_image_tree

from common.errors import DataError
from configs import emotion as emotion_config
from input_pipeline import emotion_data
from input_pipeline.fer2013 import LabelledImages


def _data_config(**overrides):
  config = emotion_config.get_config("tiny")
  config.data.update(overrides)
  return config


def test_auto_falls_back_to_synthetic_only_for_the_default_dir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no data/fer2013 here
  config = _data_config(source="auto", dir=emotion_data.DEFAULT_FER2013_DIR)
  assert emotion_data.resolve_source(config.data, emotion_data.DEFAULT_FER2013_DIR) == (
    "synthetic",
    "",
  )
  config = _data_config(source="auto", dir=str(tmp_path / "mine"))
  with pytest.raises(DataError, match="mine' does not exist"):
    emotion_data.resolve_source(config.data, emotion_data.DEFAULT_FER2013_DIR)


def test_auto_detects_folders_and_csv(tmp_path):
  root = write_image_tree(tmp_path / "folders", per_class=1)
  config = _data_config(source="auto", dir=root)
  assert emotion_data.resolve_source(config.data, "x") == ("folder", root)
  csv_dir = tmp_path / "csv"
  csv_dir.mkdir()
  csv = write_fer_csv(csv_dir / "fer2013.csv", [(0, [1] * 4, "Training")])
  for given in (str(csv_dir), csv):
    config = _data_config(source="auto", dir=given)
    assert emotion_data.resolve_source(config.data, "x") == ("csv", csv)
  config = _data_config(source="folder", dir=str(csv_dir))
  with pytest.raises(DataError, match="holds no FER2013 for source 'folder'"):
    emotion_data.resolve_source(config.data, "x")


def test_unknown_source_is_an_error():
  with pytest.raises(DataError, match="config.data.source='kaggle'"):
    emotion_data.resolve_source(_data_config(source="kaggle").data, "x")


def test_carved_validation_is_stratified_and_seeded():
  labels = np.repeat(np.arange(7), [40, 10, 40, 60, 40, 40, 30]).astype(np.int32)
  split = LabelledImages(np.arange(len(labels), dtype=np.uint8)[:, None, None, None], labels)
  train, validation = emotion_data.carve_validation(split, 0.1, seed=0)
  assert len(train) + len(validation) == len(split)
  assert np.bincount(validation.labels).tolist() == [4, 1, 4, 6, 4, 4, 3]
  _, again = emotion_data.carve_validation(split, 0.1, seed=0)
  _, other = emotion_data.carve_validation(split, 0.1, seed=1)
  np.testing.assert_array_equal(validation.images, again.images)
  assert not np.array_equal(validation.images, other.images)


def test_load_folder_carves_validation_and_keeps_test(tmp_path):
  root = write_image_tree(tmp_path / "fer", per_class=10)
  config = _data_config(source="folder", dir=root, validation_fraction=0.2)
  data = emotion_data.load(config, "x")
  assert (len(data.train), len(data.validation), len(data.test)) == (56, 14, 70)
  assert data.validation.class_counts(7) == [2] * 7


def test_load_csv_splits(tmp_path):
  rows = [
    (k % 7, [k] * 9, usage)
    for usage in ("Training", "PublicTest", "PrivateTest")
    for k in range(14)
  ]
  config = _data_config(source="csv", dir=write_fer_csv(tmp_path / "f.csv", rows))
  data = emotion_data.load(config, "x")
  assert (len(data.train), len(data.validation), len(data.test)) == (14, 14, 14)
  assert data.train.images.shape[1:] == (3, 3, 1)


def test_dataset_makes_rgb_uint8_and_one_hot():
  images = np.random.default_rng(0).integers(0, 256, (10, 6, 6, 1), dtype=np.uint8)
  split = LabelledImages(images, np.arange(10, dtype=np.int32) % 7)
  train = list(emotion_data.make_dataset(split, 4, 7, training=True, seed=0))
  assert len(train) == 2  # the partial batch is dropped
  batch_images, batch_labels = train[0]
  assert batch_images.shape == (4, 6, 6, 3) and batch_images.dtype == "uint8"
  assert batch_labels.shape == (4, 7)
  np.testing.assert_array_equal(batch_labels.numpy().sum(-1), 1)
  evaluation = list(emotion_data.make_dataset(split, 4, 7, training=False, seed=0))
  assert [len(b[0]) for b in evaluation] == [4, 4, 2]
  np.testing.assert_array_equal(evaluation[0][0].numpy()[..., 1], images[:4, ..., 0])


def test_config_is_ml_collections():
  assert isinstance(emotion_config.get_config(), ml_collections.ConfigDict)
  assert os.path.basename(emotion_data.DEFAULT_FER2013_DIR) == "fer2013"
