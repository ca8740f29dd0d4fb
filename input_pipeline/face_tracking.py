"""Face tracks: the detections of successive frames linked into one track per person.

Every video path (deepfake preparation, video scoring, emotion on video) runs
the detector on its frames and gives the faces of each frame, in order, to a
`FaceTracker`. The tracker is pure logic on boxes, so it is tested on
synthetic detection sequences without a detector.

Linking rule, frame by frame:
  1. Each open track predicts its box at the new frame: its last box moved by
     its last velocity (centre shift per source frame between its last two
     detections), so faces that cross keep their identities.
  2. A track and a detection may be linked when their sizes (square root of
     the box area) differ by at most `max_size_ratio`, and they overlap
     (IoU >= `min_iou`) or their centres are at most `max_centre_distance`
     face sizes apart.
  3. Among the pairs allowed, the assignment of least total cost
     (1 - IoU + centre distance in face sizes + |log size ratio|) is taken
     (Hungarian algorithm); a detection left over starts a new track.
  4. A track without a detection stays open for `max_missed` processed frames,
     then ends; a face that comes back later starts a new track.

Choosing the person a video is about (`rank_tracks`): a track whose mean face
size is under `background_size` x that of the largest track present in at
least `min_track_frames` frames is a background face (a photo on the wall, a
screen, a distant passer-by). The main track is the non-background track of
the largest total face size over its frames (frames present x mean size), so
a person present longer and larger wins; ties go to more frames, then the
larger face.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from scipy import optimize

from input_pipeline import video_io
from input_pipeline.face_detection import CropSettings, Face, crop_face

Box = tuple[float, float, float, float]  # x, y, width, height in frame pixels.
_FORBIDDEN = 1e9  # Cost of a pair that may not be linked.


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
  min_iou: float = 0.3  # Overlap that links a track and a detection ...
  max_centre_distance: float = 1.0  # ... or centres this many face sizes apart.
  max_size_ratio: float = 1.6  # Larger of the two face sizes over the smaller.
  max_missed: int = 3  # Processed frames a track survives without a detection.
  min_track_frames: int = 8  # Frames a track needs to be scored or written on its own.
  background_size: float = 0.5  # Faces smaller than this x the largest are background (0: off).

  def __post_init__(self):
    if not (
      0.0 <= self.min_iou <= 1.0
      and self.max_centre_distance >= 0.0
      and self.max_size_ratio >= 1.0
      and self.max_missed >= 0
      and self.min_track_frames >= 1
      and 0.0 <= self.background_size < 1.0
    ):
      raise ValueError(
        f"tracker settings {self}: expected 0 <= min_iou <= 1, max_centre_distance >= 0, "
        "max_size_ratio >= 1, max_missed >= 0, min_track_frames >= 1 and "
        "0 <= background_size < 1."
      )


@dataclasses.dataclass
class Track:
  """One face across frames: its box and detector confidence in each frame present."""

  track_id: int
  frames: list[int] = dataclasses.field(default_factory=list)  # Source-frame indices.
  boxes: list[Box] = dataclasses.field(default_factory=list)
  confidences: list[float] = dataclasses.field(default_factory=list)
  missed: int = 0  # Processed frames since the last detection.

  @property
  def num_frames(self) -> int:
    return len(self.frames)

  @property
  def mean_size(self) -> float:
    """Mean face size in pixels: the square root of the box area, averaged over frames."""
    return float(np.mean([face_size(box) for box in self.boxes])) if self.boxes else 0.0

  @property
  def mean_confidence(self) -> float:
    return float(np.mean(self.confidences)) if self.confidences else math.nan

  @property
  def prominence(self) -> float:
    """Total face size over the frames present: how much of the video the face fills."""
    return self.num_frames * self.mean_size

  def boxes_by_frame(self) -> dict[int, Box]:
    return dict(zip(self.frames, self.boxes, strict=True))

  def describe(self) -> dict[str, object]:
    """The summary written beside prepared faces and logged."""
    return {
      "track": self.track_id,
      "frames": self.num_frames,
      "first_frame": self.frames[0] if self.frames else None,
      "last_frame": self.frames[-1] if self.frames else None,
      "mean_size": round(self.mean_size, 2),
      "mean_confidence": round(self.mean_confidence, 4),
    }

  def predicted_box(self, frame: int) -> Box:
    """The last box moved by the last velocity to `frame` (size kept)."""
    x, y, width, height = self.boxes[-1]
    if len(self.frames) >= 2 and self.frames[-1] != self.frames[-2]:
      (px, py), (cx, cy) = centre(self.boxes[-2]), centre(self.boxes[-1])
      steps = (frame - self.frames[-1]) / (self.frames[-1] - self.frames[-2])
      x, y = x + (cx - px) * steps, y + (cy - py) * steps
    return x, y, width, height


def face_size(box: Box) -> float:
  return math.sqrt(max(box[2], 0.0) * max(box[3], 0.0))


def centre(box: Box) -> tuple[float, float]:
  return box[0] + box[2] / 2, box[1] + box[3] / 2


def iou(a: Box, b: Box) -> float:
  """Intersection over union of two `(x, y, width, height)` boxes."""
  width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
  height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
  inter = max(0.0, width) * max(0.0, height)
  union = a[2] * a[3] + b[2] * b[3] - inter
  return inter / union if union > 0 else 0.0


def link_cost(predicted: Box, detected: Box, settings: TrackerSettings) -> float:
  """Cost of linking a track (its predicted box) to a detection; `_FORBIDDEN` if not allowed."""
  size_a, size_b = face_size(predicted), face_size(detected)
  if size_a <= 0 or size_b <= 0:
    return _FORBIDDEN
  ratio = max(size_a, size_b) / min(size_a, size_b)
  overlap = iou(predicted, detected)
  (ax, ay), (bx, by) = centre(predicted), centre(detected)
  distance = math.hypot(ax - bx, ay - by) / math.sqrt(size_a * size_b)
  close = overlap >= settings.min_iou or distance <= settings.max_centre_distance
  if ratio > settings.max_size_ratio or not close:
    return _FORBIDDEN
  return (1.0 - overlap) + distance + math.log(ratio)


class FaceTracker:
  """Links the faces of successive frames into tracks; feed frames in order with `update`.

  Incremental, so a live stream (a webcam) is tracked as it arrives.
  """

  def __init__(self, settings: TrackerSettings = TrackerSettings()):
    self.settings = settings
    self._open: list[Track] = []
    self._closed: list[Track] = []
    self._next_id = 0

  def update(self, frame: int, faces: Sequence[Face]) -> list[int]:
    """Adds the faces of source frame `frame`; returns the track id of each face, in order."""
    faces = list(faces)
    ids = [-1] * len(faces)
    if self._open and faces:
      cost = np.array(
        [
          [link_cost(t.predicted_box(frame), f.box, self.settings) for f in faces]
          for t in self._open
        ]
      )
      rows, columns = optimize.linear_sum_assignment(cost)
      for row, column in zip(rows, columns, strict=True):
        if cost[row, column] < _FORBIDDEN:
          ids[column] = self._extend(self._open[row], frame, faces[column])
    matched = set(ids)
    for track in self._open:
      if track.track_id not in matched:
        track.missed += 1
    for index, face in enumerate(faces):
      if ids[index] < 0:
        track = Track(self._next_id)
        self._next_id += 1
        self._open.append(track)
        ids[index] = self._extend(track, frame, face)
    self._closed += [t for t in self._open if t.missed > self.settings.max_missed]
    self._open = [t for t in self._open if t.missed <= self.settings.max_missed]
    return ids

  @staticmethod
  def _extend(track: Track, frame: int, face: Face) -> int:
    track.frames.append(int(frame))
    track.boxes.append(tuple(float(v) for v in face.box))
    track.confidences.append(float(face.confidence))
    track.missed = 0
    return track.track_id

  def tracks(self) -> list[Track]:
    """Every track so far, ended or open, by id (the order they started)."""
    return sorted(self._closed + self._open, key=lambda t: t.track_id)


def track_faces(
  detections: Sequence[Sequence[Face]],
  frames: Sequence[int],
  settings: TrackerSettings = TrackerSettings(),
) -> list[Track]:
  """Tracks of the faces detected in each of `frames` (source-frame indices, ascending)."""
  if len(detections) != len(frames):
    raise ValueError(f"{len(detections)} detection lists for {len(frames)} frames.")
  tracker = FaceTracker(settings)
  for frame, faces in zip(frames, detections, strict=True):
    tracker.update(int(frame), faces)
  return tracker.tracks()


def background_tracks(tracks: Sequence[Track], settings: TrackerSettings) -> set[int]:
  """Ids of the background faces: much smaller than the largest lasting face."""
  if not tracks or settings.background_size <= 0:
    return set()
  lasting = [t for t in tracks if t.num_frames >= settings.min_track_frames] or list(tracks)
  reference = max(t.mean_size for t in lasting)
  return {t.track_id for t in tracks if t.mean_size < settings.background_size * reference}


def rank_tracks(tracks: Sequence[Track], settings: TrackerSettings) -> list[Track]:
  """Tracks best first: the main track, the other people, then background faces.

  Within each part: larger total face size (frames x mean size) first, then
  more frames, then the larger mean size, then the earlier start.
  """
  background = background_tracks(tracks, settings)
  return sorted(
    tracks,
    key=lambda t: (
      t.track_id in background,
      -round(t.prominence, 6),
      -t.num_frames,
      -t.mean_size,
      t.track_id,
    ),
  )


def main_track(tracks: Sequence[Track], settings: TrackerSettings) -> Track | None:
  """The track a video is about (see `rank_tracks`); None without any track."""
  ranked = rank_tracks(tracks, settings)
  return ranked[0] if ranked else None


def people_tracks(tracks: Sequence[Track], settings: TrackerSettings) -> list[Track]:
  """The main track, then every other non-background track of `min_track_frames` or more."""
  ranked = rank_tracks(tracks, settings)
  if not ranked:
    return []
  background = background_tracks(tracks, settings)
  return [ranked[0]] + [
    t
    for t in ranked[1:]
    if t.track_id not in background and t.num_frames >= settings.min_track_frames
  ]


class AllFacesDetector(Protocol):
  """What tracking needs of a detector (`face_detection.FaceDetector`, or a test stand-in)."""

  def detect_all(self, images: list[np.ndarray]) -> list[list[Face]]: ...


@dataclasses.dataclass
class VideoTracks:
  """The sampled frames of one video and the face tracks found in them, best first."""

  frames: np.ndarray  # uint8 RGB [n, h, w, 3].
  frame_indices: np.ndarray  # Source-frame index of each frame [n].
  tracks: list[Track]  # Ranked by `rank_tracks`: the main track first.

  @property
  def frames_sampled(self) -> int:
    return len(self.frame_indices)

  def crops(self, track: Track, settings: CropSettings) -> list[np.ndarray]:
    """The crops of `track`, one per frame it is present in, in frame order."""
    position = {int(index): i for i, index in enumerate(self.frame_indices)}
    return [
      crop_face(self.frames[position[frame]], box, settings)
      for frame, box in zip(track.frames, track.boxes, strict=True)
    ]


def track_video(
  path: str, detector: AllFacesDetector, num_frames: int, settings: TrackerSettings
) -> VideoTracks:
  """Samples `num_frames` evenly spaced frames, detects every face and tracks them.

  Raises:
    video_io.VideoError: the video cannot be opened or decoded.
  """
  frames, indices = video_io.read_frames(path, num_frames)
  tracks = track_faces(detector.detect_all(list(frames)), indices.tolist(), settings)
  return VideoTracks(frames, indices, rank_tracks(tracks, settings))
