"""Turns a video data set into the face crops and labels CSV the deepfake trainer reads.

The faces of a video's sampled frames are tracked (`face_tracking`), and the
crops come from its main track, the person the video is about, never from a
small face in the background (a photo on the wall, a screen); with
`all_tracks`, every person (track) with enough frames gets its own clip folder.

Output layout under `output_dir`:

  <video_id>/<frame>.jpg   the main track's face crop in each sampled frame it is in
  <video_id>/track<k>/<frame>.jpg   with all_tracks: the crops of track k instead
  <video_id>/faces.csv     every crop written: frame (index in the video), track,
                           x, y, width, height (the detected box in source-frame
                           pixels), confidence
  <video_id>/faces.json    what was done: the record, frames sampled and kept,
                           every track found (frames, mean size and confidence)
  labels.csv               video,label,group,split,dataset,method,frames_kept,
                           frames_without_face,source_path,track (one row per
                           folder of crops; the tracks of a video share its label
                           and group)
  skipped.csv              videos without a face or that could not be decoded
  preparation.json         the settings, checked on resume

Tracks are numbered by rank: track0 is the main track. Each video folder is
written beside its final place and renamed into it, so a video either has its
complete folder with `faces.json` or none: an interrupted run resumes by
skipping finished videos. `labels.csv` is rebuilt from every `faces.json`
under `output_dir`, so separate runs (for example one per DFDC part) into one
folder add up.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from typing import Any

import cv2
import numpy as np
import pandas as pd
from absl import logging

from common import io_utils
from common.errors import DataError
from input_pipeline import face_detection, face_tracking, video_io
from input_pipeline.video_datasets import Catalogue, VideoRecord

FACES_FILE = "faces.json"
BOXES_FILE = "faces.csv"
BOXES_COLUMNS = ("frame", "track", "x", "y", "width", "height", "confidence")
LABELS_FILE = "labels.csv"
SKIPPED_FILE = "skipped.csv"
SETTINGS_FILE = "preparation.json"
LABELS_COLUMNS = (
  "video",
  "label",
  "group",
  "split",
  "dataset",
  "method",
  "frames_kept",
  "frames_without_face",
  "source_path",
  "track",
)


@dataclasses.dataclass(frozen=True)
class PreparationSettings:
  num_frames: int = 32  # Evenly spaced frames sampled per video.
  crop: face_detection.CropSettings = face_detection.CropSettings()
  detector: face_detection.DetectorSettings = face_detection.DetectorSettings()
  jpeg_quality: int = 95
  tracking: face_tracking.TrackerSettings = face_tracking.TrackerSettings()
  all_tracks: bool = False  # Every person's track in its own folder, not the main one only.

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class VideoResult:
  video_id: str
  status: str  # done, no_face, failed or already_done.
  frames_kept: int = 0
  frames_without_face: int = 0
  message: str = ""


def _video_folder(output_dir: str, video_id: str) -> str:
  return os.path.join(output_dir, *video_id.split("/"))


def is_done(output_dir: str, video_id: str) -> bool:
  return os.path.isfile(os.path.join(_video_folder(output_dir, video_id), FACES_FILE))


def _make_detector(settings: PreparationSettings) -> face_detection.FaceDetector:
  return face_detection.FaceDetector(settings.detector)


def _write_jpeg(path: str, crop: np.ndarray, quality: int, source: str) -> None:
  ok, encoded = cv2.imencode(
    ".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
  )
  if not ok:
    raise RuntimeError(f"OpenCV could not encode a face crop of {source!r}.")
  with open(path, "wb") as file:
    file.write(encoded.tobytes())


def prepare_video(
  record: VideoRecord,
  output_dir: str,
  settings: PreparationSettings,
  detector: face_tracking.AllFacesDetector,
) -> VideoResult:
  """Tracks and writes one video's faces; a decode failure is a result, not an error."""
  try:
    video = face_tracking.track_video(record.path, detector, settings.num_frames, settings.tracking)
  except video_io.VideoError as error:
    return VideoResult(record.video_id, "failed", message=str(error))
  if settings.all_tracks:
    chosen = face_tracking.people_tracks(video.tracks, settings.tracking)
  else:
    chosen = video.tracks[:1]
  rank = {track.track_id: k for k, track in enumerate(video.tracks)}
  background = face_tracking.background_tracks(video.tracks, settings.tracking)
  folder = _video_folder(output_dir, record.video_id)
  partial = f"{folder}.partial"
  if os.path.exists(partial):
    shutil.rmtree(partial)
  os.makedirs(partial)
  boxes, written = [], []
  for track in chosen:
    k = rank[track.track_id]
    subfolder = f"track{k}" if settings.all_tracks else ""
    os.makedirs(os.path.join(partial, subfolder), exist_ok=True)
    crops = video.crops(track, settings.crop)
    for crop, frame, box, confidence in zip(
      crops, track.frames, track.boxes, track.confidences, strict=True
    ):
      path = os.path.join(partial, subfolder, f"{frame:06d}.jpg")
      _write_jpeg(path, crop, settings.jpeg_quality, record.path)
      x, y, width, height = (round(v, 2) for v in box)
      boxes.append({"frame": frame, "track": k, "x": x, "y": y, "width": width, "height": height})
      boxes[-1]["confidence"] = round(confidence, 4)
    written.append(
      {
        "track": k,
        "folder": subfolder,
        "frames_kept": track.num_frames,
        "frames_without_face": video.frames_sampled - track.num_frames,
      }
    )
  main = chosen[0] if chosen else None
  summary = {
    "record": dataclasses.asdict(record) | {"path": os.path.abspath(record.path)},
    "frames_sampled": video.frames_sampled,
    "frames_kept": sum(w["frames_kept"] for w in written),
    "frames_without_face": video.frames_sampled - (main.num_frames if main else 0),
    "frame_indices": main.frames if main else [],  # The main track's.
    "confidences": [round(c, 4) for c in main.confidences] if main else [],
    "written": written,
    "tracks": [
      track.describe()
      | {"track": k, "background": track.track_id in background}
      | {"written": any(w["track"] == k for w in written)}
      for k, track in enumerate(video.tracks)
    ],
  }
  table = pd.DataFrame(boxes, columns=list(BOXES_COLUMNS)).sort_values(["track", "frame"])
  table.to_csv(os.path.join(partial, BOXES_FILE), index=False)
  with open(os.path.join(partial, FACES_FILE), "w", encoding="utf-8") as file:
    json.dump(summary, file, indent=1)
  io_utils.replace_directory(partial, folder)
  kept = summary["frames_kept"]
  status = "done" if kept else "no_face"
  return VideoResult(record.video_id, status, kept, summary["frames_without_face"])


