"""Procedurally drawn face videos, real and face-swapped: the embedded deepfake data.

Each identity (face shape, skin tone, features, background, lighting) gives
one real video and, with probability `fake_ratio` each, up to two fakes made
from it the way face-swap methods do: the inner face (eyes, nose, mouth) of a
different, randomly drawn source face is blended onto the target through a
soft elliptical mask. The artefacts are those detectors learn from real
deepfakes: a colour mismatch between the inner and outer face, a sharpness
mismatch (the swapped region blurred by resampling or over-sharpened), missing
camera noise in the swapped region, a visible blending boundary, and in some
videos temporal flicker (blend strength or colour changing from frame to
frame). Heads move, turn and blink, so a single frame of a real video is not
a template either.

All videos of one identity share its `group`, so a grouped split never puts a
fake in one split and the real video it was made from in the other. Every
identity is drawn from its own generator seeded by `(seed, split, index)`.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class SyntheticVideos:
  """Videos in memory.

  Attributes:
    frames: uint8 `[num_videos, num_frames, size, size, 3]` (RGB).
    labels: int32 `[num_videos]`, 0 real, 1 fake.
    groups: int32 `[num_videos]`, the identity each video shows.
  """

  frames: np.ndarray
  labels: np.ndarray
  groups: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Identity:
  skin: np.ndarray  # RGB
  features: np.ndarray  # RGB of eyes, brows, mouth
  aspect: float
  eye_dx: float
  eye_y: float
  mouth_y: float
  mouth_width: float


def _random_identity(rng: np.random.Generator) -> _Identity:
  tone = rng.uniform(0.35, 1.0)
  skin = np.array([230, 190, 160]) * tone + rng.normal(0, 12, 3)
  return _Identity(
    skin=np.clip(skin, 30, 250),
    features=np.clip(skin * rng.uniform(0.2, 0.5), 0, 255),
    aspect=rng.uniform(1.15, 1.4),
    eye_dx=rng.uniform(0.32, 0.44),
    eye_y=rng.uniform(-0.2, -0.05),
    mouth_y=rng.uniform(0.4, 0.6),
    mouth_width=rng.uniform(0.25, 0.4),
  )


def _draw_face(
  identity: _Identity, size: int, centre: np.ndarray, unit: float, angle: float, blink: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Draws a face on a transparent layer.

  Returns:
    `(face, head_mask, inner_mask)`: float32 RGB `[size, size, 3]`, the head's
    alpha `[size, size]`, and a soft ellipse over the eyes, nose and mouth.
  """
  rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

  def px(x: float, y: float) -> tuple[int, int]:
    point = centre + unit * rotation @ np.array([x, y])
    return int(round(point[0] * 16)), int(round(point[1] * 16))

  def length(value: float) -> int:
    return max(1, int(round(unit * value * 16)))

  degrees = math.degrees(angle)
  face = np.zeros((size, size, 3), np.float32)
  head = np.zeros((size, size), np.float32)
  inner = np.zeros((size, size), np.float32)
  axes = (length(1.0), length(identity.aspect))
  cv2.ellipse(face, px(0, 0), axes, degrees, 0, 360, identity.skin.tolist(), -1, cv2.LINE_AA, 4)
  cv2.ellipse(head, px(0, 0), axes, degrees, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
  colour = identity.features.tolist()
  width = max(1, int(round(unit * 0.08)))
  for side in (-1, 1):
    eye = px(side * identity.eye_dx, identity.eye_y)
    cv2.ellipse(
      face,
      eye,
      (length(0.14), length(0.08 * blink + 0.01)),
      degrees,
      0,
      360,
      (235, 235, 235),
      -1,
      cv2.LINE_AA,
      4,
    )
    cv2.circle(face, eye, length(0.06 * blink + 0.01), colour, -1, cv2.LINE_AA, 4)
    cv2.line(
      face,
      px(side * (identity.eye_dx - 0.15), identity.eye_y - 0.2),
      px(side * (identity.eye_dx + 0.15), identity.eye_y - 0.22),
      colour,
      width + 1,
      cv2.LINE_AA,
      4,
    )
  cv2.line(
    face, px(0, identity.eye_y + 0.1), px(0, identity.mouth_y - 0.2), colour, width, cv2.LINE_AA, 4
  )
  cv2.ellipse(
    face,
    px(0, identity.mouth_y),
    (length(identity.mouth_width), length(0.06)),
    degrees,
    0,
    360,
    colour,
    -1,
    cv2.LINE_AA,
    4,
  )
  cv2.ellipse(
    inner,
    px(0, (identity.eye_y + identity.mouth_y) / 2),
    (length(0.72), length(0.62)),
    degrees,
    0,
    360,
    1.0,
    -1,
    cv2.LINE_AA,
    4,
  )
  return face, head, inner


def _sharpen(image: np.ndarray, amount: float) -> np.ndarray:
  blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
  return image + amount * (image - blurred)


def draw_video(
  rng: np.random.Generator, num_frames: int, size: int, fake_rng: np.random.Generator | None
) -> np.ndarray:
  """Draws one video; returns uint8 `[num_frames, size, size, 3]`.

  Args:
    rng: the identity's generator (identity, background, motion, lighting).
      Generators in the same state give the same person in the same scene.
    num_frames: frames to draw.
    size: frame side in pixels.
    fake_rng: None for a real video; else the generator of the swap (source
      face, tint, sharpness, seam, flicker).
  """
  fake = fake_rng is not None
  target = _random_identity(rng)
  background = np.empty((size, size, 3), np.float32)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  for channel in range(3):
    background[..., channel] = rng.uniform(20, 235) + rng.uniform(-50, 50) * (
      xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)
    )
  unit = size * rng.uniform(0.28, 0.34)
  start = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
  drift = rng.uniform(-0.02, 0.02, 2) * size
  sway, sway_speed = rng.uniform(0, 0.12), rng.uniform(0.3, 1.0)
  blink_frame = rng.integers(0, num_frames) if rng.random() < 0.5 else -1
  gain = rng.uniform(0.75, 1.15)
  noise = rng.uniform(4, 10)  # camera noise
  if fake:
    source = _random_identity(fake_rng)
    # Match the source's geometry to the target so only the artefacts differ.
    source = dataclasses.replace(
      source, aspect=target.aspect, eye_y=target.eye_y, mouth_y=target.mouth_y
    )
    tint = fake_rng.normal(0, 1, 3)
    tint = tint / np.linalg.norm(tint) * fake_rng.uniform(20, 45)
    # The swapped face is rendered at its own resolution and warped into the
    # frame, so its sharpness never matches (the face-warping artefact of
    # Li and Lyu, 2019): blurred by resampling, or over-sharpened.
    sharpness = fake_rng.choice([-1.0, 1.0]) * fake_rng.uniform(1.0, 2.0)
    edge = fake_rng.uniform(0.3, 1.2)  # mask feathering: small = sharp seam
    seam = fake_rng.choice([-1.0, 1.0]) * fake_rng.uniform(15, 40)  # boundary brightness
    flicker = fake_rng.uniform(0.1, 0.3) if fake_rng.random() < 0.5 else 0.0
    # Generated faces lack the camera's noise: the swapped region is smoother.
    smoothness = fake_rng.uniform(0.6, 1.0)
  frames = np.empty((num_frames, size, size, 3), np.uint8)
  for t in range(num_frames):
    centre = start + drift * t
    angle = sway * math.sin(sway_speed * t)
    blink = 0.15 if t == blink_frame else 1.0
    face, head, inner = _draw_face(target, size, centre, unit, angle, blink)
    noise_scale = 1.0
    if fake:
      swapped, _, _ = _draw_face(source, size, centre, unit, angle, blink)
      swapped = swapped + tint * (1 + flicker * fake_rng.normal())
      if sharpness < 0:
        swapped = cv2.GaussianBlur(swapped, (0, 0), -sharpness)
      elif sharpness > 0:
        swapped = _sharpen(swapped, sharpness)
      alpha = cv2.GaussianBlur(inner, (0, 0), edge)[..., None]
      alpha = np.clip(alpha * (1 - flicker * abs(fake_rng.normal())), 0, 1)
      # Blending leaves a seam: a thin band of changed brightness where the
      # mask falls off.
      band = np.clip(4 * alpha * (1 - alpha), 0, 1)
      face = face * (1 - alpha) + swapped * alpha + seam * band
      noise_scale = 1.0 - smoothness * alpha * head[..., None]
    image = background * (1 - head[..., None]) + face * head[..., None]
    image = image * gain + rng.normal(0, noise, image.shape) * noise_scale
    frames[t] = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return frames


