"""FER2013 readers: Kaggle folders and the original CSV, with bad input."""

import os

import numpy as np
import pytest
from conftest import write_fer_csv, write_image_tree

from common import labels
from input_pipeline import fer2013


def test_folder_reads_classes_case_insensitively(tmp_path):
  root = write_image_tree(
    tmp_path / "fer",
    per_class=2,
    size=10,
    class_names=[n.capitalize() for n in labels.EMOTION_CLASSES],
  )
  split = fer2013.read_image_folder(os.path.join(root, "train"), labels.EMOTION_CLASSES)
  assert split.images.shape == (14, 10, 10, 1) and split.images.dtype == np.uint8
  assert split.class_counts(7) == [2] * 7
  # Labels follow the folder names (Angry/ -> 0, ..., Surprise/ -> 6).
  np.testing.assert_array_equal(split.labels, np.repeat(np.arange(7), 2))


def test_folder_colour_and_mixed_sizes_are_stacked(tmp_path):
  root = write_image_tree(tmp_path / "a", per_class=1, size=10, mode="RGB", splits=("train",))
  # One odd-sized grayscale image among colour ones.
  from PIL import Image

  Image.fromarray(np.zeros((7, 9), np.uint8)).save(os.path.join(root, "train", "sad", "odd.png"))
  split = fer2013.read_image_folder(
    os.path.join(root, "train"), labels.EMOTION_CLASSES, image_size=12
  )
  assert split.images.shape == (8, 12, 12, 3)


def test_unknown_class_folder_is_an_error(tmp_path):
  root = write_image_tree(tmp_path / "fer", per_class=1)
  os.makedirs(os.path.join(root, "train", "contempt"))
  with pytest.raises(fer2013.DataError, match=r"Unknown class folder .*contempt"):
    fer2013.read_image_folder(os.path.join(root, "train"), labels.EMOTION_CLASSES)


def test_missing_and_empty_directories_are_errors(tmp_path):
  with pytest.raises(fer2013.DataError, match="does not exist"):
    fer2013.read_image_folder(str(tmp_path / "nope"), labels.EMOTION_CLASSES)
  os.makedirs(tmp_path / "empty" / "happy")
  with pytest.raises(fer2013.DataError, match="No images found in .*empty"):
    fer2013.read_image_folder(str(tmp_path / "empty"), labels.EMOTION_CLASSES)


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
  root = write_image_tree(tmp_path / "fer", per_class=2, splits=("train",))
  happy = os.path.join(root, "train", "happy")
  with open(os.path.join(happy, "corrupt.jpg"), "wb") as file:
    file.write(b"\xff\xd8\xff\xe0 definitely not a jpeg")
  with open(os.path.join(root, "train", "sad", "0.png"), "rb") as file:
    data = file.read()
  with open(os.path.join(root, "train", "sad", "truncated.png"), "wb") as file:
    file.write(data[: len(data) // 2])
  from absl import logging as absl_logging

  absl_logging.get_absl_logger().propagate = True
  with caplog.at_level("WARNING"):
    split = fer2013.read_image_folder(os.path.join(root, "train"), labels.EMOTION_CLASSES)
  assert len(split) == 14
  assert "skipped 2 of 16 files" in caplog.text
  assert "corrupt.jpg" in caplog.text and "truncated.png" in caplog.text


def _pixels(value, side=4):
  return [value] * side * side


def test_csv_maps_class_order_and_usage(tmp_path):
  # CSV order: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.
  rows = [(k, _pixels(10 * k), "Training") for k in range(7)]
  rows += [(4, _pixels(1), "PublicTest"), (6, _pixels(2), "PrivateTest")]
  splits = fer2013.read_fer2013_csv(write_fer_csv(tmp_path / "fer2013.csv", rows))
  train = splits["train"]
  assert train.images.shape == (7, 4, 4, 1)
  ours = [labels.EMOTION_CLASSES[i] for i in train.labels]
  assert ours == list(labels.FER2013_CSV_CLASSES)
  assert train.images[4, 0, 0, 0] == 40  # the csv's class 4 row...
  assert ours[4] == "sad"  # ...is our "sad" (index 5)
  assert labels.EMOTION_CLASSES[splits["validation"].labels[0]] == "sad"
  assert labels.EMOTION_CLASSES[splits["test"].labels[0]] == "neutral"


@pytest.mark.parametrize(
  "header,row,message",
  [
    ("emotion,pixels", "0,1 2 3 4", r"missing column\(s\) \['Usage'\]"),
    ("emotion,pixels,Usage", "0,1 2 3,Training", r"line 3: pixels has 3 values; expected 4"),
    (
      "emotion,pixels,Usage",
      "9,1 2 3 4,Training",
      r"line 3: emotion '9' is not an integer in 0..6",
    ),
    ("emotion,pixels,Usage", "0,1 2 3 400,Training", r"line 3: pixel values must be in 0..255"),
    ("emotion,pixels,Usage", "0,1 2 3 4,Validation", r"line 3: Usage 'Validation'"),
  ],
)
def test_bad_csv_rows_are_named(tmp_path, header, row, message):
  path = tmp_path / "fer2013.csv"
  good = "0,1 2 3 4,Training" if "Usage" in header else "0,1 2 3 4"
  path.write_text(f"{header}\n{good}\n{row}\n")
  with pytest.raises(fer2013.DataError, match=message):
    fer2013.read_fer2013_csv(str(path))