# One detector per worker process, built once by the pool's initializer.
_WORKER: dict[str, Any] = {}


def _init_worker(settings: PreparationSettings, threads: int) -> None:
  import tensorflow as tf

  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  _WORKER["detector"] = _make_detector(settings)


def _prepare_in_worker(
  record: VideoRecord, output_dir: str, settings: PreparationSettings
) -> VideoResult:
  return prepare_video(record, output_dir, settings, _WORKER["detector"])


def _check_settings(output_dir: str, settings: PreparationSettings) -> None:
  """Resuming with other settings would mix two kinds of crops in one data set."""
  path = os.path.join(output_dir, SETTINGS_FILE)
  wanted = json.loads(json.dumps(settings.to_dict()))
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as file:
      existing = json.load(file)
    if existing != wanted:
      differing = sorted(k for k in wanted if existing.get(k) != wanted[k])
      earlier = " (written before face tracking: crops of the most confident face per frame)"
      raise DataError(
        f"{output_dir} was prepared with other settings ({', '.join(differing)} differ; see "
        f"{path}{earlier if 'tracking' not in existing else ''}). Use the same settings to "
        "resume, or a new output folder."
      )
  else:
    io_utils.write_json(path, wanted)


def write_labels(output_dir: str, failures: list[tuple[str, str]]) -> tuple[int, int]:
  """Rebuilds labels.csv and skipped.csv from every faces.json; returns their row counts.

  One labels row per folder of crops: a video's, or with all_tracks each of its
  tracks' (`<video_id>/track<k>`), all with the video's label and group.
  """
  rows, skipped = [], []
  for folder, directories, files in os.walk(output_dir):
    directories[:] = sorted(d for d in directories if not d.endswith((".partial", ".old")))
    if FACES_FILE not in files:
      continue
    with open(os.path.join(folder, FACES_FILE), encoding="utf-8") as file:
      summary = json.load(file)
    record = summary["record"]
    # faces.json of an earlier version, without tracks: one folder, the video's own.
    written = summary.get("written", [{"track": "", "folder": ""} | summary])
    for entry in written if summary["frames_kept"] else []:
      rows.append(
        {
          "video": "/".join(p for p in (record["video_id"], entry["folder"]) if p),
          "label": record["label"],
          "group": record["group"],
          "split": record["split"],
          "dataset": record["dataset"],
          "method": record["method"],
          "frames_kept": entry["frames_kept"],
          "frames_without_face": entry["frames_without_face"],
          "source_path": record["path"],
          "track": entry["track"],
        }
      )
    if not summary["frames_kept"]:
      reason = f"no face in {summary['frames_sampled']} sampled frames"
      skipped.append({"source_path": record["path"], "reason": reason})
  skipped += [{"source_path": path, "reason": reason} for path, reason in failures]
  labels = pd.DataFrame(rows, columns=list(LABELS_COLUMNS)).sort_values("video")
  io_utils.write_text(os.path.join(output_dir, LABELS_FILE), labels.to_csv(index=False))
  skipped_table = pd.DataFrame(skipped, columns=["source_path", "reason"])
  io_utils.write_text(os.path.join(output_dir, SKIPPED_FILE), skipped_table.to_csv(index=False))
  return len(rows), len(skipped)