def make_split(
  split: str,
  num_identities: int,
  num_frames: int = 8,
  size: int = 48,
  fake_ratio: float = 0.65,
  seed: int = 0,
) -> SyntheticVideos:
  """Draws the videos of `num_identities` identities for one split.

  Each identity gives a real video and two candidate fakes, each kept with
  probability `fake_ratio`, so about `2 * fake_ratio / (1 + 2 * fake_ratio)`
  of the videos are fake (57% at the default), as in FaceForensics++ where
  fakes outnumber originals.
  """
  if split not in _SPLIT_IDS:
    raise ValueError(f"Unknown split {split!r}; expected one of {list(_SPLIT_IDS)}.")
  videos, labels, groups = [], [], []
  for identity in range(num_identities):
    stream = [seed, _SPLIT_IDS[split], identity]
    keep_rng = np.random.default_rng([*stream, 1 << 30])
    for copy in range(3):
      fake_rng = None
      if copy:
        if keep_rng.random() >= fake_ratio:
          continue
        fake_rng = np.random.default_rng([*stream, copy])
      videos.append(draw_video(np.random.default_rng(stream), num_frames, size, fake_rng))
      labels.append(int(copy > 0))
      groups.append(identity)
  return SyntheticVideos(
    frames=np.stack(videos) if videos else np.zeros((0, num_frames, size, size, 3), np.uint8),
    labels=np.asarray(labels, np.int32),
    groups=np.asarray(groups, np.int32),
  )
