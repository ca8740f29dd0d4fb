"""Every signature of both exports refuses a malformed request with a message naming the input."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from inference import export, video_scoring
from keras_models import deepfake

NUM_FRAMES, FRAME_SIZE = 2, 32
IMAGES = r"images: expected uint8 \[batch >= 1, height >= 1, width >= 1, channels 1 or 3\]"
BYTES = r"image_bytes: expected string \[batch >= 1\] of encoded image files"
CLIPS = r"clips: expected uint8 \[batch >= 1, 2 frames, height >= 1, width >= 1, 3 channels\]"
CLIP_BYTES = r"clip_bytes: expected string \[batch >= 1, 2 frames\] of encoded image files"
NOT_AN_IMAGE = r"image_bytes: not a JPEG, PNG, GIF, BMP or WebP file"


def _png(height=9, width=7, channels=3) -> bytes:
  pixels = np.full((height, width, channels), 90, np.uint8)
  return tf.io.encode_png(pixels).numpy()


def _tiff() -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, "TIFF")
  return buffer.getvalue()


def _snapshot(directory: str) -> dict[str, tuple[int, int]]:
  return {
    os.path.join(root, name): (
      os.stat(os.path.join(root, name)).st_size,
      os.stat(os.path.join(root, name)).st_mtime_ns,
    )
    for root, _, files in os.walk(directory)
    for name in files
  }


@pytest.fixture(scope="module")
def detector_export(tmp_path_factory):
  model = deepfake.build_deepfake_detector(
    num_frames=NUM_FRAMES, frame_size=FRAME_SIZE, lstm_units=8, attention_after="block3b_add"
  )
  return export.export_detector(model, str(tmp_path_factory.mktemp("deepfake") / "1"), FRAME_SIZE)


# (signature, input name, bad value, expected message pattern, what is wrong)
BAD_REQUESTS = [
  ("emotion", "serving_default", "images", np.zeros((8, 8, 3), np.uint8), IMAGES + r".*\[8 8 3\]"),
  ("emotion", "serving_default", "images", np.zeros((1, 1, 8, 8, 3), np.uint8), IMAGES),
  (
    "emotion",
    "serving_default",
    "images",
    np.zeros((1, 8, 8, 4), np.uint8),
    IMAGES + r".*\[1 8 8 4\]",
  ),
  ("emotion", "serving_default", "images", np.zeros((1, 8, 8, 2), np.uint8), IMAGES),
  (
    "emotion",
    "serving_default",
    "images",
    np.zeros((0, 8, 8, 3), np.uint8),
    IMAGES + r".*\[0 8 8 3\]",
  ),
  ("emotion", "serving_default", "images", np.zeros((1, 0, 8, 1), np.uint8), IMAGES),
  ("emotion", "serving_default", "images", np.zeros((2, 8, 0, 3), np.uint8), IMAGES),
  ("emotion", "serving_bytes", "image_bytes", np.array(_png(), object), BYTES + r".*\[\]"),
  ("emotion", "serving_bytes", "image_bytes", np.array([[_png()]], object), BYTES + r".*\[1 1\]"),
  ("emotion", "serving_bytes", "image_bytes", np.zeros((0,), object), BYTES + r".*\[0\]"),
  ("emotion", "serving_bytes", "image_bytes", np.array([b"not an image"], object), NOT_AN_IMAGE),
  ("emotion", "serving_bytes", "image_bytes", np.array([_png(), b""], object), NOT_AN_IMAGE),
  (
    "emotion",
    "serving_bytes",
    "image_bytes",
    np.array([_tiff()], object),
    NOT_AN_IMAGE + r".*\[73 73 42 0",
  ),
  (
    "emotion",
    "serving_bytes",
    "image_bytes",
    np.array([b"\xff\xd8 \x80"], object),
    NOT_AN_IMAGE + r".*\[255 216 32 128 0 0 0 0\]",
  ),
  (
    "deepfake",
    "serving_default",
    "clips",
    np.zeros((2, 32, 32, 3), np.uint8),
    CLIPS + r".*\[2 32 32 3\]",
  ),
  (
    "deepfake",
    "serving_default",
    "clips",
    np.zeros((1, 3, 32, 32, 3), np.uint8),
    CLIPS + r".*\[1 3 32 32 3\]",
  ),
  ("deepfake", "serving_default", "clips", np.zeros((1, 2, 32, 32, 1), np.uint8), CLIPS),
  (
    "deepfake",
    "serving_default",
    "clips",
    np.zeros((0, 2, 32, 32, 3), np.uint8),
    CLIPS + r".*\[0 2 32 32 3\]",
  ),
  ("deepfake", "serving_default", "clips", np.zeros((1, 2, 0, 32, 3), np.uint8), CLIPS),
  (
    "deepfake",
    "serving_bytes",
    "clip_bytes",
    np.array([_png(), _png()], object),
    CLIP_BYTES + r".*\[2\]",
  ),
  (
    "deepfake",
    "serving_bytes",
    "clip_bytes",
    np.array([[_png()] * 3], object),
    CLIP_BYTES + r".*\[1 3\]",
  ),
  ("deepfake", "serving_bytes", "clip_bytes", np.zeros((0, 2), object), CLIP_BYTES + r".*\[0 2\]"),
  (
    "deepfake",
    "serving_bytes",
    "clip_bytes",
    np.array([[_png(), b"not an image"]], object),
    r"clip_bytes: not a JPEG, PNG, GIF, BMP or WebP file",
  ),
]


@pytest.mark.parametrize(
  "task, signature, name, value, message",
  BAD_REQUESTS,
  ids=[f"{r[0]}-{r[2]}-{np.shape(r[3])}-{i}" for i, r in enumerate(BAD_REQUESTS)],
)
def test_bad_requests_are_refused_by_name(
  tiny_model, detector_export, task, signature, name, value, message
):
  directory = tiny_model[2] if task == "emotion" else detector_export
  before = _snapshot(directory)
  serve = tf.saved_model.load(directory).signatures[signature]
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    serve(**{name: tf.constant(value)})
  assert _snapshot(directory) == before  # serving writes nothing


def test_valid_requests_are_served_as_before(tiny_model, detector_export):
  loaded = tf.saved_model.load(tiny_model[2])
  serve, serve_bytes = loaded.signatures["serving_default"], loaded.signatures["serving_bytes"]
  for shape in ((2, 8, 8, 1), (1, 9, 7, 3)):
    out = serve(images=tf.zeros(shape, tf.uint8))
    assert out["probabilities"].shape == (shape[0], 7) and out["labels"].shape == (shape[0],)
  out = serve_bytes(image_bytes=tf.constant([_png(), _png(5, 11, 1)]))
  np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)
  clips = tf.zeros((3, NUM_FRAMES, 20, 24, 3), tf.uint8)
  out = tf.saved_model.load(detector_export).signatures["serving_default"](clips=clips)
  assert out["probability_fake"].shape == (3,)
  assert out["temporal_attention"].shape == (3, NUM_FRAMES)
  # Tools read the frame count from the export (its input is of unknown rank).
  assert video_scoring.ClipScorer(detector_export).num_frames == NUM_FRAMES


def test_detector_serves_encoded_face_crops_as_it_serves_their_pixels(detector_export):
  """`serving_bytes` decodes each crop (any size) and resizes it as `serving_default` does."""
  rng = np.random.default_rng(0)
  crops = rng.integers(0, 256, (2, NUM_FRAMES, 40, 36, 3), np.uint8)  # PNG: lossless
  encoded = [[tf.io.encode_png(frame).numpy() for frame in clip] for clip in crops]
  signatures = tf.saved_model.load(detector_export).signatures
  from_pixels = signatures["serving_default"](clips=tf.constant(crops))
  from_files = signatures["serving_bytes"](clip_bytes=tf.constant(encoded))
  assert from_files.keys() == from_pixels.keys()
  for key, expected in from_pixels.items():
    np.testing.assert_allclose(from_files[key].numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
  # Crops of different sizes in one request, JPEG among them.
  mixed = [[_png(20, 30), tf.io.encode_jpeg(crops[0, 1]).numpy()]]
  out = signatures["serving_bytes"](clip_bytes=tf.constant(mixed))
  assert out["probability_fake"].shape == (1,)
  assert 0.0 <= float(out["probability_fake"][0]) <= 1.0
