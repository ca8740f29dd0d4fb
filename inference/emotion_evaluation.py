"""Evaluation of an emotion model (checkpoint, SavedModel or TFLite) on a split of its data.

What `tools.evaluate_emotion` runs; see that tool for the outputs. The
report is `inference.reports.classification_report`, the one the trainer
writes to test_report.json.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from common import figures, io_utils
from common.errors import ConfigError, DataError
from inference import reports, tflite
from inference.emotion_inference import Classifier
from input_pipeline import emotion_data
from input_pipeline.images import resize_to_uint8

SPLITS = ("test", "validation")
# Crop side / resized side for ten-crop: 224/256, the ImageNet evaluation convention.
CROP_FRACTION = 0.875
NUM_CROPS = 10
REPORT_FILE = "report.json"
LATENCY_RUNS = 50  # Single-image calls timed for the latency (median).
TEXT_REPORT_FILE = "classification_report.txt"


def ten_crop_resize_size(crop_size: int, crop_fraction: float = CROP_FRACTION) -> int:
  """Side images are resized to before ten crops of `crop_size` are cut."""
  return int(round(crop_size / crop_fraction))


def ten_crop(images: tf.Tensor, crop_size: int) -> tf.Tensor:
  """The standard ten crops of each image, for test-time augmentation.

  Args:
    images: `[batch, height, width, channels]`, any dtype, at least
      `crop_size` on each side.
    crop_size: side of the square crops.

  Returns:
    `[batch, 10, crop_size, crop_size, channels]`: the top-left, top-right,
    bottom-left, bottom-right and centre crops (centre offset rounded down),
    then the same five mirrored left-right.
  """
  images = tf.convert_to_tensor(images)
  static_height, static_width = images.shape[1], images.shape[2]
  if (static_height is not None and static_height < crop_size) or (
    static_width is not None and static_width < crop_size
  ):
    raise ValueError(
      f"Images of shape {tuple(images.shape)} are smaller than the crop size {crop_size}."
    )
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  bottom, right = height - crop_size, width - crop_size
  offsets = ((0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2))
  crops = [images[:, y : y + crop_size, x : x + crop_size, :] for y, x in offsets]
  crops += [tf.reverse(crop, axis=[2]) for crop in crops]
  stacked = tf.stack(crops, axis=1)
  return tf.ensure_shape(stacked, [None, NUM_CROPS, crop_size, crop_size, images.shape[-1]])


def ten_crop_fraction(view_fraction: float, eval_crop_fraction: float) -> float:
  """Crop side / resized side for views covering `view_fraction` of the image.

  The model centre-crops `eval_crop_fraction` of every view again, so the
  views are cut larger to cover `view_fraction` of the image in the end.
  """
  return min(view_fraction / eval_crop_fraction, 1.0)


def resize_and_ten_crop(
  images: tf.Tensor, crop_size: int, crop_fraction: float = CROP_FRACTION
) -> tf.Tensor:
  """uint8 `[b, h, w, c]` -> uint8 `[b * 10, crop, crop, c]`, ten crops per image in a row.

  The resize is the model's own (bilinear with antialiasing, as its Resizing
  layer), rounded back to uint8 so the crops enter the model as images do.
  """
  size = ten_crop_resize_size(crop_size, crop_fraction)
  resized = tf.image.resize(tf.cast(images, tf.float32), (size, size), antialias=True)
  resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
  crops = ten_crop(resized, crop_size)
  return tf.reshape(crops, [-1, crop_size, crop_size, images.shape[-1]])


def predict_split(
  classifier: Classifier,
  split: emotion_data.Split,
  num_classes: int,
  batch_size: int,
  crop_size: int | None = None,
  crop_fraction: float = CROP_FRACTION,
) -> np.ndarray:
  """Class probabilities `[n, num_classes]` of `split`; ten-crop averaged if `crop_size`."""
  dataset = emotion_data.make_dataset(split, batch_size, num_classes, training=False, seed=0)
  dataset = dataset.map(lambda images, _: images)
  if crop_size is not None:
    dataset = dataset.map(lambda images: resize_and_ten_crop(images, crop_size, crop_fraction))
  probabilities = classifier.predict(dataset)
  if probabilities.ndim != 2 or probabilities.shape[1] != num_classes:
    raise ConfigError(
      f"{classifier.path} outputs shape {probabilities.shape[1:]}; the config names "
      f"{num_classes} classes. Is --config the config the model was trained with?"
    )
  if crop_size is not None:
    probabilities = probabilities.reshape(len(split), NUM_CROPS, num_classes).mean(axis=1)
  return probabilities


def select_split(data: emotion_data.EmotionData, split: str) -> emotion_data.Split:
  """The named split of `data`; a clear error when the source has none."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r}; expected one of {list(SPLITS)}.")
  images = getattr(data, split)
  if images is None:
    raise DataError(f"{data.source} has no {split} split; use --split=validation.")
  if not len(images):
    raise DataError(f"The {split} split of {data.source} holds no images.")
  return images


