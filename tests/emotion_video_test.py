"""Emotion on videos (inference.emotion_video, tools.predict_emotion --video) on drawn videos.

Drawn squares are no faces MTCNN would find, so the library tests use the
`SquareDetector` stand-in; the command runs MTCNN on a grey video (no face).
"""

import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT, SquareDetector, write_drawn_video, write_video

from common.errors import DataError
from common.figures import PNG_MAGIC
from common.labels import EMOTION_CLASSES
from inference import emotion_inference, emotion_video
from input_pipeline.face_detection import CropSettings
from input_pipeline.face_tracking import TrackerSettings

CROP = CropSettings("scale", scale=1.3, size=32)
TRACKING = TrackerSettings(max_missed=4)
COLUMNS = ["frame", "time_s", "track", "status", "x", "y", "width", "height", "confidence"]
COLUMNS += ["emotion", "probability"] + [f"p_{name}" for name in EMOTION_CLASSES]


@pytest.fixture(scope="module")
def classifier(tiny_model):
  return emotion_inference.Classifier(tiny_model[1])


@pytest.fixture(scope="module")
def two_people(tmp_path_factory):
  """20 frames at 10 fps, 160x120: A (bright) moves right and is missed in frames 8 and 9,
  B moves left below it."""
  scenes = []
  for i in range(20):
    squares = [(110 - 3 * i, 70, 34, 150)]
    if i not in (8, 9):
      squares.append((10 + 4 * i, 10, 36, 230))
    scenes.append(squares)
  return write_drawn_video(str(tmp_path_factory.mktemp("videos") / "two.mp4"), scenes)


def run(videos, classifier, output, **settings):
  settings = emotion_video.VideoSettings(progress=False, chunk_frames=4, **settings)
  return emotion_video.predict_videos(
    videos, classifier, SquareDetector(), CROP, EMOTION_CLASSES, str(output), TRACKING, settings
  )


def read_video(path):
  capture = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(frame)
  fps, width, height = (capture.get(p) for p in (5, 3, 4))
  capture.release()
  return np.stack(frames), fps, (int(width), int(height))


def test_video_outputs_tracks_and_smoothing(two_people, classifier, tmp_path):
  videos = emotion_video.expand_videos([two_people])
  assert videos == [emotion_video.VideoInput(two_people, "two")]
  (summary,) = run(videos, classifier, tmp_path / "raw", smoothing=0.0)
  assert summary["status"] == "ok" and summary["frames"] == summary["frames_processed"] == 20
  assert (summary["faces"], summary["tracks"], summary["fps"]) == (38, 2, 10.0)
  (smoothed_summary,) = run(videos, classifier, tmp_path / "out", smoothing=0.5)
  assert smoothed_summary["faces"] == 38

  rows = pd.read_csv(tmp_path / "out" / "two.csv")
  assert list(rows.columns) == COLUMNS
  assert set(rows.status) == {"ok"} and set(rows.track) == {0, 1}
  a, b = (rows[rows.track == k] for k in (0, 1))
  assert a.frame.tolist() == [i for i in range(20) if i not in (8, 9)]  # one track across the gap
  assert np.all(np.diff(a.x) > 0) and np.all(np.diff(b.x) < 0) and len(b) == 20
  np.testing.assert_allclose(rows.time_s, rows.frame / 10)
  assert rows.confidence[rows.track == 0].round(3).unique().tolist() == [round(230 / 255, 3)]
  p_columns = [f"p_{name}" for name in EMOTION_CLASSES]
  np.testing.assert_allclose(rows[p_columns].sum(axis=1), 1, atol=1e-5)
  assert (rows.emotion == [EMOTION_CLASSES[i] for i in rows[p_columns].values.argmax(1)]).all()

  # Smoothing per track: p_t = 0.5 p_(t-1) + 0.5 raw_t, raw from the unsmoothed run.
  raw = pd.read_csv(tmp_path / "raw" / "two.csv")
  for track in (0, 1):
    raw_p = raw[raw.track == track][p_columns].values
    expected = [raw_p[0]]
    for p in raw_p[1:]:
      expected.append(0.5 * expected[-1] + 0.5 * p)
    np.testing.assert_allclose(rows[rows.track == track][p_columns].values, expected, atol=1e-6)

  frames, fps, size = read_video(str(tmp_path / "out" / "two_annotated.mp4"))
  source, _, _ = read_video(two_people)
  assert (len(frames), fps, size) == (20, 10.0, (160, 120))
  # Boxes and captions are drawn: the annotated frames differ from the input around the faces.
  assert np.abs(frames.astype(int) - source.astype(int)).mean() > 1
  timeline = tmp_path / "out" / "two_timeline.png"
  assert timeline.read_bytes()[:8] == PNG_MAGIC
  summary_table = pd.read_csv(tmp_path / "out" / emotion_video.SUMMARY_CSV)
  assert summary_table.status.tolist() == ["ok"] and summary_table.frames.tolist() == [20]


