"""Emotion predictions on photos (inference.emotion_inference) and Grad-CAM (inference.grad_cam).

Generated images hold no real faces, so a fake detector "finds" listed boxes;
MTCNN itself runs only on real FaceForensics++ frames, when
`../shared/data/ffpp_sample` is present.
"""

import csv
import json
import os

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from common.errors import ConfigError
from common.labels import EMOTION_CLASSES
from inference import emotion_inference, grad_cam, model_io
from input_pipeline import face_detection
from input_pipeline.face_detection import CropSettings, Face

FFPP_VIDEO = os.path.join(
  REPO_ROOT, "..", "shared", "data", "ffpp_sample", "original_sequences", "youtube", "c23",
  "videos", "004.mp4",
)  # fmt: skip
CROP = CropSettings("scale", scale=1.3, size=32)
TWO_FACES = [Face((4.0, 6.0, 20.0, 24.0), 0.99), Face((50.0, 10.0, 30.0, 30.0), 0.95)]


class FakeDetector:
  """Returns the faces listed for an image's (height, width); none for other sizes."""

  def __init__(self, faces_by_size):
    self.faces_by_size = faces_by_size
    self.calls = 0

  def detect_all(self, images):
    self.calls += 1
    return [list(self.faces_by_size.get(image.shape[:2], [])) for image in images]


@pytest.fixture(scope="module")
def classifier(tiny_model):
  return emotion_inference.Classifier(tiny_model[1])


