"""Procedurally drawn faces with seven expressions: the embedded default data.

The set stands in for FER2013 where the real data is absent (a fresh machine,
CI, a first try of the trainer). The expressions differ the way the FACS action
units describe them (mouth corners, mouth opening, eyebrow height and slant, eye
opening, nose wrinkles), while identity (face shape, skin tone, hair, feature
spacing), pose (rotation, scale, position), lighting, blur, noise and
background vary at random, so a model has to learn the expression rather than
a fixed template. Class frequencies follow FER2013's Training split.

Every image is drawn from its own `numpy` generator seeded by `(seed, split,
index)`, so a split is the same on every machine and does not change when
another split's size does.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from common import labels

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}

# Drawing happens at this multiple of the output size, then is area-downsampled:
# cheap anti-aliasing for thin features such as brows and mouths.
_SUPERSAMPLE = 2


@dataclasses.dataclass(frozen=True)
class _Expression:
  """Mean geometry of one expression, in units of the face half-width.

  Attributes:
    mouth_curve: height of the mouth corners above its centre (+ is a smile).
    mouth_open: height of the open mouth (0 is a closed line).
    mouth_width: half-width of the mouth.
    mouth_asymmetry: extra lift of one mouth corner (disgust's sneer).
    brow_height: height of the eyebrows above the eyes.
    brow_slant: inner end minus outer end height (+ raises the inner ends).
    eye_open: eye opening relative to a neutral eye.
    nose_wrinkle: whether wrinkle lines are drawn beside the nose.
  """

  mouth_curve: float
  mouth_open: float
  mouth_width: float
  mouth_asymmetry: float
  brow_height: float
  brow_slant: float
  eye_open: float
  nose_wrinkle: bool


_EXPRESSIONS: dict[str, _Expression] = {
  "angry": _Expression(-0.04, 0.0, 0.26, 0.0, 0.13, -0.26, 0.55, False),
  "disgust": _Expression(-0.03, 0.04, 0.30, 0.24, 0.20, 0.0, 0.6, True),
  "fear": _Expression(-0.10, 0.14, 0.42, 0.0, 0.42, 0.20, 1.5, False),
  "happy": _Expression(0.22, 0.06, 0.42, 0.0, 0.28, 0.0, 0.8, False),
  "neutral": _Expression(0.0, 0.0, 0.32, 0.0, 0.27, 0.0, 1.0, False),
  "sad": _Expression(-0.20, 0.0, 0.30, 0.0, 0.30, 0.24, 0.8, False),
  "surprise": _Expression(0.0, 0.34, 0.18, 0.0, 0.50, 0.0, 1.6, False),
}
assert tuple(_EXPRESSIONS) == labels.EMOTION_CLASSES


def class_probabilities() -> np.ndarray:
  """FER2013-like class frequencies in `labels.EMOTION_CLASSES` order."""
  counts = np.array(
    [labels.FER2013_TRAIN_COUNTS[name] for name in labels.EMOTION_CLASSES],
    dtype=np.float64,
  )
  return counts / counts.sum()


def make_split(
  split: str, num_images: int, image_size: int = 48, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Draws one split of the synthetic face set.

  Args:
    split: `train`, `validation` or `test`; each has its own random stream.
    num_images: how many faces to draw.
    image_size: side of the square grayscale output images, in pixels.
    seed: data set seed; the same seed gives the same images everywhere.

  Returns:
    `(images, labels)`: uint8 `[num_images, image_size, image_size, 1]` and
    int32 `[num_images]` indices into `labels.EMOTION_CLASSES`.
  """
  if split not in _SPLIT_IDS:
    raise ValueError(f"Unknown split {split!r}; expected one of {list(_SPLIT_IDS)}.")
  if num_images < 0 or image_size < 16:
    raise ValueError(
      f"Expected num_images >= 0 and image_size >= 16, got {num_images} and {image_size}."
    )
  label_rng = np.random.default_rng([seed, _SPLIT_IDS[split], 1 << 20])
  class_ids = label_rng.choice(
    len(labels.EMOTION_CLASSES), size=num_images, p=class_probabilities()
  ).astype(np.int32)
  images = np.empty((num_images, image_size, image_size, 1), np.uint8)
  for index, class_id in enumerate(class_ids):
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    images[index, ..., 0] = draw_face(labels.EMOTION_CLASSES[class_id], rng, image_size)
  return images, class_ids


def draw_face(expression: str, rng: np.random.Generator, image_size: int) -> np.ndarray:
  """Draws one grayscale face showing `expression`; returns uint8 `[size, size]`."""
  shape = _EXPRESSIONS[expression]
  canvas = image_size * _SUPERSAMPLE
  unit = canvas * rng.uniform(0.29, 0.34)  # face half-width in pixels
  centre = np.array([canvas / 2, canvas / 2])

  def jitter(value: float, spread: float) -> float:
    return value + rng.normal(0.0, spread)

  def to_px(x: float, y: float) -> tuple[int, int]:
    # Face units to fixed-point pixels (cv2's `shift` of 4 bits gives subpixel
    # precision at no cost).
    px = centre + unit * np.array([x, y])
    return int(round(px[0] * 16)), int(round(px[1] * 16))

  def px_len(length: float) -> int:
    return max(1, int(round(unit * length * 16)))

  skin = rng.uniform(110, 215)
  features = skin * rng.uniform(0.15, 0.45)
  line_width = max(1, int(round(unit * rng.uniform(0.07, 0.1))))

  face = np.zeros((canvas, canvas), np.float32)
  mask = np.zeros((canvas, canvas), np.float32)
  aspect = rng.uniform(1.15, 1.45)
  head_axes = (px_len(1.0), px_len(aspect))
  cv2.ellipse(face, to_px(0, 0.05), head_axes, 0, 0, 360, skin, -1, cv2.LINE_AA, 4)
  cv2.ellipse(mask, to_px(0, 0.05), head_axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
  # Hair: the head drawn in a hair tone, then a skin-coloured ellipse, lower
  # by a random amount, leaves a cap of hair that stays above the eyebrows.
  hair_tone = rng.uniform(10, 120) if rng.random() < 0.85 else skin * 0.9
  cv2.ellipse(face, to_px(0, 0.05), head_axes, 0, 0, 360, hair_tone, -1, cv2.LINE_AA, 4)
  hair_drop = rng.uniform(0.05, (aspect - 0.65) / 2)
  cv2.ellipse(
    face,
    to_px(0, 0.05 + hair_drop),
    (px_len(1.0), px_len(aspect - hair_drop)),
    0,
    0,
    360,
    skin,
    -1,
    cv2.LINE_AA,
    4,
  )

  eye_dx = jitter(0.38, 0.03)
  eye_y = jitter(-0.12, 0.04)
  eye_w = jitter(0.15, 0.015)
  eye_h = max(0.02, eye_w * 0.55 * jitter(shape.eye_open, 0.08))
  for side in (-1, 1):
    # Eye white, then iris: wide eyes show more white.
    cv2.ellipse(
      face,
      to_px(side * eye_dx, eye_y),
      (px_len(eye_w), px_len(eye_h)),
      0,
      0,
      360,
      min(255.0, skin * 1.25 + 20),
      -1,
      cv2.LINE_AA,
      4,
    )
    iris = min(eye_h, eye_w * 0.6)
    cv2.circle(face, to_px(side * eye_dx, eye_y), px_len(iris), features, -1, cv2.LINE_AA, 4)
    # Eyebrow: a thick segment whose inner end moves with `brow_slant`.
    brow_y = eye_y - jitter(shape.brow_height, 0.025)
    slant = jitter(shape.brow_slant, 0.025) / 2
    inner = to_px(side * (eye_dx - eye_w * 1.05), brow_y - slant)
    outer = to_px(side * (eye_dx + eye_w * 1.15), brow_y + slant)
    middle = to_px(side * eye_dx, brow_y - 0.03)
    cv2.polylines(
      face,
      [np.array([inner, middle, outer], np.int32)],
      False,
      features,
      line_width + 1,
      cv2.LINE_AA,
      4,
    )

  # Nose, with wrinkle lines for disgust.
  nose_y = jitter(0.22, 0.03)
  cv2.line(face, to_px(0, eye_y + 0.1), to_px(-0.06, nose_y), features, line_width, cv2.LINE_AA, 4)
  cv2.line(face, to_px(-0.06, nose_y), to_px(0.06, nose_y), features, line_width, cv2.LINE_AA, 4)
  if shape.nose_wrinkle:
    for side in (-1, 1):
      cv2.line(
        face,
        to_px(side * 0.1, eye_y + 0.12),
        to_px(side * 0.17, nose_y - 0.02),
        features,
        line_width,
        cv2.LINE_AA,
        4,
      )

  # Mouth: a curve through the corners and the centre, opened into a filled
  # shape for open expressions.
  mouth_y = nose_y + jitter(0.3, 0.03)
  half_width = jitter(shape.mouth_width, 0.025)
  curve = jitter(shape.mouth_curve, 0.02)
  lift = jitter(shape.mouth_asymmetry, 0.02) * (1 if rng.random() < 0.5 else -1)
  opening = max(0.0, jitter(shape.mouth_open, 0.02))
  xs = np.linspace(-1.0, 1.0, 17)
  upper = mouth_y - curve * xs**2 - lift * np.clip(xs, 0, None) - opening * 0.25 * (1 - xs**2)
  lower = mouth_y - curve * xs**2 - lift * np.clip(xs, 0, None) + opening * (1 - xs**2)
  upper_pts = [to_px(half_width * x, y) for x, y in zip(xs, upper, strict=True)]
  lower_pts = [to_px(half_width * x, y) for x, y in zip(xs, lower, strict=True)]
  if opening > 0.02:
    polygon = np.array(upper_pts + lower_pts[::-1], np.int32)
    cv2.fillPoly(face, [polygon], features * 0.6, cv2.LINE_AA, 4)
  cv2.polylines(face, [np.array(upper_pts, np.int32)], False, features, line_width, cv2.LINE_AA, 4)

  # Pose: rotate, scale and shift the face layer, then put it on a background.
  angle = rng.uniform(-15, 15)
  scale = rng.uniform(0.85, 1.15)
  shift = rng.uniform(-0.07, 0.07, size=2) * canvas
  warp = cv2.getRotationMatrix2D((canvas / 2, canvas / 2), angle, scale)
  warp[:, 2] += shift
  face = cv2.warpAffine(face, warp, (canvas, canvas), flags=cv2.INTER_LINEAR)
  mask = cv2.warpAffine(mask, warp, (canvas, canvas), flags=cv2.INTER_LINEAR)

  image = _background(rng, canvas) * (1 - mask) + face * mask
  # Lighting: a directional gradient and a random gain and gamma.
  yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32) / canvas - 0.5
  direction = rng.uniform(0, 2 * math.pi)
  gradient = 1 + rng.uniform(0, 0.5) * (xx * math.cos(direction) + yy * math.sin(direction))
  image = image * gradient * rng.uniform(0.7, 1.2)
  image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** rng.uniform(0.75, 1.35)
  if rng.random() < 0.4:
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
  image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
  image += rng.normal(0, rng.uniform(0, 10), image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, canvas: int) -> np.ndarray:
  """A smooth random background: a tone, a gradient and a few soft blobs."""
  yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32) / canvas
  background = rng.uniform(20, 235) + rng.uniform(-60, 60) * (
    xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)
  )
  for _ in range(rng.integers(0, 4)):
    cx, cy = rng.uniform(0, 1, size=2)
    radius = rng.uniform(0.1, 0.4)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
    background = background + rng.uniform(-70, 70) * blob
  return background.astype(np.float32)