def test_every_nth_frame_holds_the_boxes_between(two_people, classifier, tmp_path):
  (summary,) = run(
    emotion_video.expand_videos([two_people]), classifier, tmp_path, every=3, max_frames=15
  )
  assert (summary["frames"], summary["frames_processed"]) == (15, 5)
  rows = pd.read_csv(tmp_path / "two.csv")
  assert sorted(set(rows.frame)) == [0, 3, 6, 9, 12]
  assert set(rows[rows.frame == 9].track) == {1}  # A is missed in frame 9
  frames, _, _ = read_video(str(tmp_path / "two_annotated.mp4"))
  source, _, _ = read_video(two_people)
  assert len(frames) == 15
  # Frame 1 is not processed: it carries frame 0's boxes, not a bare copy of the input.
  assert np.abs(frames[1].astype(int) - source[1].astype(int)).mean() > 1


def test_unreadable_and_faceless_videos_are_reported(tmp_path, classifier):
  write_video(str(tmp_path / "in" / "grey.mp4"), 5)
  (tmp_path / "in" / "broken.mp4").write_bytes(b"not a video")
  videos = emotion_video.expand_videos([str(tmp_path / "in")])
  assert [v.name for v in videos] == ["in/broken", "in/grey"]
  out = tmp_path / "out"
  broken, faceless = run(videos, classifier, out)
  assert broken["status"] == "unreadable" and faceless["status"] == "no_face"
  assert not list((out / "in").glob("broken*"))
  rows = pd.read_csv(out / "in" / "grey.csv")
  assert list(rows.columns) == COLUMNS and rows.status.tolist() == ["no_face"]
  assert read_video(str(out / "in" / "grey_annotated.mp4"))[0].shape[0] == 5
  assert (out / "in" / "grey_timeline.png").read_bytes()[:8] == PNG_MAGIC
  table = pd.read_csv(out / emotion_video.SUMMARY_CSV)
  assert table.status.tolist() == ["unreadable", "no_face"]


def test_inputs_webcams_and_settings(tmp_path):
  assert emotion_video.expand_videos(["0"]) == [emotion_video.VideoInput(0, "webcam0")]
  with pytest.raises(DataError, match="no webcam at index 97"):
    emotion_video.open_capture(97)
  with pytest.raises(FileNotFoundError, match="neither a file, a folder nor a webcam"):
    emotion_video.expand_videos([str(tmp_path / "missing.mp4")])
  a = write_video(str(tmp_path / "a" / "clip.mp4"), 2)
  b = write_video(str(tmp_path / "b" / "clip.mp4"), 2)
  with pytest.raises(ValueError, match="both write outputs named 'clip'"):
    emotion_video.expand_videos([a, b])
  with pytest.raises(ValueError, match="smoothing=1.0"):
    emotion_video.VideoSettings(smoothing=1.0)
  np.testing.assert_allclose(
    emotion_video.smooth(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.75), [0.75, 0.25]
  )


def test_the_command_on_a_video(tmp_path, tiny_model):
  video = write_video(str(tmp_path / "grey.mp4"), 4)
  command = [sys.executable, "-m", "tools.predict_emotion", f"--model={tiny_model[2]}"]
  command += [f"--output={tmp_path / 'out'}", "--noprogress"]
  done = subprocess.run(
    command + [f"--video={video}", "--every=2"], cwd=REPO_ROOT, capture_output=True, text=True
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert "no face found in 2 processed frames" in done.stderr
  assert "frames/s" in done.stderr
  assert pd.read_csv(tmp_path / "out" / "grey.csv").status.tolist() == ["no_face"]
  assert os.path.isfile(tmp_path / "out" / "grey_annotated.mp4")
  both = subprocess.run(
    command + [f"--video={video}", f"--images={video}"], cwd=REPO_ROOT, capture_output=True
  )
  assert both.returncode != 0 and b"Give either --images or --video" in both.stderr


class InterruptedDetector(SquareDetector):
  """Ctrl-C while the second chunk is being detected, as a user ends a webcam stream."""

  calls = 0

  def detect_all(self, images):
    self.calls += 1
    if self.calls == 2:
      raise KeyboardInterrupt
    return super().detect_all(images)


def test_ctrl_c_finishes_the_outputs_of_the_frames_written(two_people, classifier, tmp_path):
  settings = emotion_video.VideoSettings(progress=False, chunk_frames=4)
  video = emotion_video.expand_videos([two_people])[0]
  summary = emotion_video.predict_video(
    video,
    classifier,
    InterruptedDetector(),
    CROP,
    EMOTION_CLASSES,
    str(tmp_path),
    TRACKING,
    settings,
  )
  assert (summary["status"], summary["frames"], summary["faces"]) == ("ok", 4, 8)
  assert len(read_video(str(tmp_path / "two_annotated.mp4"))[0]) == 4
  assert pd.read_csv(tmp_path / "two.csv").frame.max() == 3
  assert (tmp_path / "two_timeline.png").is_file()