def summary_table(report: dict[str, Any]) -> str:
  """Accuracy and macro F1 of the plain (and ten-crop) predictions, size, latency, as text."""
  lines = [
    f"{report['model']} on {report['split']} ({report['num_images']} images):",
    f"  {'':10} {'accuracy':>9} {'macro F1':>9}",
  ]
  for name in ("plain", "ten_crop"):
    if report[name] is not None:
      result = report[name]
      lines.append(f"  {name:10} {result['accuracy']:9.4f} {result['f1_macro']:9.4f}")
  rows = [("model", report)]
  if report["reference"] is not None:
    rows.append(("reference", report["reference"]))
    reference = report["reference"]
    lines.append(
      f"  reference  {reference['accuracy']:9.4f} {reference['f1_macro']:9.4f}  "
      f"({reference['model']}, {reference['model_format']}; same top class on "
      f"{reference['agreement']:.2%} of images)"
    )
  for name, entry in rows:
    lines.append(
      f"  {name}: {entry['model_size_bytes'] / 1e6:.3f} MB, "
      f"{entry['latency_ms_per_image']:.3f} ms per image"
    )
  return "\n".join(lines)


def default_reference(classifier: Classifier) -> str | None:
  """For a `.tflite` model: the SavedModel of the run its source checkpoint belongs to.

  `<run>/export/<highest version>` when the source was `<run>/checkpoints/*.keras`,
  else the source checkpoint itself; None when neither exists any more.
  """
  if classifier.format != "tflite":
    return None
  source = classifier.model.metadata.get("source_model", "")
  folder = os.path.dirname(source)
  if os.path.basename(folder) == "checkpoints":
    export_base = os.path.join(os.path.dirname(folder), "export")
    versions = (
      sorted(
        (int(name) for name in os.listdir(export_base) if name.isdigit()),
        reverse=True,
      )
      if os.path.isdir(export_base)
      else []
    )
    for version in versions:
      candidate = os.path.join(export_base, str(version))
      if tf.saved_model.contains_saved_model(candidate):
        return candidate
  if os.path.isfile(source):
    return source
  logging.warning("No reference model: %s (the .tflite source) no longer exists.", source)
  return None


def cost(classifier: Classifier, image: np.ndarray) -> dict[str, Any]:
  """Size on disk and median CPU milliseconds per single image of `classifier`."""
  return {
    "model_size_bytes": tflite.file_size(classifier.path),
    "latency_ms_per_image": tflite.measure_latency(classifier, image, runs=LATENCY_RUNS),
  }


def first_image(split: emotion_data.Split, size: int, num_classes: int) -> np.ndarray:
  """The split's first image at the model's input size, uint8 RGB, for latency."""
  head = emotion_data.head(split, 1)
  images, _ = next(iter(emotion_data.make_dataset(head, 1, num_classes, False, 0)))
  return resize_to_uint8(images, size, antialias=True).numpy()[0]


