"""Grad-CAM (Selvaraju et al., 2017): where in a face the emotion model looks.

For a class c and a convolutional feature map A (`[h, w, channels]`), each
channel k is weighted by the spatial mean of d score_c / d A_k; the map is
ReLU(sum_k weight_k * A_k), upsampled to the image and scaled to [0, 1] (all
zeros where no location speaks for the class).

The class score is the logit y_c, as in the paper, when the model has a
`logits` layer (the emotion ResNet18 has: Dense `logits` -> softmax
`probabilities`). The probability itself would be a poor target: d p_c =
p_c (d y_c - sum_j p_j d y_j) vanishes as p_c -> 1, so the most confident
faces would get the faintest maps, and other classes' evidence leaks in.
Models without a `logits` layer fall back to log p_c = y_c - logsumexp(y),
which does not saturate.

The emotion model nests the backbone as a sub-model (images -> `preprocess`
-> `resnet18`), and Keras cannot output an inner layer of a sub-model from the
outer graph; so the layers before the sub-model run first, in inference mode
(resize and normalise, no augmentation), and the gradient model is built on
the sub-model's own graph.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from absl import logging
from matplotlib.figure import Figure

from common import figures
from common.errors import ConfigError
from inference import emotion_inference
from input_pipeline.face_detection import CropSettings, batches_by_shape

LOGITS_LAYER = "logits"  # As `keras_models.resnet.build_resnet18` names its pre-softmax layer.
CONV_TYPES = (
  keras.layers.Conv2D,
  keras.layers.DepthwiseConv2D,
  keras.layers.SeparableConv2D,
)
OVERLAY_ALPHA = 0.45  # Weight of the heat map's colours over the image.


class GradModel:
  """The model split for Grad-CAM: `front` (inference-mode layers before the
  sub-model, or None), then `model`: front output -> (feature map, class
  scores, probabilities).

  The gradients run as one traced `tf.function`: besides being faster, the
  eager Conv2D backward pass of TF 2.21's oneDNN CPU kernels corrupts the heap
  now and then on the tiny test model (crashes in `Conv2DBackpropInput` and
  `Conv2DBackpropFilter`; none in graph mode or with TF_ENABLE_ONEDNN_OPTS=0).
  """

  def __init__(
    self, front: keras.Model | None, model: keras.Model, layer_name: str, uses_logits: bool
  ):
    self.front = front
    self.model = model
    self.layer_name = layer_name
    self.uses_logits = uses_logits
    self.num_classes = int(model.outputs[2].shape[-1])
    self.gradients = tf.function(self._gradients, reduce_retracing=True)

  def _gradients(
    self, inputs: tf.Tensor, class_index: tf.Tensor
  ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(features, d score / d features, probabilities); `class_index` < 0: predicted."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(inputs)  # Records the path to the features even without trainable weights.
      features, scores, probabilities = self.model(inputs, training=False)
      predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
      chosen = tf.where(class_index < 0, predicted, tf.fill(tf.shape(predicted), class_index))
      picked = tf.gather(tf.cast(scores, tf.float32), chosen, axis=1, batch_dims=1)
      target = picked if self.uses_logits else tf.math.log(tf.maximum(picked, 1e-12))
    return features, tape.gradient(target, features), probabilities


def _graphs(model: keras.Model) -> list[keras.Model]:
  """`model` and the functional sub-models nested in it, outermost first."""
  found = [model]
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      found += _graphs(layer)
  return found


def _is_feature_map(layer: keras.layers.Layer) -> bool:
  if isinstance(layer, keras.Model | keras.layers.InputLayer):
    return False
  try:
    return len(layer.output.shape) == 4
  except (AttributeError, ValueError):  # Unbuilt or shared layers have no single output.
    return False


def feature_map_layers(model: keras.Model) -> list[str]:
  """Names of the layers with a 4-D `[b, h, w, c]` output, in graph order, sub-models included."""
  return [
    layer.name for graph in _graphs(model) for layer in graph.layers if _is_feature_map(layer)
  ]


def default_layer(model: keras.Model) -> str:
  """The last feature map before pooling: the last conv block output of a ResNet."""
  names = feature_map_layers(model)
  if not names:
    raise ConfigError(
      f"Model {model.name!r} has no layer with a [b, h, w, c] output to explain; "
      "give an emotion or deepfake checkpoint (.keras)."
    )
  return names[-1]


def conv_layers(model: keras.Model) -> list[str]:
  """Names of the convolution layers, sub-models included (candidates for `layer_name`)."""
  return [
    layer.name
    for graph in _graphs(model)
    for layer in graph.layers
    if isinstance(layer, CONV_TYPES)
  ]


def build_grad_model(model: keras.Model, layer_name: str | None = None) -> GradModel:
  """The model split for Grad-CAM at `layer_name` (default: `default_layer`).

  Supports a functional model holding the layer, or one whose last layer is
  a functional sub-model holding it, fed by the layers before it in a chain
  (the emotion model: images -> preprocess -> resnet18).

  Raises:
    ValueError: no such layer, or its output is not a `[b, h, w, c]` map;
      the message lists the convolution layers.
  """
  layer_name = layer_name or default_layer(model)
  graph = next((g for g in _graphs(model) if layer_name in [x.name for x in g.layers]), None)
  if graph is None or not _is_feature_map(graph.get_layer(layer_name)):
    problem = "has no layer" if graph is None else "has no [b, h, w, c] feature map at layer"
    raise ConfigError(
      f"Model {model.name!r} {problem} {layer_name!r}. Convolution layers: "
      f"{', '.join(conv_layers(model))}; default (last feature map): {default_layer(model)}."
    )
  front = None
  if graph is not model:
    if model.layers[-1] is not graph or len(model.outputs) != 1:
      raise ConfigError(
        f"Layer {layer_name!r} is inside sub-model {graph.name!r}, which is not the last "
        f"layer of {model.name!r}; only a sub-model at the end of a chain is supported."
      )
    front = keras.Model(model.inputs, model.layers[-2].output, name="grad_cam_front")
  names = [x.name for x in graph.layers]
  uses_logits = LOGITS_LAYER in names
  probabilities = graph.outputs[0]
  scores = graph.get_layer(LOGITS_LAYER).output if uses_logits else probabilities
  inner = keras.Model(
    graph.inputs, [graph.get_layer(layer_name).output, scores, probabilities], name="grad_cam"
  )
  return GradModel(front, inner, layer_name, uses_logits)


def grad_cam(
  model: keras.Model | GradModel,
  images: np.ndarray,
  class_index: int | None = None,
  layer_name: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Grad-CAM heat maps of `images` for one class.

  Args:
    model: the emotion model (uint8 images -> probabilities), or any
      functional model as `build_grad_model` describes; or a `GradModel`
      built once for many calls (`layer_name` is then ignored).
    images: uint8 `[b, h, w, 3]`.
    class_index: the class explained; None explains each image's predicted
      class.
    layer_name: the feature map; None is `default_layer(model)`.

  Returns:
    heat maps float32 `[b, h, w]` in [0, 1] at the images' size, and the
    model's probabilities float64 `[b, classes]`.
  """
  grad = model if isinstance(model, GradModel) else build_grad_model(model, layer_name)
  if class_index is not None and not 0 <= class_index < grad.num_classes:
    raise ValueError(f"class_index={class_index}; the model has {grad.num_classes} classes.")
  images = tf.convert_to_tensor(images)
  if grad.front is not None:
    inputs = grad.front(images, training=False)
  else:
    inputs = tf.cast(images, grad.model.inputs[0].dtype)
  index = tf.constant(-1 if class_index is None else class_index, tf.int32)
  features, gradients, probabilities = grad.gradients(inputs, index)
  features, gradients = tf.cast(features, tf.float32), tf.cast(gradients, tf.float32)
  weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)  # [b, 1, 1, channels]
  cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
  cam = tf.image.resize(cam, tf.shape(images)[1:3], method="bilinear")[..., 0]
  peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
  cam = tf.where(peak > 0, cam / tf.maximum(peak, 1e-12), tf.zeros_like(cam))
  heatmaps = np.clip(cam.numpy(), 0.0, 1.0).astype(np.float32)
  return heatmaps, np.asarray(probabilities, np.float64)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
  """uint8 RGB `image` blended with the `jet` colours of `heatmap` (`[h, w]` in [0, 1])."""
  colours = matplotlib.colormaps["jet"](heatmap)[..., :3] * 255.0
  blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
  return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def grad_cam_figure(crop: np.ndarray, heatmap: np.ndarray, title: str) -> Figure:
  """The face crop and its heat map overlay side by side, under `title`."""
  figure = Figure(figsize=(6.4, 3.6))
  figure.suptitle(title, fontsize=10)
  for index, (picture, name) in enumerate(
    ((crop, "Face crop"), (overlay(crop, heatmap), "Grad-CAM"))
  ):
    axes = figure.add_subplot(1, 2, index + 1)
    axes.imshow(picture)
    axes.set_title(name, fontsize=9)
    axes.axis("off")
  figure.tight_layout()
  return figure


