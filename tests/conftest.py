"""Shared fixtures: tiny data sets generated on the fly."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import tf_environment

# As the entry points run: oneDNN kernels, quiet start-up.
tf_environment.set_defaults(log_level="2")

import cv2
import numpy as np
import pytest
from PIL import Image

from common import labels
from keras_models import emotion as emotion_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_image_tree(
  root,
  per_class=3,
  size=12,
  class_names=labels.EMOTION_CLASSES,
  splits=("train", "test"),
  mode="L",
  seed=0,
):
  """Writes `root/<split>/<class>/<n>.png` with random images; returns root."""
  rng = np.random.default_rng(seed)
  channels = 1 if mode == "L" else 3
  for split in splits:
    for name in class_names:
      folder = os.path.join(root, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(per_class):
        pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(
          os.path.join(folder, f"{i}.png")
        )
  return str(root)


def write_fer_csv(path, rows):
  """Writes a fer2013.csv from (emotion, pixel list or string, usage) rows."""
  with open(path, "w") as file:
    file.write("emotion,pixels,Usage\n")
    for emotion, pixels, usage in rows:
      text = pixels if isinstance(pixels, str) else " ".join(map(str, pixels))
      file.write(f"{emotion},{text},{usage}\n")
  return str(path)


@pytest.fixture
def image_tree(tmp_path):
  return write_image_tree(tmp_path / "fer")


def write_video(path: str, num_frames: int, size=(64, 48), fps: float = 10.0) -> str:
  """An mp4 (or avi) whose frame i is uniformly grey at level 12 * i."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  codec = "mp4v" if path.endswith(".mp4") else "MJPG"
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, size)
  assert writer.isOpened()
  for i in range(num_frames):
    writer.write(np.full((size[1], size[0], 3), (12 * i) % 256, np.uint8))
  writer.release()
  return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
  """(config, .keras checkpoint, SavedModel export) of an untrained tiny emotion model."""
  from common import io_utils
  from configs import emotion as emotion_config
  from inference.export import export_image_classifier

  config = emotion_config.get_config("tiny")
  model = emotion_model.build_model(config)
  root = tmp_path_factory.mktemp("model")
  checkpoint = str(root / "best.keras")
  io_utils.save_model(model, checkpoint)
  export = export_image_classifier(
    model, str(root / "export" / "1"), config.data.class_names, config.data.image_size
  )
  return config, checkpoint, export


def write_drawn_video(path: str, scenes, size=(160, 120), fps: float = 10.0) -> str:
  """An mp4 of black frames with grey squares: `scenes[i]` lists frame i's (x, y, side, level).

  Squares are drawn in list order, so a later square hides an earlier one.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
  assert writer.isOpened()
  for squares in scenes:
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    for x, y, side, level in squares:
      frame[int(y) : int(y) + side, int(x) : int(x) + side] = level
    writer.write(frame)
  writer.release()
  return path


class SquareDetector:
  """A stand-in for MTCNN on drawn videos: every grey square of a listed level is a "face".

  Pixels within 25 levels of a listed level form components; a component is a
  face when it is at least 8 px wide, about square and fills its box (a
  square half hidden by another is not detected, as a covered face is not).
  Confidence is the level / 255, so brighter squares are "more confident".
  """

  def __init__(self, levels=(90, 150, 230)):
    self.levels = levels

  def detect_all(self, images):
    from input_pipeline.face_detection import Face

    results = []
    for image in images:
      gray = image.mean(axis=-1)
      faces = []
      for level in self.levels:
        mask = (np.abs(gray - level) <= 25).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        for x, y, w, h, area in stats[1:count]:
          if min(w, h) >= 8 and 0.8 <= w / h <= 1.25 and area >= 0.8 * w * h:
            faces.append(Face((float(x), float(y), float(w), float(h)), level / 255))
      results.append(sorted(faces, key=lambda face: -face.confidence))
    return results
