"""Emotion on videos and webcams: faces tracked over frames, probabilities smoothed per track.

Every frame, or every `every`-th, goes through the face detector and the face
tracker the deepfake tools use (`face_tracking.FaceTracker`), so each person
keeps one track id while they move, cross others or are missed for a few
frames. Each face is cropped and classified as on photos (`emotion_inference`),
and each track's probabilities are smoothed over its frames,
`p = alpha * p_previous + (1 - alpha) * p_frame` (`smoothing` = alpha; 0: off),
so a label does not flicker from frame to frame.

Outputs per video, under `output_dir`:
  <name>.csv             one row per face and processed frame: frame, time_s,
                         track, status, x, y, width, height (box in frame
                         pixels), confidence, emotion, probability, p_<class>
                         (smoothed); a video without a face gets one row with
                         status `no_face`
  <name>_annotated.mp4   every input frame (same count, rate and size) with each
                         face's box, track id, emotion and probability; frames
                         between processed ones show the last processed boxes
  <name>_timeline.png    each track's class probabilities over time
and `videos.csv`, one row per video: status (`ok`, `no_face`, `unreadable`),
frames, faces, tracks, the video's rate and size, the frames per second achieved.

Frames are read, detected and classified in chunks and written as they go, so
a long video or a webcam stream needs little memory.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from absl import logging
from matplotlib.figure import Figure

from common import figures, io_utils
from common.errors import ConfigError, DataError
from inference import emotion_inference
from input_pipeline import face_tracking, video_io
from input_pipeline.face_detection import CropSettings, Face, crop_face

SUMMARY_CSV = "videos.csv"
FALLBACK_FPS = 30.0  # For streams whose rate OpenCV cannot read (many webcams).
TIMELINE_TRACKS = 8  # Tracks drawn in a timeline: the longest.
# Bright RGB colours, one per track id (modulo), readable under black captions.
TRACK_COLOURS = (
  (0, 255, 0),
  (255, 200, 0),
  (0, 220, 255),
  (255, 100, 255),
  (255, 255, 80),
  (160, 255, 160),
  (255, 160, 120),
  (180, 180, 255),
)


@dataclasses.dataclass(frozen=True)
class VideoInput:
  """A video file, or a webcam by its index, and the name its outputs get."""

  source: str | int
  name: str


def expand_videos(entries: Sequence[str]) -> list[VideoInput]:
  """Files as given, folders replaced by the videos under them, `0`, `1`, ... webcams.

  A folder's videos are named by their path from the folder's parent, a file
  by its base name, without extension; webcam k is `webcam<k>`.

  Raises:
    FileNotFoundError: an entry is neither a file, a folder nor a webcam index.
    ValueError: two videos would get the same output name.
  """
  inputs = []
  for entry in entries:
    if entry.isdigit():
      inputs.append(VideoInput(int(entry), f"webcam{entry}"))
    elif os.path.isdir(entry):
      parent = os.path.dirname(os.path.abspath(entry))
      for path in video_io.list_videos(entry):
        relative = os.path.relpath(os.path.abspath(path), parent)
        inputs.append(VideoInput(path, os.path.splitext(relative)[0]))
    elif os.path.isfile(entry):
      inputs.append(VideoInput(entry, os.path.splitext(os.path.basename(entry))[0]))
    else:
      raise FileNotFoundError(
        f"--video entry {entry!r} is neither a file, a folder nor a webcam index (0, 1, ...)."
      )
  return emotion_inference.unique_outputs(inputs, lambda item: item.source)


def open_capture(source: str | int) -> cv2.VideoCapture:
  """An opened OpenCV capture of a file or webcam.

  Raises:
    video_io.VideoError: a file that is missing or that OpenCV cannot open.
    DataError: no webcam at that index.
  """
  if isinstance(source, int):
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
      capture.release()
      raise DataError(
        f"--video={source}: no webcam at index {source} (OpenCV could not open camera "
        f"{source}); give a video file, or the index of a connected camera."
      )
    return capture
  if not os.path.isfile(source):
    raise video_io.VideoError(f"Video {source!r} does not exist.")
  capture = cv2.VideoCapture(source)
  if not capture.isOpened():
    capture.release()
    raise video_io.VideoError(
      f"Video {source!r} cannot be opened by OpenCV (not a video, or corrupt)."
    )
  return capture


def smooth(previous: np.ndarray | None, current: np.ndarray, alpha: float) -> np.ndarray:
  """Exponential smoothing: `alpha * previous + (1 - alpha) * current` (the first as is)."""
  if previous is None or alpha <= 0:
    return current
  return alpha * previous + (1.0 - alpha) * current


def _face_row(
  frame: int, fps: float, track: int, face: Face, p: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
  best = int(np.argmax(p))
  x, y, width, height = (round(float(v), 2) for v in face.box)
  confidence = None if math.isnan(face.confidence) else round(float(face.confidence), 4)
  return (
    {"frame": frame, "time_s": round(frame / fps, 4), "track": track, "status": "ok"}
    | {"x": x, "y": y, "width": width, "height": height, "confidence": confidence}
    | {"emotion": class_names[best], "probability": float(p[best])}
    | {f"p_{name}": float(v) for name, v in zip(class_names, p, strict=True)}
  )


def _no_face_row(class_names: Sequence[str]) -> dict[str, Any]:
  empty = ("frame", "time_s", "track", "status", "x", "y", "width", "height", "confidence")
  return (
    dict.fromkeys(empty)
    | {"status": "no_face", "emotion": None, "probability": None}
    | {f"p_{name}": None for name in class_names}
  )


def timeline_figure(
  rows: Sequence[dict[str, Any]], class_names: Sequence[str], title: str
) -> Figure:
  """One panel per track (the longest `TIMELINE_TRACKS`): its class probabilities over time."""
  by_track: dict[int, list[dict[str, Any]]] = {}
  for row in rows:
    if row["track"] is not None:
      by_track.setdefault(row["track"], []).append(row)
  shown = sorted(sorted(by_track, key=lambda t: -len(by_track[t]))[:TIMELINE_TRACKS])
  figure = Figure(figsize=(10, 1.0 + 2.2 * max(1, len(shown))))
  figure.suptitle(title)
  if not shown:
    axes = figure.add_subplot(1, 1, 1)
    axes.text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()
    return figure
  colours = [f"C{i}" for i in range(len(class_names))]
  end = max(row["time_s"] for row in rows if row["time_s"] is not None)
  first = None
  for panel, track in enumerate(shown):
    axes = figure.add_subplot(len(shown), 1, panel + 1, sharex=first)  # One time axis.
    first = first or axes
    times = [row["time_s"] for row in by_track[track]]
    marker = "." if len(times) < 20 else None  # A short track stays visible.
    for name, colour in zip(class_names, colours, strict=True):
      p = [row[f"p_{name}"] for row in by_track[track]]
      axes.plot(times, p, color=colour, label=name, marker=marker)
    axes.set_xlim(0, max(end, 1e-3))
    axes.set_ylim(0, 1)
    axes.set_ylabel("probability")
    axes.set_title(f"track {track} ({len(times)} frames)", fontsize=10)
    if panel == 0:
      axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
  axes.set_xlabel("time (s)")
  figure.tight_layout()
  return figure


def _write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  io_utils.write_text(path, buffer.getvalue())


@dataclasses.dataclass(frozen=True)
class VideoSettings:
  every: int = 1  # Detect and classify every N-th frame; the others repeat the last boxes.
  smoothing: float = 0.7  # alpha of the exponential smoothing per track (0: off).
  grayscale: bool = True  # Crops made grayscale, as FER2013 is.
  batch_size: int = 32  # Face crops per model call.
  chunk_frames: int = 16  # Processed frames detected per detector call.
  max_frames: int = 0  # Stop after this many frames (0: the whole video or stream).
  progress: bool = True

  def __post_init__(self):
    if self.every < 1 or not 0.0 <= self.smoothing < 1.0 or self.max_frames < 0:
      raise ValueError(
        f"every={self.every} (expected >= 1), smoothing={self.smoothing} (expected 0 <= "
        f"alpha < 1), max_frames={self.max_frames} (expected >= 0)."
      )


def predict_video(
  video: VideoInput,
  predict: Callable[[np.ndarray], np.ndarray],
  detector: face_tracking.AllFacesDetector,
  crop: CropSettings,
  class_names: Sequence[str],
  output_dir: str,
  tracking: face_tracking.TrackerSettings,
  settings: VideoSettings,
) -> dict[str, Any]:
  """Tracks and classifies the faces of one video; writes its three outputs; returns a summary.

  A file that cannot be opened or decoded gets status `unreadable` (warned, no
  outputs); a video without a face `no_face` (warned; its CSV has one row).

  Raises:
    DataError: a webcam index with no webcam.
  """
  from tqdm import tqdm

  summary: dict[str, Any] = {"video": video.source, "name": video.name, "status": "unreadable"}
  try:
    capture = open_capture(video.source)
  except video_io.VideoError as error:
    logging.warning("%s Reported as unreadable.", error)
    return summary
  fps = capture.get(cv2.CAP_PROP_FPS)
  if not fps or not math.isfinite(fps) or fps <= 0:
    logging.warning("%s: frame rate unknown; using %.0f fps.", video.source, FALLBACK_FPS)
    fps = FALLBACK_FPS
  total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
  if settings.max_frames:
    total = min(total, settings.max_frames) if total > 0 else settings.max_frames
  annotated_path = os.path.join(output_dir, f"{video.name}_annotated.mp4")
  partial = f"{annotated_path[: -len('.mp4')]}.partial.mp4"
  os.makedirs(os.path.dirname(annotated_path), exist_ok=True)
  tracker = face_tracking.FaceTracker(tracking)
  smoothed: dict[int, np.ndarray] = {}
  rows: list[dict[str, Any]] = []
  overlay: list[tuple[tuple[float, ...], str, tuple[int, int, int]]] = []
  writer, size, count, processed = None, None, 0, 0
  bar = tqdm(total=total if total > 0 else None, unit="frame", disable=not settings.progress)
  start = time.time()
  read = 0  # Frames read; `count`: frames written, with their rows.
  try:
    while True:
      try:
        chunk = []  # (index, RGB frame) of every frame read.
        while sum(i % settings.every == 0 for i, _ in chunk) < settings.chunk_frames:
          if settings.max_frames and read >= settings.max_frames:
            break
          ok, frame = capture.read()
          if not ok or frame is None:
            break
          chunk.append((read, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
          read += 1
        if not chunk:
          break
        if writer is None:
          size = (chunk[0][1].shape[1], chunk[0][1].shape[0])
          writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
          if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write an mp4v video to {partial!r}.")
        todo = [(i, frame) for i, frame in chunk if i % settings.every == 0]
        detections = detector.detect_all([frame for _, frame in todo]) if todo else []
        crops, owners = [], []
        for (i, frame), faces in zip(todo, detections, strict=True):
          for track, face in zip(tracker.update(i, faces), faces, strict=True):
            image = crop_face(frame, face.box, crop)
            crops.append(emotion_inference.to_grayscale(image) if settings.grayscale else image)
            owners.append((i, track, face))
        probabilities = emotion_inference.classify_crops(predict, crops, settings.batch_size)
        if probabilities.size and probabilities.shape[1] != len(class_names):
          raise ConfigError(
            f"The model outputs {probabilities.shape[1]} classes; expected {len(class_names)} "
            f"({', '.join(class_names)}). Is --model an emotion model?"
          )
        frame_rows: dict[int, list] = {i: [] for i, _ in todo}
        overlays: dict[int, list] = {i: [] for i, _ in todo}
        for (i, track, face), p in zip(owners, probabilities, strict=True):
          smoothed[track] = smooth(smoothed.get(track), p, settings.smoothing)
          row = _face_row(i, fps, track, face, smoothed[track], class_names)
          frame_rows[i].append(row)
          caption = f"#{track} {row['emotion']} {row['probability']:.2f}"
          overlays[i].append((face.box, caption, TRACK_COLOURS[track % len(TRACK_COLOURS)]))
        for i, frame in chunk:  # A frame's rows count once the frame is written.
          overlay = overlays.get(i, overlay)
          boxes, captions, colours = zip(*overlay, strict=True) if overlay else ((), (), ())
          drawn = emotion_inference.annotate(frame, boxes, captions, colours)
          writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
          rows += frame_rows.get(i, [])
          processed += int(i in frame_rows)
          count += 1
          bar.update()
      except KeyboardInterrupt:  # Ctrl-C ends a webcam stream; the outputs are finished.
        logging.warning(
          "Interrupted: finishing the outputs of %s with its %d frames written.", video.name, count
        )
        break
  finally:
    bar.close()
    capture.release()
    if writer is not None:
      writer.release()
  seconds = time.time() - start
  if count == 0:
    if os.path.exists(partial):
      os.remove(partial)
    if read:  # Ctrl-C before the first frame was written.
      logging.warning("%s: interrupted before any frame was written.", video.source)
      return summary | {"status": "interrupted"}
    logging.warning("%s: no frame could be decoded. Reported as unreadable.", video.source)
    return summary
  os.replace(partial, annotated_path)
  tracks = sorted({row["track"] for row in rows})
  status = "ok" if rows else "no_face"
  if not rows:
    logging.warning("%s: no face found in %d processed frames.", video.source, processed)
  _write_csv(os.path.join(output_dir, f"{video.name}.csv"), rows or [_no_face_row(class_names)])
  title = f"{video.name}: emotion per track (smoothing {settings.smoothing})"
  figures.write_figure(
    os.path.join(output_dir, f"{video.name}_timeline.png"),
    timeline_figure(rows, class_names, title),
  )
  if len(tracks) > TIMELINE_TRACKS:
    logging.info(
      "%s: the timeline shows the %d longest of %d tracks.",
      video.name,
      TIMELINE_TRACKS,
      len(tracks),
    )
  summary |= {
    "status": status,
    "frames": count,
    "frames_processed": processed,
    "faces": len(rows),
    "tracks": len(tracks),
    "fps": round(fps, 3),
    "width": size[0],
    "height": size[1],
    "seconds": round(seconds, 2),
    "frames_per_second": round(count / max(seconds, 1e-9), 2),
  }
  logging.info(
    "%s: %d frames (%d processed) in %.1f s, %.1f frames/s; %d faces in %d tracks. "
    "Wrote %s.csv, _annotated.mp4 and _timeline.png.",
    video.name,
    count,
    processed,
    seconds,
    summary["frames_per_second"],
    len(rows),
    len(tracks),
    os.path.join(output_dir, video.name),
  )
  return summary


def predict_videos(
  videos: Sequence[VideoInput],
  predict: Callable[[np.ndarray], np.ndarray],
  detector: face_tracking.AllFacesDetector,
  crop: CropSettings,
  class_names: Sequence[str],
  output_dir: str,
  tracking: face_tracking.TrackerSettings,
  settings: VideoSettings,
) -> list[dict[str, Any]]:
  """`predict_video` for each video, then `output_dir/videos.csv`; returns its rows."""
  summaries = [
    predict_video(v, predict, detector, crop, class_names, output_dir, tracking, settings)
    for v in videos
  ]
  columns: list[str] = []
  for summary in summaries:
    columns += [c for c in summary if c not in columns]
  _write_csv(os.path.join(output_dir, SUMMARY_CSV), [dict.fromkeys(columns) | s for s in summaries])
  return summaries