def evaluate(
  model_path: str,
  config: ml_collections.ConfigDict,
  output_dir: str,
  split: str = "test",
  use_ten_crop: bool = False,
  reference_model: str | None = None,
  num_threads: int | None = 1,
) -> dict[str, Any]:
  """Evaluates `model_path` on `split` of the config's data and writes the reports.

  Args:
    reference_model: a model to evaluate on the same images and report
      beside; for a `.tflite` model, None picks its run's SavedModel
      (`default_reference`), "" none.
    num_threads: TFLite interpreter threads (latency and predictions).

  Returns:
    The contents of report.json; `ten_crop` is None without `use_ten_crop`,
    `reference` None without a reference model.
  """
  class_names = list(config.data.class_names)
  image_size = config.data.image_size
  classifier = Classifier(model_path, num_threads=num_threads)
  model_size = classifier.input_size()
  if model_size is not None and model_size != image_size:
    raise ConfigError(
      f"{model_path} resizes images to {model_size}, but config.data.image_size is "
      f"{image_size}. Is --config the config the model was trained with?"
    )
  if classifier.class_names is not None and classifier.class_names != class_names:
    raise ConfigError(
      f"{model_path} was exported for the classes {classifier.class_names}; "
      f"config.data.class_names is {class_names}. Is --config the run's config?"
    )
  if reference_model is None:
    reference_model = default_reference(classifier)
  data = emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR)
  images = select_split(data, split)
  batch_size = config.schedule.batch_size
  crop_fraction = ten_crop_fraction(config.data.ten_crop_fraction, config.data.eval_crop_fraction)
  predictions = {"plain": predict_split(classifier, images, len(class_names), batch_size)}
  if use_ten_crop:
    predictions["ten_crop"] = predict_split(
      classifier, images, len(class_names), batch_size, image_size, crop_fraction
    )

  sample = first_image(images, image_size, len(class_names))
  report: dict[str, Any] = {
    "model": model_path,
    "model_format": classifier.format,
    **cost(classifier, sample),
    "config": config.name,
    "data": data.source,
    "split": split,
    "num_images": len(images),
    "class_names": class_names,
    "plain": None,
    "ten_crop": None,
    "reference": None,
  }
  true_labels = emotion_data.labels_of(images)
  if reference_model:
    reference = Classifier(reference_model, num_threads=num_threads)
    reference_probabilities = predict_split(reference, images, len(class_names), batch_size)
    result = reports.classification_report(true_labels, reference_probabilities, class_names)
    plain = predictions["plain"]
    report["reference"] = {
      "model": reference_model,
      "model_format": reference.format,
      **cost(reference, sample),
      "accuracy": result["accuracy"],
      "f1_macro": result["f1_macro"],
      # The model's accuracy minus the reference's, in percentage points.
      "accuracy_difference_points": 100
      * (float(np.mean(plain.argmax(-1) == true_labels)) - result["accuracy"]),
      "agreement": float(np.mean(plain.argmax(-1) == reference_probabilities.argmax(-1))),
      "max_probability_difference": float(np.max(np.abs(plain - reference_probabilities))),
    }
  texts = []
  written = []
  for name, probabilities in predictions.items():
    result = reports.classification_report(true_labels, probabilities, class_names)
    if name == "ten_crop":
      result["view_fraction"] = config.data.ten_crop_fraction
      result["resize_size"] = ten_crop_resize_size(image_size, crop_fraction)
      result["crop_size"] = image_size
    report[name] = result
    heading = "Plain" if name == "plain" else "Ten-crop"
    texts.append(f"{heading} ({split}, {len(images)} images)\n")
    texts.append(reports.classification_report_text(true_labels, probabilities, class_names))
    figure_name = "confusion_matrix.png" if name == "plain" else f"confusion_matrix_{name}.png"
    figure = figures.confusion_matrix_figure(
      result["confusion_matrix"],
      class_names,
      f"{heading}: {split}, accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f}",
    )
    written.append(figures.write_figure(os.path.join(output_dir, figure_name), figure))
  text = "\n".join(texts)
  io_utils.write_text(os.path.join(output_dir, TEXT_REPORT_FILE), text)
  io_utils.write_json(os.path.join(output_dir, REPORT_FILE), report)
  written += [os.path.join(output_dir, TEXT_REPORT_FILE), os.path.join(output_dir, REPORT_FILE)]
  logging.info("%s", summary_table(report))
  logging.info("Classification report:\n%s", text)
  logging.info("Wrote:\n%s", "\n".join(written))
  return report