@pytest.fixture
def photos(tmp_path):
  """photos/two.png (64x96, two faces), photos/sub/none.png (40x40, none), photos/broken.jpg."""
  rng = np.random.default_rng(0)
  root = tmp_path / "photos"
  (root / "sub").mkdir(parents=True)
  Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(root / "two.png")
  Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "sub/none.png")
  (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
  return root


def test_rows_statuses_boxes_and_annotated_images(photos, classifier, tmp_path):
  items = emotion_inference.expand_images([str(photos)])
  assert [item.name for item in items] == ["photos/broken", "photos/two", "photos/sub/none"]
  output = str(tmp_path / "out")
  detector = FakeDetector({(64, 96): TWO_FACES})
  rows = emotion_inference.predict_images(
    items, classifier, detector, CROP, EMOTION_CLASSES, output, batch_size=1
  )
  assert [(r["image"], r["face"], r["status"]) for r in rows] == [
    (str(photos / "broken.jpg"), None, "unreadable"),
    (str(photos / "two.png"), 0, "ok"),
    (str(photos / "two.png"), 1, "ok"),
    (str(photos / "sub" / "none.png"), None, "no_face"),
  ]
  assert emotion_inference.image_status_counts(rows) == {"ok": 1, "no_face": 1, "unreadable": 1}
  for row, face in zip(rows[1:3], TWO_FACES, strict=True):
    assert (row["x"], row["y"], row["width"], row["height"]) == face.box
    assert row["confidence"] == pytest.approx(face.confidence)
    p = np.array([row[f"p_{name}"] for name in EMOTION_CLASSES])
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    assert row["emotion"] == EMOTION_CLASSES[int(p.argmax())] and row["probability"] == p.max()
  for row in (rows[0], rows[3]):
    assert row["emotion"] is None and row["x"] is None and row["p_happy"] is None

  # The probabilities are the model's on the grayscale crops of the boxes.
  image = np.asarray(Image.open(photos / "two.png"))
  crops = [
    emotion_inference.to_grayscale(face_detection.crop_face(image, f.box, CROP)) for f in TWO_FACES
  ]
  expected = classifier(np.stack(crops))
  got = np.array([[row[f"p_{name}"] for name in EMOTION_CLASSES] for row in rows[1:3]])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

  annotated = os.path.join(output, "annotated", "photos")
  assert sorted(os.listdir(annotated)) == ["sub", "two.jpg"]  # None for the broken file.
  two = np.asarray(Image.open(os.path.join(annotated, "two.jpg")))
  assert two.shape == (64, 96, 3)
  assert np.asarray(Image.open(os.path.join(annotated, "sub", "none.jpg"))).shape == (40, 40, 3)
  edge = two[10:28, 4].astype(float).mean(axis=0)  # The left side of the first box: green.
  assert edge[1] > 150 and edge[0] < 100 and edge[2] < 100

  metadata = {"model": classifier.path}
  emotion_inference.write_rows(output, rows, metadata)
  with open(os.path.join(output, "predictions.json")) as file:
    assert json.load(file) == {**metadata, "faces": rows}
  with open(os.path.join(output, "predictions.csv")) as file:
    table = list(csv.DictReader(file))
  assert list(table[0])[:10] == [
    "image", "face", "status", "x", "y", "width", "height", "confidence", "emotion", "probability",
  ]  # fmt: skip
  assert list(table[0])[10:] == [f"p_{name}" for name in EMOTION_CLASSES]
  assert table[0]["status"] == "unreadable" and table[0]["face"] == "" and table[0]["x"] == ""
  assert float(table[1]["p_happy"]) == pytest.approx(rows[1]["p_happy"])


def test_without_face_detection_each_image_is_one_face(photos, classifier, tmp_path):
  items = emotion_inference.expand_images([str(photos / "two.png"), str(photos / "sub")])
  assert [item.name for item in items] == ["two", "sub/none"]
  rows = emotion_inference.predict_images(
    items, classifier, None, CROP, EMOTION_CLASSES, str(tmp_path), grayscale=False
  )
  assert [(r["face"], r["status"], r["confidence"]) for r in rows] == [(0, "ok", None)] * 2
  assert [(r["x"], r["y"], r["width"], r["height"]) for r in rows] == [
    (0, 0, 96, 64),
    (0, 0, 40, 40),
  ]
  whole = np.asarray(Image.open(photos / "two.png"))[None]
  assert rows[0]["p_sad"] == pytest.approx(classifier(whole)[0, EMOTION_CLASSES.index("sad")])
  assert os.path.isfile(tmp_path / "annotated" / "sub" / "none.jpg")


def test_tight_crops_of_different_sizes_are_batched_by_size(classifier):
  rng = np.random.default_rng(1)
  crops = [
    rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(20, 16, 3), (9, 30, 3), (20, 16, 3)]
  ]
  assert face_detection.batches_by_shape(crops, 8) == [[0, 2], [1]]
  probabilities = emotion_inference.classify_crops(classifier, crops, batch_size=8)
  one_by_one = np.concatenate([classifier(crop[None]) for crop in crops])
  np.testing.assert_allclose(probabilities, one_by_one, rtol=1e-5, atol=1e-6)


def test_checkpoint_and_export_give_the_same_probabilities(tiny_model, classifier):
  exported = emotion_inference.Classifier(tiny_model[2])
  assert exported.format == "saved_model" and classifier.format == "keras"
  images = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  np.testing.assert_allclose(exported(images), classifier(images), rtol=1e-5, atol=1e-6)


def test_image_lists_are_checked(photos, tmp_path):
  (tmp_path / "other").mkdir()
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "other" / "two.jpg")
  with pytest.raises(ValueError, match="would both write outputs named 'two'"):
    emotion_inference.expand_images([str(photos / "two.png"), str(tmp_path / "other" / "two.jpg")])
  with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
    emotion_inference.expand_images([str(tmp_path / "nowhere.jpg")])
  with pytest.raises(ValueError, match="outputs 3 classes; expected 7"):
    emotion_inference.prediction_rows([], np.zeros([1, 3]), EMOTION_CLASSES)


