"""On-device image preprocessing and augmentation, as one Keras layer.

`ImagePreprocessor` sits at the front of the training model, so the
augmentations run on whole batches on the accelerator inside the compiled train
step, not image by image on the CPU. With `training=False` (evaluation,
prediction, the exported SavedModel) it only resizes and normalises.

The train-time chain is the original PyTorch recipe's, in its order:
RandomResizedCrop -> RandomHorizontalFlip -> RandomApply(ColorJitter, p=0.8)
-> RandomGrayscale(p=0.2) -> RandomRotation(20) -> Normalize(ImageNet)
-> RandomErasing(p=0.25). Keras 3's own layers are used where they exist and
compile with XLA (flip, colour jitter, grayscale, erasing). Three pieces are our
own: random resized crop (Keras 3 has none; keras-cv's `RandomCropAndResize`
works one image at a time), rotation (Keras' `RandomRotation` declares
`supports_jit=False`: its `ImageProjectiveTransformV3` has no XLA kernel, so it
would turn XLA off for the whole model) and the resize (Keras' antialiased
`Resizing` runs `ScaleAndTranslate`, which has no XLA kernel either). They
resample with `resampling`, whose matrix products and gathers XLA compiles, and
"apply with probability p" is a per-image `where` (keras-cv's `RandomApply`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_models import resampling

# ImageNet channel statistics on the 0-255 scale (torchvision's
# Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]) x 255).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def to_rgb_float(images: Any) -> Any:
  """Casts uint8 or float images to float32 0-255 and makes them 3-channel."""
  images = ops.cast(images, "float32")
  if images.shape[-1] == 1:
    images = ops.repeat(images, 3, axis=-1)
  elif images.shape[-1] != 3:
    raise ValueError(f"Expected images with 1 or 3 channels, got shape {tuple(images.shape)}.")
  return images


def normalize(images: Any) -> Any:
  """ImageNet mean/std normalisation of float 0-255 RGB images."""
  mean = ops.convert_to_tensor(IMAGENET_MEAN, "float32")
  std = ops.convert_to_tensor(IMAGENET_STD, "float32")
  return (images - mean) / std


@keras.saving.register_keras_serializable(package="face_analysis")
class RandomResizedCrop(keras.layers.Layer):
  """torchvision's RandomResizedCrop for whole batches.

  Each image gets its own crop covering a fraction `area` of it, with aspect
  ratio drawn log-uniformly from `aspect_ratio`, at a uniform position; the crop
  is resized bilinearly (antialiased when shrinking, as torchvision's tensor
  transform) to `size` x `size`, for the whole batch at once with
  `resampling.crop_and_resize`. Where torchvision redraws a crop that does not
  fit, the crop's sides are clipped to the image instead. Without `training`
  the whole image is resized.
  """

  def __init__(
    self,
    size: int,
    area: tuple[float, float] = (0.08, 1.0),
    aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    seed: int | None = None,
    **kwargs: Any,
  ):
    super().__init__(**kwargs)
    self.size = size
    self.area = tuple(area)
    self.aspect_ratio = tuple(aspect_ratio)
    self.seed = seed
    self._seed_generator = keras.random.SeedGenerator(seed)

  def call(self, images: Any, training: bool | None = None) -> Any:
    images = ops.cast(images, self.compute_dtype)
    if not training:
      return resampling.resize(images, self.size)
    batch = ops.shape(images)[0]
    height = ops.cast(ops.shape(images)[1], "float32")
    width = ops.cast(ops.shape(images)[2], "float32")
    area = keras.random.uniform((batch,), *self.area, seed=self._seed_generator)
    log_ratio = keras.random.uniform(
      (batch,), *[float(np.log(r)) for r in self.aspect_ratio], seed=self._seed_generator
    )
    ratio = ops.exp(log_ratio)  # width / height of the crop, in pixels
    crop_width = ops.minimum(ops.sqrt(area * ratio * height / width), 1.0)
    crop_height = ops.minimum(ops.sqrt(area / ratio * width / height), 1.0)
    top = keras.random.uniform((batch,), seed=self._seed_generator) * (1.0 - crop_height)
    left = keras.random.uniform((batch,), seed=self._seed_generator) * (1.0 - crop_width)
    boxes = ops.stack([top, left, crop_height, crop_width], axis=-1)
    return resampling.crop_and_resize(images, boxes, self.size)

  def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
    return (input_shape[0], self.size, self.size, input_shape[-1])

  def get_config(self) -> dict[str, Any]:
    return {
      **super().get_config(),
      "size": self.size,
      "area": self.area,
      "aspect_ratio": self.aspect_ratio,
      "seed": self.seed,
    }


@keras.saving.register_keras_serializable(package="face_analysis")
class RandomRotation(keras.layers.Layer):
  """Rotates each image by its own angle, uniform in +-`degrees`, about its centre.

  torchvision's RandomRotation (and Keras' `RandomRotation(degrees / 360)`)
  with bilinear sampling and zeros outside the image, built on
  `resampling.affine_warp` so that XLA compiles it. Without `training` the
  images pass through.
  """

  def __init__(self, degrees: float, seed: int | None = None, **kwargs: Any):
    super().__init__(**kwargs)
    self.degrees = degrees
    self.seed = seed
    self._seed_generator = keras.random.SeedGenerator(seed)

  def call(self, images: Any, training: bool | None = None) -> Any:
    images = ops.cast(images, self.compute_dtype)
    if not training or not self.degrees:
      return images
    shape = ops.shape(images)
    limit = float(np.deg2rad(self.degrees))
    angles = keras.random.uniform((shape[0],), -limit, limit, seed=self._seed_generator)
    transforms = resampling.rotation_transforms(angles, shape[1], shape[2])
    return resampling.affine_warp(images, transforms, fill_mode="constant")

  def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
    return tuple(input_shape)

  def get_config(self) -> dict[str, Any]:
    return {**super().get_config(), "degrees": self.degrees, "seed": self.seed}


@keras.saving.register_keras_serializable(package="face_analysis")
class ImagePreprocessor(keras.layers.Layer):
  """Resizes and normalises images; augments them too when `training=True`.

  Input: uint8 or float `[batch, height, width, 1 or 3]` images with values in
  0-255, of any height and width. Output: float32 `[batch, image_size,
  image_size, 3]`, ImageNet-normalised.

  Without `training`, the central `eval_crop_fraction` of each side is resized
  to `image_size` (1: the whole image). Random resized crops of area A zoom in
  by 1/sqrt(A) on average, so a centre crop of sqrt(mean A) shows faces at
  the size training saw them (Touvron et al., "Fixing the train-test
  resolution discrepancy", 2019).
  """

  def __init__(
    self,
    image_size: int = 96,
    crop_area: tuple[float, float] = (0.8, 1.0),
    crop_aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    horizontal_flip: bool = True,
    color_jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.05),
    color_jitter_probability: float = 0.8,
    grayscale_probability: float = 0.2,
    rotation_degrees: float = 20.0,
    erasing_probability: float = 0.25,
    erasing_area: tuple[float, float] = (0.02, 0.33),
    eval_crop_fraction: float = 1.0,
    seed: int | None = None,
    **kwargs: Any,
  ):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.image_size = image_size
    self.crop_area = tuple(crop_area)
    self.crop_aspect_ratio = tuple(crop_aspect_ratio)
    self.horizontal_flip = horizontal_flip
    self.color_jitter = tuple(color_jitter)
    self.color_jitter_probability = color_jitter_probability
    self.grayscale_probability = grayscale_probability
    self.rotation_degrees = rotation_degrees
    self.erasing_probability = erasing_probability
    self.erasing_area = tuple(erasing_area)
    self.eval_crop_fraction = eval_crop_fraction
    self.seed = seed
    self._seed_generator = keras.random.SeedGenerator(seed)

    def sub_seed(offset: int) -> int | None:
      return None if seed is None else seed + offset

    self.random_resized_crop = RandomResizedCrop(
      image_size,
      self.crop_area,
      self.crop_aspect_ratio,
      seed=sub_seed(1),
      dtype="float32",
    )
    self.flip = keras.layers.RandomFlip("horizontal", seed=sub_seed(2), dtype="float32")
    brightness, contrast, saturation, hue = self.color_jitter
    self.jitter = keras.layers.RandomColorJitter(
      value_range=(0, 255),
      brightness_factor=brightness or None,
      contrast_factor=contrast or None,
      saturation_factor=saturation or None,
      hue_factor=hue or None,
      seed=sub_seed(3),
      dtype="float32",
    )
    self.grayscale = keras.layers.RandomGrayscale(
      grayscale_probability, seed=sub_seed(4), dtype="float32"
    )
    self.rotation = RandomRotation(rotation_degrees, seed=sub_seed(5), dtype="float32")
    # Keras samples the erasing probability from U(factor); a (p, p) range
    # makes it exactly p, as in torchvision. Erased pixels become 0, the
    # normalised mean, as torchvision's default value=0 does.
    self.erasing = keras.layers.RandomErasing(
      factor=(erasing_probability, erasing_probability),
      scale=self.erasing_area,
      fill_value=0.0,
      seed=sub_seed(6),
      dtype="float32",
    )

  def _apply_with_probability(self, layer: keras.layers.Layer, images: Any, p: float) -> Any:
    """Applies `layer` to each image of the batch independently with probability p."""
    if p <= 0:
      return images
    transformed = layer(images, training=True)
    if p >= 1:
      return transformed
    batch = ops.shape(images)[0]
    chosen = keras.random.uniform((batch, 1, 1, 1), seed=self._seed_generator) < p
    return ops.where(chosen, transformed, images)

  def build(self, input_shape: tuple[int | None, ...]) -> None:
    # The sublayers hold no weights; building them here keeps Keras from
    # warning about unbuilt state when the model is saved or loaded.
    for layer in (self.jitter, self.grayscale, self.rotation, self.erasing):
      layer.build((None, self.image_size, self.image_size, 3))
    self.built = True

  def call(self, images: Any, training: bool | None = None) -> Any:
    images = to_rgb_float(images)
    if not training:
      return normalize(self._centre_crop(images))
    images = self.random_resized_crop(images, training=True)
    if self.horizontal_flip:
      images = self.flip(images, training=True)
    if any(self.color_jitter):
      images = self._apply_with_probability(self.jitter, images, self.color_jitter_probability)
    if self.grayscale_probability > 0:
      images = self.grayscale(images, training=True)
    if self.rotation_degrees > 0:
      images = self.rotation(images, training=True)
    images = normalize(images)
    if self.erasing_probability > 0:
      images = self.erasing(images, training=True)
    return images

  def _centre_crop(self, images: Any) -> Any:
    """The central `eval_crop_fraction` of each side, resized to `image_size`."""
    fraction = self.eval_crop_fraction
    if fraction >= 1:
      return resampling.resize(images, self.image_size)
    margin = (1.0 - fraction) / 2
    box = ops.convert_to_tensor([[margin, margin, fraction, fraction]], "float32")
    boxes = ops.tile(box, (ops.shape(images)[0], 1))
    return resampling.crop_and_resize(images, boxes, self.image_size)

  def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
    return (input_shape[0], self.image_size, self.image_size, 3)

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(
      image_size=self.image_size,
      crop_area=self.crop_area,
      crop_aspect_ratio=self.crop_aspect_ratio,
      horizontal_flip=self.horizontal_flip,
      color_jitter=self.color_jitter,
      color_jitter_probability=self.color_jitter_probability,
      grayscale_probability=self.grayscale_probability,
      rotation_degrees=self.rotation_degrees,
      erasing_probability=self.erasing_probability,
      erasing_area=self.erasing_area,
      eval_crop_fraction=self.eval_crop_fraction,
      seed=self.seed,
    )
    return config