def prepare_dataset(
  catalogue: Catalogue,
  output_dir: str,
  settings: PreparationSettings,
  workers: int = 1,
  progress: bool = True,
  detector: face_tracking.AllFacesDetector | None = None,
) -> dict[str, Any]:
  """Prepares every video not done yet, `workers` processes in parallel; returns a summary.

  `detector` (one process only) replaces the MTCNN detector built from `settings`.
  """
  from tqdm import tqdm

  os.makedirs(output_dir, exist_ok=True)
  _check_settings(output_dir, settings)
  for warning in catalogue.warnings:
    logging.warning("%s", warning)
  todo = [r for r in catalogue.records if not is_done(output_dir, r.video_id)]
  already = len(catalogue.records) - len(todo)
  logging.info(
    "%d videos listed, %d already prepared, %d to do, %d workers.",
    len(catalogue.records),
    already,
    len(todo),
    workers,
  )
  start = time.time()
  results: list[VideoResult] = []
  bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo)
  if workers <= 1 or detector is not None:
    if todo and detector is None:
      detector = _make_detector(settings)
    for record in todo:
      results.append(prepare_video(record, output_dir, settings, detector))
      bar.update()
  else:
    threads = max(1, (os.cpu_count() or 1) // workers)
    with concurrent.futures.ProcessPoolExecutor(
      max_workers=workers,
      mp_context=multiprocessing.get_context("spawn"),
      initializer=_init_worker,
      initargs=(settings, threads),
    ) as pool:
      futures = [pool.submit(_prepare_in_worker, r, output_dir, settings) for r in todo]
      for future in concurrent.futures.as_completed(futures):
        results.append(future.result())
        bar.update()
  bar.close()
  elapsed = time.time() - start
  path_of = {r.video_id: r.path for r in todo}
  failures = [(path_of[r.video_id], r.message) for r in results if r.status == "failed"]
  failures += catalogue.skipped
  for path, message in failures:
    logging.warning("Skipped %s: %s", path, message)
  num_labelled, num_skipped = write_labels(output_dir, failures)
  summary = {
    "videos_listed": len(catalogue.records),
    "already_prepared": already,
    "prepared_now": sum(r.status in ("done", "no_face") for r in results),
    "without_face": sum(r.status == "no_face" for r in results),
    "failed": sum(r.status == "failed" for r in results),
    "frames_kept": sum(r.frames_kept for r in results),
    "frames_without_face": sum(r.frames_without_face for r in results),
    "seconds": round(elapsed, 1),
    "labels_csv_rows": num_labelled,
    "skipped_csv_rows": num_skipped,
  }
  logging.info(
    "Prepared %d videos in %.1f s (%.2f videos/s): %d without a face, %d failed; "
    "%d face crops kept, %d sampled frames without the main face. %s: %d rows; %s: %d.",
    summary["prepared_now"],
    elapsed,
    summary["prepared_now"] / max(elapsed, 1e-9),
    summary["without_face"],
    summary["failed"],
    summary["frames_kept"],
    summary["frames_without_face"],
    os.path.join(output_dir, LABELS_FILE),
    num_labelled,
    SKIPPED_FILE,
    num_skipped,
  )
  return summary