def test_grad_cam_on_the_emotion_model(tiny_model, classifier):
  model = model_io.load_checkpoint_flag(tiny_model[1])
  assert grad_cam.default_layer(model) == "stage4_block2_out"
  images = np.random.default_rng(3).integers(0, 256, (3, 40, 32, 3), dtype=np.uint8)
  heatmaps, probabilities = grad_cam.grad_cam(model, images, None)
  assert heatmaps.shape == (3, 40, 32) and heatmaps.dtype == np.float32
  assert np.all(np.isfinite(heatmaps)) and heatmaps.min() >= 0 and heatmaps.max() <= 1
  np.testing.assert_allclose(probabilities, classifier(images), rtol=1e-5, atol=1e-6)
  heatmaps, _ = grad_cam.grad_cam(model, images, 3, layer_name="stage3_block1_conv1")
  assert heatmaps.shape == (3, 40, 32) and np.all((heatmaps >= 0) & (heatmaps <= 1))


def known_answer_model(with_logits=True):
  """8x8x2 images -> 2x2-mean 'features' (4x4x2) -> class 0 = top-left of channel 0 minus
  all of channel 1; class 1 = bottom-right of channel 1. Grad-CAM must point there."""
  inputs = keras.Input((8, 8, 2), name="images")
  kernel = np.zeros((2, 2, 2, 2), np.float32)
  kernel[:, :, 0, 0] = kernel[:, :, 1, 1] = 0.25
  conv = keras.layers.Conv2D(2, 2, strides=2, use_bias=False, name="features")
  features = conv(inputs)
  conv.set_weights([kernel])
  dense = keras.layers.Dense(2, name="logits" if with_logits else "scores")
  scores = dense(keras.layers.Flatten(name="flatten")(features))
  weights = np.zeros((4, 4, 2, 2), np.float32)  # (row, column, channel, class)
  weights[:2, :2, 0, 0] = 1.0
  weights[:, :, 1, 0] = -0.5
  weights[2:, 2:, 1, 1] = 1.0
  dense.set_weights([weights.reshape(32, 2), np.zeros(2, np.float32)])
  outputs = keras.layers.Activation("softmax", name="probabilities")(scores)
  return keras.Model(inputs, outputs)


@pytest.mark.parametrize("with_logits", [True, False])
def test_grad_cam_points_at_the_region_that_drives_the_class(with_logits):
  images = np.zeros((1, 8, 8, 2), np.uint8)
  images[0, :2, :2, 0] = 9  # channel 0 active in the top-left feature cell only
  images[0, 6:, 6:, 1] = 3  # channel 1 active in the bottom-right feature cell only
  model = known_answer_model(with_logits)
  heatmaps, probabilities = grad_cam.grad_cam(model, images, None, "features")
  assert probabilities.argmax() == 0  # 9 - 0.5 * 3 > 3
  # Bilinear upsampling spreads the 4x4 map's corner cell over the top-left 3x3 pixels.
  assert heatmaps[0, 0, 0] == pytest.approx(1.0) and heatmaps[0, :3, :3].min() > 0.05
  assert np.all(heatmaps[0, 3:, :] == 0) and np.all(heatmaps[0, :, 3:] == 0)  # Channel 1 is
  # active only bottom-right, where its negative weight for class 0 must cancel it.
  heatmaps, probabilities = grad_cam.grad_cam(model, images, 1, "features")
  assert heatmaps[0, 7, 7] == pytest.approx(1.0) and heatmaps[0, 5:, 5:].min() > 0.05
  assert np.all(heatmaps[0, :5, :] == 0) and np.all(heatmaps[0, :, :5] == 0)
  # A channel is weighted as a whole (spatial mean of its gradients): channel 0 active
  # top-right too, where class 0 does not look, lights up as much as top-left.
  images[0, :2, 6:, 0] = 9
  heatmaps, _ = grad_cam.grad_cam(model, images, 0, "features")
  assert heatmaps[0, 0, 0] == pytest.approx(1.0) and heatmaps[0, 0, 7] == pytest.approx(1.0)


