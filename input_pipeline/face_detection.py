"""Face detection (the `mtcnn` package) and face crops for videos and photos.

MTCNN runs on TensorFlow and ships its weights, so detection needs nothing
beyond the trainer's own dependencies. Frames are detected in batches and,
when large, downscaled first (a 1080p DFDC frame at full size costs about 4x
the time for no gain on faces of the usual size); boxes are mapped back to
the full-resolution frame before cropping.

Crop policies:
  scale: a square of `scale` x the longer box side around the box centre,
    resized to `size` x `size` (padded with black where it leaves the frame).
    The DFDC and FF++ detectors are trained on such crops.
  tight: the box plus `margin` x its size on each side, clipped to the frame,
    at its own resolution (the trainer resizes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

from input_pipeline import video_io

CROP_POLICIES = ("scale", "tight")


@dataclasses.dataclass(frozen=True)
class Face:
  """One detected face: box `(x, y, width, height)` in frame pixels."""

  box: tuple[float, float, float, float]
  confidence: float


@dataclasses.dataclass(frozen=True)
class CropSettings:
  policy: str = "scale"
  scale: float = 1.3  # scale policy: square side over the longer box side.
  margin: float = 0.1  # tight policy: added on each side, as a fraction of the box.
  size: int = 224  # scale policy: output side in pixels.

  def __post_init__(self):
    if self.policy not in CROP_POLICIES:
      raise ValueError(f"crop policy {self.policy!r}; expected one of {list(CROP_POLICIES)}.")
    if self.scale < 1.0 or self.margin < 0.0 or self.size < 8:
      raise ValueError(
        f"crop scale={self.scale} (expected >= 1), margin={self.margin} (expected >= 0), "
        f"size={self.size} (expected >= 8)."
      )


def batches_by_shape(arrays: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
  """Indices of `arrays` in batches of at most `batch_size` arrays of one shape each."""
  by_shape: dict[tuple[int, ...], list[int]] = {}
  for index, array in enumerate(arrays):
    by_shape.setdefault(tuple(array.shape), []).append(index)
  return [
    indices[start : start + batch_size]
    for indices in by_shape.values()
    for start in range(0, len(indices), batch_size)
  ]


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
  min_confidence: float = 0.9  # Faces below this MTCNN confidence are ignored.
  min_face_size: int = 20  # Smallest face searched, in full-frame pixels.
  max_side: int = 960  # Larger frames are downscaled to this longer side (0: never).
  batch_size: int = 16  # Frames per MTCNN call.


class FaceDetector:
  """The most confident face of each image, with MTCNN, in batches."""

  def __init__(self, settings: DetectorSettings = DetectorSettings(), device: str = "CPU:0"):
    from mtcnn import MTCNN  # Imported here: it builds TF graphs on import.

    self.min_confidence = settings.min_confidence
    self.min_face_size = settings.min_face_size
    self.max_side = settings.max_side
    self.batch_size = settings.batch_size
    self._mtcnn = MTCNN(device=device)

  def _detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
    factor = min(1.0, self.max_side / max(images[0].shape[:2])) if self.max_side else 1.0
    if factor < 1.0:
      images = [
        cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        for image in images
      ]
    detections = self._mtcnn.detect_faces(
      list(images), min_face_size=max(1, round(self.min_face_size * factor))
    )
    return [
      sorted(
        (
          Face(tuple(float(v) / factor for v in f["box"]), float(f["confidence"]))
          for f in faces
          if f["confidence"] >= self.min_confidence
        ),
        key=lambda face: -face.confidence,
      )
      for faces in detections
    ]

  def detect_all(self, images: np.ndarray | list[np.ndarray]) -> list[list[Face]]:
    """Per RGB uint8 image, every face above `min_confidence`, most confident first.

    Images of one call may differ in size; each batch holds images of one size
    (MTCNN pads mixed sizes to the largest, which wastes time).
    """
    results: list[list[Face]] = [[] for _ in range(len(images))]
    for chunk in batches_by_shape(images, self.batch_size):
      for index, faces in zip(chunk, self._detect_batch([images[i] for i in chunk]), strict=True):
        results[index] = faces
    return results

  def detect(self, images: np.ndarray | list[np.ndarray]) -> list[Face | None]:
    """Per RGB uint8 image, its most confident face above `min_confidence`, or None."""
    return [faces[0] if faces else None for faces in self.detect_all(images)]


def crop_window(
  box: tuple[float, float, float, float], settings: CropSettings
) -> tuple[int, int, int, int]:
  """The crop `(x0, y0, x1, y1)` in frame pixels, before clipping to the frame."""
  x, y, width, height = box
  if settings.policy == "scale":
    side = max(width, height) * settings.scale
    centre_x, centre_y = x + width / 2, y + height / 2
    x0, y0 = round(centre_x - side / 2), round(centre_y - side / 2)
    side = max(1, round(side))
    return x0, y0, x0 + side, y0 + side
  dx, dy = width * settings.margin, height * settings.margin
  return round(x - dx), round(y - dy), round(x + width + dx), round(y + height + dy)


def crop_face(
  image: np.ndarray, box: tuple[float, float, float, float], settings: CropSettings
) -> np.ndarray:
  """The face crop of `image` (uint8 `[h, w, 3]`) by the crop policy."""
  height, width = image.shape[:2]
  x0, y0, x1, y1 = crop_window(box, settings)
  if settings.policy == "tight":
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    return np.ascontiguousarray(image[y0:y1, x0:x1])
  canvas = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
  sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
  if sx1 > sx0 and sy1 > sy0:
    canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
  interpolation = cv2.INTER_AREA if canvas.shape[0] > settings.size else cv2.INTER_LINEAR
  return cv2.resize(canvas, (settings.size, settings.size), interpolation=interpolation)


@dataclasses.dataclass
class VideoFaces:
  """The faces found in the sampled frames of one video."""

  crops: list[np.ndarray]  # uint8 RGB, one per frame with a face.
  frame_indices: list[int]  # Index in the video of each crop's frame.
  confidences: list[float]
  frames_sampled: int

  @property
  def frames_without_face(self) -> int:
    return self.frames_sampled - len(self.crops)


def extract_video_faces(
  path: str, detector: FaceDetector, num_frames: int, settings: CropSettings
) -> VideoFaces:
  """Samples `num_frames` evenly spaced frames and crops the most confident face of each.

  The rule before face tracking (`face_tracking`), kept for `score_videos --tracks=none`.

  Raises:
    video_io.VideoError: the video cannot be opened or decoded.
  """
  frames, indices = video_io.read_frames(path, num_frames)
  faces = [found[0] if found else None for found in detector.detect_all(list(frames))]
  result = VideoFaces([], [], [], len(frames))
  for frame, index, face in zip(frames, indices, faces, strict=True):
    if face is not None:
      result.crops.append(crop_face(frame, face.box, settings))
      result.frame_indices.append(int(index))
      result.confidences.append(face.confidence)
  return result
