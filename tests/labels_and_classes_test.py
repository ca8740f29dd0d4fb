"""Empty classes and repeated labels-CSV rows: errors naming the place, or warnings with counts."""

import os
import shutil

import numpy as np
import pytest
from absl import logging as absl_logging
from conftest import write_fer_csv, write_image_tree
from PIL import Image

from common import labels
from common.errors import DataError
from configs import deepfake as deepfake_config
from configs import emotion as emotion_config
from input_pipeline import deepfake_data, emotion_data, fer2013, video_datasets
from tools import write_tfrecords


@pytest.fixture(autouse=True)
def _absl_to_caplog():
  absl_logging.get_absl_logger().propagate = True


def _files(root) -> dict[str, float]:
  return {
    os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
    for d, _, names in os.walk(root)
    for f in names
  }


@pytest.mark.parametrize("how", ["empty folder", "no folder", "only non-images", "undecodable"])
def test_a_training_class_without_images_is_an_error(tmp_path, how):
  root = write_image_tree(tmp_path / "fer", per_class=2, size=8)
  disgust = os.path.join(root, "train", "disgust")
  shutil.rmtree(disgust)
  if how != "no folder":
    os.makedirs(disgust)
  if how == "only non-images":
    open(os.path.join(disgust, "notes.txt"), "w").close()
  if how == "undecodable":
    with open(os.path.join(disgust, "0.png"), "wb") as file:
      file.write(b"\x89PNG\r\n\x1a\n broken")
  before = _files(root)
  with pytest.raises(DataError, match=r"train: no training image of class\(es\) \['disgust'\]"):
    fer2013.read_image_folder(os.path.join(root, "train"), labels.EMOTION_CLASSES)
  config = emotion_config.get_config("tiny")
  config.data.source, config.data.dir = "folder", root
  with pytest.raises(DataError, match=r"images per class: angry 2, disgust 0, fear 2"):
    emotion_data.load(config, "x")
  output = tmp_path / "shards"
  with pytest.raises(DataError, match=r"no training image of class\(es\) \['disgust'\]"):
    write_tfrecords.write_tfrecords(config, str(output))
  assert not output.exists() and not os.path.exists(f"{output}.partial")
  assert _files(root) == before


def test_a_test_class_without_images_is_a_warning_with_the_counts(tmp_path, caplog):
  root = write_image_tree(tmp_path / "fer", per_class=2, size=8)
  shutil.rmtree(os.path.join(root, "test", "fear"))
  with caplog.at_level("WARNING"):
    split = fer2013.read_image_folder(
      os.path.join(root, "test"), labels.EMOTION_CLASSES, split="test"
    )
  assert len(split) == 12
  assert "no test image of class(es) ['fear']" in caplog.text
  assert "images per class: angry 2, disgust 2, fear 0" in caplog.text


def test_fer2013_csv_without_a_training_class_is_an_error(tmp_path, caplog):
  rows = [(k, [k] * 4, "Training") for k in range(6)]  # no CSV class 6, our neutral
  rows += [(k, [k] * 4, "PublicTest") for k in range(7)] + [(0, [1] * 4, "PrivateTest")]
  with pytest.raises(
    DataError, match=r"Usage Training\): no training image of class\(es\) \['neutral'\]"
  ):
    fer2013.read_fer2013_csv(write_fer_csv(tmp_path / "a.csv", rows))
  rows = [(k, [k] * 4, "Training") for k in range(7)] + [(0, [1] * 4, "PrivateTest")]
  with caplog.at_level("WARNING"):
    splits = fer2013.read_fer2013_csv(write_fer_csv(tmp_path / "b.csv", rows))
  assert len(splits["test"]) == 1 and "no test image of class(es)" in caplog.text


def _frames(root, video, count=2):
  folder = os.path.join(root, video)
  os.makedirs(folder, exist_ok=True)
  for i in range(count):
    Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(os.path.join(folder, f"{i}.png"))


def _labels_csv(tmp_path, lines):
  for video in {line.split(",")[0] for line in lines}:
    _frames(tmp_path, video)
  path = tmp_path / "labels.csv"
  path.write_text("video,label,group,split\n" + "\n".join(lines) + "\n")
  return str(path)


@pytest.mark.parametrize(
  "lines, message",
  [
    (
      ["a,REAL,a,", "b,FAKE,b,", "a,FAKE,a,"],
      r"lines 2 and 4: video 'a' is listed twice .*label 'REAL' vs 'FAKE'",
    ),
    (["a,0,a,train", "a,0,a,test"], r"lines 2 and 3: video 'a' .*split 'train' vs 'test'"),
    (["a,1,g1,", "b,1,b,", "a/,1,g2,"], r"lines 2 and 4: video 'a/' .*group 'g1' vs 'g2'"),
  ],
)
def test_conflicting_rows_of_one_video_are_an_error_naming_both_lines(tmp_path, lines, message):
  path = _labels_csv(tmp_path, lines)
  before = open(path).read()
  with pytest.raises(DataError, match=message):
    deepfake_data.read_labels_csv(path)
  assert open(path).read() == before


def test_identical_repeated_rows_are_kept_once_with_a_warning(tmp_path, caplog):
  path = _labels_csv(tmp_path, ["a,REAL,a,", "b,FAKE,b,", "a,0,a,", "b,FAKE,b,"])
  with caplog.at_level("WARNING"):
    videos = deepfake_data.read_labels_csv(path)
  assert videos.names == ["a", "b"] and videos.labels.tolist() == [0, 1]
  assert "2 repeated row(s) identical to an earlier one ignored, e.g. lines 2 and 4" in caplog.text
  # Line numbers of later errors still count every row of the file.
  with open(path, "a") as file:
    file.write("c,maybe,c,\n")
  _frames(tmp_path, "c")
  with pytest.raises(DataError, match="line 6: label 'maybe'"):
    deepfake_data.read_labels_csv(path)


def test_video_csvs_of_prepare_faces_refuse_conflicting_rows(tmp_path):
  for name in ("x.mp4", "y.mp4"):
    (tmp_path / name).write_bytes(b"")
  generic = tmp_path / "videos.csv"
  generic.write_text("path,label\nx.mp4,REAL\ny.mp4,FAKE\nx.mp4,FAKE\n")
  with pytest.raises(DataError, match=r"videos.csv, lines 2 and 4: path 'x.mp4'"):
    video_datasets.generic_csv(str(generic))
  dfdc = tmp_path / "dfdc" / "labels.csv"
  dfdc.parent.mkdir()
  dfdc.write_text("filename,label\nx.mp4,1\nx.mp4,0\n")
  with pytest.raises(DataError, match=r"lines 2 and 3: filename 'x.mp4' .*label"):
    video_datasets.dfdc(str(tmp_path / "dfdc"))


def test_a_deepfake_training_split_without_fakes_is_an_error(tmp_path):
  lines = ["r1,REAL,r1,train", "r2,REAL,r2,train", "f1,FAKE,f1,validation", "r3,REAL,r3,validation"]
  config = deepfake_config.get_config("tiny")
  config.data.source, config.data.labels_csv = "csv", _labels_csv(tmp_path, lines)
  config.data.subset_fraction = 1.0
  with pytest.raises(
    DataError, match=r"\(train videos, .*no training image of class\(es\) \['fake'\]"
  ):
    deepfake_data.load(config)
