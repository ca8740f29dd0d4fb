"""Emotion predictions for photos: model loading, face crops, result rows, annotations.

The emotion model was trained on face crops (FER2013: grayscale faces filling
the frame), so a photo is not classified whole: its faces are found
(`face_detection.FaceDetector.detect_all`), cropped by the crop policy and
classified; with no detector each image is taken as one face crop already.
Images are handled in chunks, so a folder of thousands of photos never needs
to be held in memory at once.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import cv2
import numpy as np
import tensorflow as tf
from absl import logging

from common import io_utils, model_metadata
from common.errors import ConfigError, DataError
from inference import model_io, tflite
from input_pipeline import images
from input_pipeline.face_detection import CropSettings, Face, batches_by_shape, crop_face
from input_pipeline.fer2013 import IMAGE_EXTENSIONS
from keras_models import augment

SERVING_SIGNATURE = "serving_default"  # As `inference.export.export_image_classifier` names it.
STATUSES = ("ok", "no_face", "unreadable")
PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_JSON = "predictions.json"
ANNOTATED_DIR = "annotated"
BOX_COLOUR = (0, 255, 0)  # RGB.
JPEG_QUALITY = 92


class Classifier:
  """uint8 images -> class probabilities, from a `.keras` file, a SavedModel or a `.tflite` file.

  The one loader of the emotion tools. All take uint8 `[batch, height, width,
  3]` and do their own normalisation, so they are fed the same batches; the
  `.keras` and SavedModel formats resize inside, a `.tflite` model (fixed
  input size) gets images resized as the SavedModel's `serving_bytes` does.

  Args:
    path: the model file or directory.
    num_threads: CPU threads of the TFLite interpreter (others: TensorFlow's).
  """

  def __init__(self, path: str, num_threads: int | None = 1):
    if not os.path.exists(path):
      raise FileNotFoundError(f"--model={path!r} does not exist.")
    self.path = path
    # Class names stored with the model (`common.model_metadata`; TFLite
    # metadata), else None (a model saved before they were stored).
    self.class_names: list[str] | None = model_metadata.class_names(path)
    if os.path.isfile(path) and path.endswith(".keras"):
      self.format = "keras"
      self.model = model_io.load_checkpoint(path)
      # One trace for every image size and batch (a plain `model.predict`
      # retraces for each new shape).
      self._call = tf.function(
        lambda images: self.model(images, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
      )
    elif os.path.isdir(path) and tf.saved_model.contains_saved_model(path):
      self.format = "saved_model"
      self.model = tf.saved_model.load(path)  # Kept: the signature needs its variables.
      if SERVING_SIGNATURE not in self.model.signatures:
        raise ConfigError(
          f"SavedModel {path} has no {SERVING_SIGNATURE!r} signature; it has "
          f"{sorted(self.model.signatures)}. Expected an export of the emotion model."
        )
      self.signature = self.model.signatures[SERVING_SIGNATURE]
      inputs = self.signature.structured_input_signature[1]
      if set(inputs) != {"images"}:
        raise ConfigError(
          f"SavedModel {path}: {SERVING_SIGNATURE!r} takes {sorted(inputs)}; expected "
          "'images' (uint8 [batch, height, width, channels]), as the emotion export has."
        )
      self._call = lambda images: self.signature(images=images)["probabilities"]
    elif os.path.isfile(path) and path.endswith(".tflite"):
      self.format = "tflite"
      self.model = tflite.TFLiteModel(path, num_threads=num_threads)
      self.class_names = self.model.class_names
      self._call = lambda images: self.model(np.asarray(images))
    else:
      raise ConfigError(
        f"--model={path!r} is neither a .keras file nor a SavedModel directory (one holding "
        "saved_model.pb, e.g. runs/<name>/export/1) nor a .tflite file (tools.export_tflite)."
      )

  def input_size(self) -> int | None:
    """The side the model resizes images to, when it can be read (Keras and TFLite)."""
    if self.format == "tflite":
      return self.model.image_size
    if self.format != "keras":
      return None
    for layer in self.model.layers:
      if isinstance(layer, augment.ImagePreprocessor):
        return layer.image_size
    return None

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """Probabilities `[b, classes]` (float64) of uint8 images `[b, h, w, 3]` of one size."""
    return np.asarray(self._call(tf.constant(images, tf.uint8)), np.float64)

  def predict(self, images: tf.data.Dataset) -> np.ndarray:
    """Probabilities `[n, classes]` (float64) for a dataset of uint8 image batches."""
    if self.format == "keras":
      probabilities = self.model.predict(images, verbose=0)
    else:
      batches = [np.asarray(self._call(batch)) for batch in images]
      probabilities = np.concatenate(batches)
    return np.asarray(probabilities, np.float64)


class Detector(Protocol):
  """What is needed of a face detector (`face_detection.FaceDetector`, or a test fake)."""

  def detect_all(self, images: list[np.ndarray]) -> list[list[Face]]: ...


@dataclasses.dataclass(frozen=True)
class ImageInput:
  """One image file and the name its outputs get (relative path, no extension)."""

  path: str
  name: str


@dataclasses.dataclass
class ImageFaces:
  """An image's faces and their crops; `image` is None when it cannot be decoded."""

  source: ImageInput
  image: np.ndarray | None
  faces: list[Face]
  crops: list[np.ndarray]
  status: str


def expand_images(entries: Sequence[str]) -> list[ImageInput]:
  """Files as given, folders replaced by the image files under them (recursively).

  A folder's files are named by their path from the folder's parent
  (`photos/a/b.jpg`), a file by its base name, without extension.

  Raises:
    FileNotFoundError: an entry does not exist.
    ValueError: two files would get the same output name.
  """
  inputs = []
  for entry in entries:
    if os.path.isdir(entry):
      parent = os.path.dirname(os.path.abspath(entry))
      for root, directories, files in os.walk(entry):
        directories.sort()
        for file in sorted(files):
          if file.lower().endswith(IMAGE_EXTENSIONS):
            path = os.path.join(root, file)
            relative = os.path.relpath(os.path.abspath(path), parent)
            inputs.append(ImageInput(path, os.path.splitext(relative)[0]))
    elif os.path.isfile(entry):
      inputs.append(ImageInput(entry, os.path.splitext(os.path.basename(entry))[0]))
    else:
      raise FileNotFoundError(f"--images entry {entry!r} is neither a file nor a folder.")
  return unique_outputs(inputs, lambda item: item.path)


def unique_outputs(inputs: Sequence[Any], source: Callable[[Any], Any]) -> list[Any]:
  """`inputs` without repeats of one `source`, in order; two sources of one output `name` are an
  error (their outputs would overwrite each other)."""
  seen: dict[str, Any] = {}
  for item in inputs:
    if item.name in seen and seen[item.name] != source(item):
      raise ConfigError(
        f"{seen[item.name]} and {source(item)} would both write outputs named {item.name!r}; "
        "give their folders instead of the files, or rename one."
      )
    seen[item.name] = source(item)
  return list({source(item): item for item in inputs}.values())


def read_image(path: str) -> np.ndarray:
  """Decodes an image file to uint8 RGB `[h, w, 3]`, upright by its EXIF orientation.

  Raises:
    DataError: the file cannot be decoded, with the decoder's message.
  """
  return images.read(path, channels=3)


def to_grayscale(image: np.ndarray) -> np.ndarray:
  """RGB -> luma replicated to 3 channels, as the grayscale FER2013 images enter the model."""
  return np.repeat(images.luma(image), 3, axis=-1)


def whole_image_face(image: np.ndarray) -> Face:
  """The whole image as one face, of unknown (NaN) detector confidence."""
  return Face((0.0, 0.0, float(image.shape[1]), float(image.shape[0])), math.nan)


def find_faces(
  items: Sequence[ImageInput],
  detector: Detector | None,
  crop: CropSettings,
  grayscale: bool = True,
) -> list[ImageFaces]:
  """Decodes `items`, detects and crops their faces.

  Args:
    items: the image files.
    detector: finds every face of an image, most confident first; None takes
      each whole image as one face (for images that are face crops already).
    crop: how a face box becomes a crop (ignored without a detector).
    grayscale: give the model grayscale crops, as FER2013 (and the synthetic
      faces) are: a model trained on them has never seen colour.

  Returns:
    One entry per item, in order; status `ok`, `no_face` or `unreadable`
    (both warned).
  """
  results = []
  for item in items:
    try:
      results.append(ImageFaces(item, read_image(item.path), [], [], "ok"))
    except DataError as error:
      logging.warning("%s Reported as unreadable.", error)
      results.append(ImageFaces(item, None, [], [], "unreadable"))
  decoded = [result for result in results if result.image is not None]
  if detector is None:
    found = [[whole_image_face(result.image)] for result in decoded]
  else:
    found = detector.detect_all([result.image for result in decoded]) if decoded else []
  for result, faces in zip(decoded, found, strict=True):
    result.faces = list(faces)
    if detector is None:
      result.crops = [result.image]
    else:
      result.crops = [crop_face(result.image, face.box, crop) for face in faces]
    if grayscale:
      result.crops = [to_grayscale(c) for c in result.crops]
    if not faces:
      result.status = "no_face"
      logging.warning("%s: no face found.", result.source.path)
  return results


def classify_crops(
  predict: Callable[[np.ndarray], np.ndarray], crops: Sequence[np.ndarray], batch_size: int
) -> np.ndarray:
  """Probabilities `[len(crops), classes]` of uint8 crops of any sizes, batched by size."""
  if not crops:
    return np.zeros([0, 0])
  outputs: dict[int, np.ndarray] = {}
  for indices in batches_by_shape(crops, batch_size):
    probabilities = np.asarray(predict(np.stack([crops[i] for i in indices])), np.float64)
    outputs.update(zip(indices, probabilities, strict=True))
  return np.stack([outputs[i] for i in range(len(crops))])


def per_image(images: Sequence[ImageFaces], probabilities: np.ndarray) -> list[np.ndarray]:
  """Splits the probabilities of all faces of `images` (in order) into one array per image."""
  counts = [len(image.faces) for image in images]
  if sum(counts) != len(probabilities):
    raise ValueError(f"{len(probabilities)} probability rows for {sum(counts)} faces.")
  return np.split(probabilities, np.cumsum(counts)[:-1]) if images else []


def prediction_rows(
  images: Sequence[ImageFaces], probabilities: np.ndarray, class_names: Sequence[str]
) -> list[dict[str, Any]]:
  """One row per face (`probabilities` holds the faces of `images` in order).

  An image without faces gets one row with its status and empty face fields.
  Columns: image, face, status, x, y, width, height, confidence (empty
  without detection), emotion, probability, then `p_<class>` for every class.
  """
  if probabilities.size and probabilities.shape[1] != len(class_names):
    raise ConfigError(
      f"The model outputs {probabilities.shape[1]} classes; expected {len(class_names)} "
      f"({', '.join(class_names)}). Is --model an emotion model?"
    )
  rows = []
  for image, image_probabilities in zip(images, per_image(images, probabilities), strict=True):
    if not image.faces:
      empty = ("x", "y", "width", "height", "confidence", "emotion", "probability")
      rows.append(
        {"image": image.source.path, "face": None, "status": image.status}
        | dict.fromkeys(empty)
        | {f"p_{name}": None for name in class_names}
      )
    for k, (face, p) in enumerate(zip(image.faces, image_probabilities, strict=True)):
      best = int(np.argmax(p))
      x, y, width, height = (round(float(v), 2) for v in face.box)
      confidence = None if math.isnan(face.confidence) else float(face.confidence)
      rows.append(
        {"image": image.source.path, "face": k, "status": image.status}
        | {"x": x, "y": y, "width": width, "height": height, "confidence": confidence}
        | {"emotion": class_names[best], "probability": float(p[best])}
        | {f"p_{name}": float(value) for name, value in zip(class_names, p, strict=True)}
      )
  return rows


def image_status_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
  """Images per status (every row of an image carries its status; its first row counts)."""
  first_rows = [row for row in rows if row["face"] in (0, None)]
  return {status: sum(row["status"] == status for row in first_rows) for status in STATUSES}


def annotate(
  image: np.ndarray,
  boxes: Sequence[Sequence[float]],
  captions: Sequence[str],
  colours: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
  """A copy of RGB `image` with a box and a caption per face, sized to the image.

  `colours`: an RGB colour per face (video tracks); default `BOX_COLOUR` for all.
  """
  canvas = np.ascontiguousarray(image.copy())
  height, width = canvas.shape[:2]
  side = max(height, width)
  thickness = max(1, round(side / 400))
  font_scale = min(2.0, max(0.3, side / 1000))
  font = cv2.FONT_HERSHEY_SIMPLEX
  colours = colours or [BOX_COLOUR] * len(boxes)
  for box, caption, colour in zip(boxes, captions, colours, strict=True):
    x, y, w, h = box
    x0, y0 = int(round(x)), int(round(y))
    x1, y1 = int(round(x + w)) - 1, int(round(y + h)) - 1
    cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness)
    (text_width, text_height), baseline = cv2.getTextSize(caption, font, font_scale, thickness)
    label_height = text_height + baseline + 2 * thickness
    # Above the box when there is room, else just inside its top edge.
    top = y0 - label_height if y0 - label_height >= 0 else max(0, y0)
    left = min(max(0, x0), max(0, width - text_width - 2 * thickness))
    cv2.rectangle(
      canvas, (left, top), (left + text_width + 2 * thickness, top + label_height), colour, -1
    )
    origin = (left + thickness, top + thickness + text_height)
    cv2.putText(canvas, caption, origin, font, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)
  return canvas


def encode_jpeg(image: np.ndarray) -> bytes:
  """RGB uint8 -> JPEG bytes."""
  ok, encoded = cv2.imencode(
    ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
  )
  if not ok:
    raise ValueError(f"OpenCV could not encode an image of shape {image.shape} as JPEG.")
  return encoded.tobytes()


def write_rows(output_dir: str, rows: Sequence[dict[str, Any]], metadata: dict[str, Any]) -> None:
  """Writes `predictions.csv` (empty cells for missing values) and `predictions.json`."""
  buffer = io.StringIO()
  columns = list(rows[0]) if rows else ["image", "status"]
  writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  io_utils.write_text(os.path.join(output_dir, PREDICTIONS_CSV), buffer.getvalue())
  io_utils.write_json(os.path.join(output_dir, PREDICTIONS_JSON), {**metadata, "faces": rows})


def predict_images(
  items: Sequence[ImageInput],
  predict: Callable[[np.ndarray], np.ndarray],
  detector: Detector | None,
  crop: CropSettings,
  class_names: Sequence[str],
  output_dir: str,
  batch_size: int = 32,
  grayscale: bool = True,
  chunk_size: int = 16,
) -> list[dict[str, Any]]:
  """Classifies every face of `items`; writes the annotated images; returns the rows.

  Annotated copies go to `output_dir/annotated/<name>.jpg` (no-face images
  too, without boxes; unreadable ones have none). The CSV and JSON are left
  to the caller (`write_rows`), which knows the run's settings.
  """
  rows = []
  for start in range(0, len(items), chunk_size):
    chunk = find_faces(items[start : start + chunk_size], detector, crop, grayscale)
    crops = [c for image in chunk for c in image.crops]
    probabilities = classify_crops(predict, crops, batch_size)
    rows += prediction_rows(chunk, probabilities, class_names)
    for image, image_probabilities in zip(chunk, per_image(chunk, probabilities), strict=True):
      if image.image is None:
        continue
      captions = [f"{class_names[int(np.argmax(p))]} {np.max(p):.2f}" for p in image_probabilities]
      annotated = annotate(image.image, [face.box for face in image.faces], captions)
      path = os.path.join(output_dir, ANNOTATED_DIR, f"{image.source.name}.jpg")
      io_utils.write_bytes(path, encode_jpeg(annotated))
    logging.info("%d of %d images done.", min(start + chunk_size, len(items)), len(items))
  return rows