def test_grad_cam_errors_are_clear(tiny_model):
  model = model_io.load_checkpoint_flag(tiny_model[1])
  listing = r"Convolution layers: stem_conv, .*, stage4_block2_conv2; default .*: stage4_block2_out"
  with pytest.raises(ConfigError, match=rf"no layer 'conv9'\. {listing}"):
    grad_cam.build_grad_model(model, "conv9")
  with pytest.raises(ConfigError, match="no \\[b, h, w, c\\] feature map at layer 'avg_pool'"):
    grad_cam.build_grad_model(model, "avg_pool")
  with pytest.raises(ConfigError, match="is a SavedModel export.*checkpoints/best.keras"):
    model_io.load_checkpoint_flag(tiny_model[2])
  with pytest.raises(ValueError, match="class_index=7; the model has 7 classes"):
    grad_cam.grad_cam(model, np.zeros((1, 16, 16, 3), np.uint8), 7)


def test_tools_that_need_the_keras_model_name_what_they_were_given(tiny_model, tmp_path):
  weights = tmp_path / "model.weights.h5"
  weights.write_bytes(b"")
  with pytest.raises(FileNotFoundError, match=r"--model='nowhere.keras' does not exist"):
    model_io.load_checkpoint_flag("nowhere.keras")
  with pytest.raises(ConfigError, match=r"--model=.*model.weights.h5' is not a .keras checkpoint"):
    model_io.load_checkpoint_flag(str(weights))
  with pytest.raises(ConfigError, match=r"--model=.*' is not a .keras checkpoint"):
    model_io.load_checkpoint_flag(str(tmp_path))
  assert model_io.load_checkpoint_flag(tiny_model[1]).name == "emotion_classifier"


def test_explain_images_writes_one_figure_per_face(photos, tiny_model, tmp_path):
  model = model_io.load_checkpoint_flag(tiny_model[1])
  items = emotion_inference.expand_images([str(photos)])
  detector = FakeDetector({(64, 96): TWO_FACES})
  rows = grad_cam.explain_images(
    items, model, detector, CROP, EMOTION_CLASSES, str(tmp_path / "out"), class_name="happy"
  )
  assert [(r["face"], r["class"]) for r in rows] == [(0, "happy"), (1, "happy")]
  written = sorted(os.listdir(tmp_path / "out" / "photos"))
  assert written == ["two_face0_gradcam.png", "two_face1_gradcam.png"]
  with pytest.raises(ConfigError, match="--class_name='calm'"):
    grad_cam.explain_images(items, model, detector, CROP, EMOTION_CLASSES, str(tmp_path), "calm")


@pytest.mark.skipif(not os.path.isfile(FFPP_VIDEO), reason="../shared/data/ffpp_sample absent")
def test_mtcnn_finds_the_presenter_in_real_frames(classifier, tmp_path):
  from input_pipeline import video_io

  frames, _ = video_io.read_frames(FFPP_VIDEO, 2)
  for k, frame in enumerate(frames):
    Image.fromarray(frame).save(tmp_path / f"frame{k}.jpg")
  items = emotion_inference.expand_images(
    [str(tmp_path / "frame0.jpg"), str(tmp_path / "frame1.jpg")]
  )
  detector = face_detection.FaceDetector(face_detection.DetectorSettings(max_side=640))
  rows = emotion_inference.predict_images(
    items, classifier, detector, CROP, EMOTION_CLASSES, str(tmp_path / "out")
  )
  assert [(r["face"], r["status"]) for r in rows] == [(0, "ok"), (0, "ok")]
  for row in rows:  # The presenter's face: right of centre, in the upper half of 1280x720.
    assert 600 < row["x"] < 900 and 50 < row["y"] < 250 and 80 < row["width"] < 250
    assert row["confidence"] > 0.9


def test_both_commands_import_without_defining_flags():
  from absl import flags

  from tools import grad_cam as grad_cam_command
  from tools import predict_emotion

  assert callable(grad_cam_command.main) and callable(predict_emotion.main)
  assert "no_face_detection" not in flags.FLAGS  # Defined only under __main__.