def explain_images(
  items: Sequence[emotion_inference.ImageInput],
  model: keras.Model,
  detector: emotion_inference.Detector | None,
  crop: CropSettings,
  class_names: Sequence[str],
  output_dir: str,
  class_name: str | None = None,
  layer_name: str | None = None,
  batch_size: int = 16,
  grayscale: bool = True,
  chunk_size: int = 16,
) -> list[dict[str, Any]]:
  """Writes `output_dir/<name>_face<k>_gradcam.png` per face; returns one row per figure.

  Faces are found and cropped as `emotion_inference.find_faces` does, so the
  maps explain the predictions `tools.predict_emotion` makes.
  """
  if class_name is not None and class_name not in class_names:
    raise ConfigError(f"--class_name={class_name!r}; expected one of {list(class_names)}.")
  class_index = None if class_name is None else list(class_names).index(class_name)
  grad = build_grad_model(model, layer_name)
  if grad.num_classes != len(class_names):
    raise ConfigError(
      f"The model outputs {grad.num_classes} classes; expected {len(class_names)} "
      f"({', '.join(class_names)}). Is --model an emotion model?"
    )
  logging.info("Grad-CAM at layer %s, %s.", grad.layer_name, class_name or "predicted class")
  rows = []
  for start in range(0, len(items), chunk_size):
    chunk = emotion_inference.find_faces(
      items[start : start + chunk_size], detector, crop, grayscale
    )
    crops = [(image, k, c) for image in chunk for k, c in enumerate(image.crops)]
    for indices in batches_by_shape([c for _, _, c in crops], batch_size):
      batch = np.stack([crops[i][2] for i in indices])
      heatmaps, probabilities = grad_cam(grad, batch, class_index)
      for i, heatmap, p in zip(indices, heatmaps, probabilities, strict=True):
        image, k, face_crop = crops[i]
        explained = class_index if class_index is not None else int(np.argmax(p))
        how = "requested" if class_index is not None else "predicted"
        title = (
          f"{image.source.name} face {k}: {class_names[explained]} "
          f"p={p[explained]:.2f} ({how}; layer {grad.layer_name})"
        )
        path = os.path.join(output_dir, f"{image.source.name}_face{k}_gradcam.png")
        figures.write_figure(path, grad_cam_figure(face_crop, heatmap, title))
        rows.append(
          {
            "image": image.source.path,
            "face": k,
            "class": class_names[explained],
            "probability": float(p[explained]),
            "predicted": class_names[int(np.argmax(p))],
            "figure": path,
          }
        )
    logging.info("%d of %d images done.", min(start + chunk_size, len(items)), len(items))
  return rows
