"""Reading frames from video files with OpenCV.

Frames are sampled evenly over the whole video, as in the DFDC and
FaceForensics++ baselines: the detector sees the full length of a clip, not
only its first seconds. Decoding walks the stream with `grab()` and decodes
(`retrieve()`) only the frames kept, which is faster than seeking for the
usual 32 of a few hundred frames and exact where seeking is not (many
containers seek to key frames only).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from common.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class VideoError(DataError):
  """A video cannot be opened or decoded."""


def evenly_spaced_indices(num_available: int, num_frames: int) -> np.ndarray:
  """`min(num_frames, num_available)` distinct indices spread over the video, centred."""
  if num_available <= 0:
    return np.zeros([0], np.int64)
  count = min(num_frames, num_available)
  positions = (np.arange(count) + 0.5) * num_available / count
  return np.clip(np.floor(positions).astype(np.int64), 0, num_available - 1)


def _count_frames(path: str) -> int:
  """Counts frames by walking the stream: for containers whose header has no count."""
  capture = cv2.VideoCapture(path)
  count = 0
  while capture.grab():
    count += 1
  capture.release()
  return count


def _decode_at(capture: cv2.VideoCapture, wanted: np.ndarray) -> tuple[list, list, int]:
  """Decodes the frames at the sorted indices `wanted`; also returns frames walked."""
  frames, indices = [], []
  position, next_wanted = 0, 0
  while next_wanted < len(wanted) and capture.grab():
    if position == wanted[next_wanted]:
      ok, frame = capture.retrieve()
      if ok and frame is not None:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        indices.append(position)
      next_wanted += 1
    position += 1
  return frames, indices, position


def read_frames(path: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to `num_frames` evenly spaced RGB frames of a video.

  Returns:
    (frames uint8 `[n, h, w, 3]`, their indices in the video `[n]`). `n` is
    smaller than `num_frames` only when the video has fewer frames.

  Raises:
    VideoError: the file is missing, cannot be opened, or no frame decodes.
  """
  if not os.path.isfile(path):
    raise VideoError(f"Video {path!r} does not exist.")
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise VideoError(f"Video {path!r} cannot be opened by OpenCV (not a video, or corrupt).")
    header_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    num_available = header_count if header_count > 0 else _count_frames(path)
    wanted = evenly_spaced_indices(num_available, num_frames)
    frames, indices, walked = _decode_at(capture, wanted)
    if len(indices) < len(wanted) and 0 < walked < num_available:
      # The header overstated the length: sample again over the frames there are.
      capture.release()
      capture = cv2.VideoCapture(path)
      frames, indices, _ = _decode_at(capture, evenly_spaced_indices(walked, num_frames))
  finally:
    capture.release()
  if not frames:
    raise VideoError(
      f"Video {path!r}: no frame could be decoded (header says {header_count} frames)."
    )
  return np.stack(frames), np.asarray(indices, np.int64)


def list_videos(folder: str) -> list[str]:
  """Video files under `folder` (recursively), sorted."""
  if not os.path.isdir(folder):
    raise DataError(f"Video folder {folder!r} does not exist.")
  found = []
  for root, _, files in os.walk(folder):
    found += [os.path.join(root, f) for f in files if f.lower().endswith(VIDEO_EXTENSIONS)]
  return sorted(found)
