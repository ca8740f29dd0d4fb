"""Face preparation, video scoring and video-level evaluation on generated videos.

Generated videos hold no real faces, so most tests use `BrightFrameDetector`,
which "finds" a face in the middle of every frame brighter than a threshold,
or `SquareDetector`, which finds the grey squares of drawn videos; the MTCNN
detector itself runs on a blank video here and, when
`../shared/data/ffpp_sample` is present, on real FaceForensics++ faces.
"""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT, SquareDetector, write_drawn_video, write_video

from common.errors import DataError
from configs import deepfake as deepfake_config
from inference import export as export_lib
from inference import video_scoring
from input_pipeline import (
  deepfake_data,
  face_detection,
  face_preparation,
  face_tracking,
  video_datasets,
)
from keras_models import deepfake as deepfake_model

FFPP_SAMPLE = os.path.join(REPO_ROOT, "..", "shared", "data", "ffpp_sample")
SETTINGS = face_preparation.PreparationSettings(
  num_frames=4, crop=face_detection.CropSettings("scale", scale=1.2, size=16)
)


class BrightFrameDetector:
  """A face box in the middle of each frame whose mean level exceeds 30."""

  def detect_all(self, images):
    faces = []
    for image in images:
      height, width = image.shape[:2]
      bright = image.mean() > 30
      box = (width / 4, height / 4, width / 2, height / 2)
      faces.append([face_detection.Face(box, 0.99)] if bright else [])
    return faces


@pytest.fixture
def video_tree(tmp_path):
  """real/{r1,r2}.mp4 and fake/f1.mp4 (12 frames), fake/dark.mp4 (2 dark frames), a broken file."""
  root = tmp_path / "videos"
  write_video(str(root / "real/r1.mp4"), 12)
  write_video(str(root / "real/r2.mp4"), 12)
  write_video(str(root / "fake/f1.mp4"), 12)
  write_video(str(root / "fake/dark.mp4"), 2)
  (root / "fake/broken.mp4").write_bytes(b"\x00" * 100)
  return root


def prepare(source, output, settings=SETTINGS, detector=None):
  catalogue = video_datasets.load_catalogue("folders", str(source))
  return face_preparation.prepare_dataset(
    catalogue, str(output), settings, progress=False, detector=detector or BrightFrameDetector()
  )


def test_prepare_writes_faces_labels_and_skips(video_tree, tmp_path):
  output = tmp_path / "faces"
  summary = prepare(video_tree, output)
  assert summary["prepared_now"] == 4 and summary["failed"] == 1
  assert summary["without_face"] == 1

  labels = pd.read_csv(output / "labels.csv", keep_default_na=False)
  assert list(labels.columns) == list(face_preparation.LABELS_COLUMNS)
  assert sorted(labels.video) == ["folders/fake/f1", "folders/real/r1", "folders/real/r2"]
  row = labels.set_index("video").loc["folders/real/r1"]
  # 4 frames sampled at 1, 4, 7, 10 (levels 12, 48, 84, 120): the first is too dark.
  assert (row.frames_kept, row.frames_without_face, row.label) == (3, 1, 0)
  assert sorted(os.listdir(output / "folders/real/r1")) == [
    "000004.jpg",
    "000007.jpg",
    "000010.jpg",
    "faces.csv",
    "faces.json",
  ]
  boxes = pd.read_csv(output / "folders/real/r1/faces.csv")
  assert list(boxes.columns) == list(face_preparation.BOXES_COLUMNS)
  assert boxes.frame.tolist() == [4, 7, 10] and set(boxes.track) == {0}
  assert boxes[["x", "y", "width", "height"]].iloc[0].tolist() == [16, 12, 32, 24]
  skipped = pd.read_csv(output / "skipped.csv")
  reasons = dict(zip(skipped.source_path.map(os.path.basename), skipped.reason, strict=True))
  assert reasons["dark.mp4"] == "no face in 2 sampled frames"
  assert "broken.mp4" in reasons["broken.mp4"]

  # What the trainer reads: the CSV's folder is the frames root.
  videos = deepfake_data.read_labels_csv(str(output / "labels.csv"))
  assert [len(p) for p in videos.frame_paths] == [3, 3, 3]
  assert video_scoring.read_face_image(videos.frame_paths[0][0]).shape == (16, 16, 3)


def test_prepare_resumes_and_keeps_its_settings(video_tree, tmp_path):
  output = tmp_path / "faces"
  prepare(video_tree, output)
  again = prepare(video_tree, output)
  assert again["already_prepared"] == 4 and again["prepared_now"] == 0
  assert again["failed"] == 1  # undecodable videos are retried, not marked done

  # A crash mid-video leaves only a .partial folder: the video is redone.
  os.rename(output / "folders/real/r2", output / "folders/real/r2.partial")
  resumed = prepare(video_tree, output)
  assert resumed["prepared_now"] == 1 and resumed["already_prepared"] == 3
  assert not (output / "folders/real/r2.partial").exists()
  assert len(pd.read_csv(output / "labels.csv")) == 3

  other = face_preparation.PreparationSettings(num_frames=8, crop=SETTINGS.crop)
  with pytest.raises(DataError, match="num_frames differ"):
    prepare(video_tree, output, other)


def test_mtcnn_runs_in_batches_and_finds_no_face_in_a_blank_video(tmp_path):
  path = write_video(str(tmp_path / "blank.mp4"), 6, size=(96, 64))
  detector = face_detection.FaceDetector(face_detection.DetectorSettings(max_side=48, batch_size=4))
  faces = face_detection.extract_video_faces(path, detector, 6, SETTINGS.crop)
  assert faces.frames_sampled == 6 and faces.crops == [] and faces.frames_without_face == 6


@pytest.mark.skipif(not os.path.isdir(FFPP_SAMPLE), reason="../shared/data/ffpp_sample absent")
def test_mtcnn_finds_the_face_in_real_faceforensics_videos(tmp_path):
  catalogue = video_datasets.faceforensics(FFPP_SAMPLE)
  assert len(catalogue.records) == 6
  detector = face_detection.FaceDetector()
  for record in catalogue.records[:2]:
    faces = face_detection.extract_video_faces(record.path, detector, 4, SETTINGS.crop)
    assert len(faces.crops) >= 3, record.path
    assert min(faces.confidences) >= 0.9
    assert faces.crops[0].shape == (16, 16, 3)
  # Tracked: the presenter of 004.mp4 is one main track, the only person.
  path = os.path.join(FFPP_SAMPLE, "original_sequences/youtube/c23/videos/004.mp4")
  settings = face_tracking.TrackerSettings()
  video = face_tracking.track_video(path, detector, 8, settings)
  main = video.tracks[0]
  assert main.num_frames == 8 and 100 < main.mean_size < 200 and main.mean_confidence > 0.99
  assert face_tracking.people_tracks(video.tracks, settings) == [main]
  assert all(600 < x < 900 and 50 < y < 250 for x, y, _, _ in main.boxes)


@pytest.mark.parametrize(
  "available,frames,max_clips,expected",
  [
    (8, 2, 4, [[0, 4], [1, 5], [2, 6], [3, 7]]),
    (8, 2, 2, [[1, 5], [3, 7]]),
    (3, 4, 4, [[0, 1, 1, 2]]),  # short: one clip repeating faces
    (5, 2, 4, [[0, 3], [1, 4]]),
  ],
)
def test_clip_indices_interleave_over_the_whole_video(available, frames, max_clips, expected):
  np.testing.assert_array_equal(video_scoring.clip_indices(available, frames, max_clips), expected)


def test_aggregations():
  p = np.array([0.2, 0.4, 0.9])
  assert video_scoring.aggregate(p, "mean") == pytest.approx(0.5)
  assert video_scoring.aggregate(p, "median") == pytest.approx(0.4)
  assert video_scoring.aggregate(p, "max") == pytest.approx(0.9)
  assert video_scoring.aggregate(np.array([0.5, 0.5]), "logit_mean") == pytest.approx(0.5)
  assert video_scoring.aggregate(np.zeros([0]), "mean") == video_scoring.NO_FACE_PROBABILITY
  with pytest.raises(ValueError, match="aggregation 'mode'"):
    video_scoring.aggregate(p, "mode")


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
  """An untrained tiny deepfake detector saved as .keras and exported."""
  config = deepfake_config.get_config("tiny")
  model = deepfake_model.build_model(config)
  folder = tmp_path_factory.mktemp("detector")
  checkpoint = str(folder / "detector.keras")
  model.save(checkpoint)
  export = export_lib.export_detector(model, str(folder / "export"), config.data.image_size)
  return checkpoint, export


def test_scoring_checkpoint_and_export_agree_and_mark_missing_faces(
  video_tree, tmp_path, tiny_detector
):
  checkpoint, export = tiny_detector
  paths = [str(video_tree / p) for p in ("real/r1.mp4", "fake/dark.mp4", "fake/broken.mp4")]
  scores = {}
  for name, model_path in (("checkpoint", checkpoint), ("export", export)):
    scorer = video_scoring.ClipScorer(model_path)
    assert scorer.num_frames == 2
    rows = video_scoring.score_videos(
      paths, scorer, BrightFrameDetector(), SETTINGS.crop, num_frames=8, max_clips=4
    )
    scores[name] = rows
  rows = scores["checkpoint"]
  assert [r["status"] for r in rows] == ["ok", "no_face", "unreadable"]
  assert rows[0]["faces"] == 6 and rows[0]["clips"] == 3  # frames 0 and 1 are dark
  assert 0 < rows[0]["probability_fake"] < 1
  assert rows[1]["probability_fake"] == rows[2]["probability_fake"] == 0.5
  assert scores["export"][0]["probability_fake"] == pytest.approx(
    rows[0]["probability_fake"], abs=1e-5
  )


def test_evaluate_prepared_videos_and_the_command(video_tree, tmp_path, tiny_detector):
  checkpoint, _ = tiny_detector
  output = tmp_path / "faces"
  prepare(video_tree, output)
  videos = deepfake_data.read_labels_csv(str(output / "labels.csv"))
  result = video_scoring.evaluate_videos(
    videos, video_scoring.ClipScorer(checkpoint), max_clips=4, aggregation="mean"
  )
  assert result["video"]["count"] == 3 and result["clip"]["count"] == 3  # 3 faces: 1 clip each
  for level in ("clip", "video"):
    assert set(result[level]) == {"count", "roc_auc", "log_loss", "accuracy", "balanced_accuracy"}
    assert 0 <= result[level]["roc_auc"] <= 1 and result[level]["log_loss"] > 0

  # A CSV without a split column needs --split=all.
  with pytest.raises(DataError, match="no split column; use --split=all"):
    video_scoring.select_split(videos, "test", "labels.csv")
  command = [sys.executable, "-m", "tools.evaluate_videos", f"--model={checkpoint}"]
  command += [f"--labels_csv={output / 'labels.csv'}", f"--output={tmp_path / 'eval'}"]
  done = subprocess.run(command + ["--split=all"], cwd=REPO_ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["video"]["count"] == 3
  assert metrics["video"]["roc_auc"] == pytest.approx(result["video"]["roc_auc"])
  assert len(pd.read_csv(tmp_path / "eval" / "video_scores.csv")) == 3

  # A corrupt prepared frame names the file.
  bad = videos.frame_paths[1][0]
  with open(bad, "wb") as file:
    file.write(b"not a jpeg")
  with pytest.raises(DataError, match=os.path.basename(bad)):
    video_scoring.evaluate_videos(videos, video_scoring.ClipScorer(checkpoint), 4, "mean")


def test_prepare_command_with_mtcnn(video_tree, tmp_path):
  output = tmp_path / "faces"
  command = [sys.executable, "-m", "tools.prepare_faces", "--dataset=folders"]
  command += [f"--source={video_tree}", f"--output={output}", "--num_frames=2", "--noprogress"]
  done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "Prepared 4 videos" in done.stderr
  assert pd.read_csv(output / "labels.csv").empty  # grey frames hold no face
  assert len(pd.read_csv(output / "skipped.csv")) == 5
  assert keras.__version__  # the command ran beside the Keras the tests use


TRACK_SETTINGS = face_preparation.PreparationSettings(
  num_frames=12,
  crop=face_detection.CropSettings("tight", margin=0.0),
  tracking=face_tracking.TrackerSettings(min_track_frames=4),
)


@pytest.fixture
def drawn_tree(tmp_path):
  """real/wall.mp4: a person (grey, moving, missed in frames 3 and 7) and a small, brighter
  (more confident) static face on the wall in every frame; fake/pair.mp4: two people and
  the same wall face."""
  root = tmp_path / "drawn"
  wall, pair = [], []
  for i in range(12):
    photo, person = (140, 4, 12, 230), (20 + 2 * i, 50, 36, 150)
    wall.append([photo] + ([] if i in (3, 7) else [person]))
    pair.append([photo, person, (100 - i, 52, 34, 90)])
  write_drawn_video(str(root / "real/wall.mp4"), wall)
  write_drawn_video(str(root / "fake/pair.mp4"), pair)
  return root


def test_prepare_crops_the_main_track_not_a_background_face(drawn_tree, tmp_path):
  output = tmp_path / "faces"
  summary = prepare(drawn_tree, output, TRACK_SETTINGS, SquareDetector())
  assert summary["prepared_now"] == 2 and summary["frames_kept"] == 10 + 12
  boxes = pd.read_csv(output / "folders/real/wall/faces.csv")
  assert boxes.frame.tolist() == [i for i in range(12) if i not in (3, 7)]
  assert set(boxes.track) == {0} and set(boxes.width) == {36} and set(boxes.y) == {50}
  np.testing.assert_allclose(boxes.x, 20 + 2 * boxes.frame)
  assert set(boxes.confidence.round(4)) == {round(150 / 255, 4)}
  crops = sorted(p for p in os.listdir(output / "folders/real/wall") if p.endswith(".jpg"))
  assert len(crops) == 10
  faces = json.loads((output / "folders/real/wall/faces.json").read_text())
  assert [(t["frames"], t["background"], t["written"]) for t in faces["tracks"]] == [
    (10, False, True),
    (12, True, False),
  ]
  labels = pd.read_csv(output / "labels.csv")
  assert labels.video.tolist() == ["folders/fake/pair", "folders/real/wall"]
  assert labels.track.tolist() == [0, 0] and labels.frames_without_face.tolist() == [0, 2]


def test_prepare_all_tracks_writes_a_folder_per_person(drawn_tree, tmp_path):
  output = tmp_path / "faces"
  settings = dataclasses.replace(TRACK_SETTINGS, all_tracks=True)
  prepare(drawn_tree, output, settings, SquareDetector())
  pair = output / "folders/fake/pair"
  assert sorted(os.listdir(pair)) == ["faces.csv", "faces.json", "track0", "track1"]
  assert len(os.listdir(pair / "track0")) == len(os.listdir(pair / "track1")) == 12
  boxes = pd.read_csv(pair / "faces.csv")
  assert boxes.groupby("track").width.unique().to_dict() == {0: [36], 1: [34]}
  labels = pd.read_csv(output / "labels.csv", keep_default_na=False)
  assert labels.video.tolist() == [
    "folders/fake/pair/track0",
    "folders/fake/pair/track1",
    "folders/real/wall/track0",  # the wall face is background: not written
  ]
  assert labels.label.tolist() == [1, 1, 0] and labels.track.tolist() == [0, 1, 0]
  assert labels.group.tolist()[0] == labels.group.tolist()[1]
  # The trainer reads the track folders as videos; a grouped split keeps them together.
  videos = deepfake_data.read_labels_csv(str(output / "labels.csv"))
  assert [len(p) for p in videos.frame_paths] == [12, 12, 10]
  assert videos.groups[0] == videos.groups[1]


def test_resuming_a_folder_prepared_before_tracking_is_refused(video_tree, tmp_path):
  output = tmp_path / "faces"
  prepare(video_tree, output)
  settings_file = output / "preparation.json"
  earlier = json.loads(settings_file.read_text())
  del earlier["tracking"], earlier["all_tracks"]
  settings_file.write_text(json.dumps(earlier))
  with pytest.raises(DataError, match="all_tracks, tracking differ.*before face tracking"):
    prepare(video_tree, output)
  # Its labels.csv is rebuilt from the earlier faces.json as before.
  faces_json = output / "folders/real/r1/faces.json"
  summary = json.loads(faces_json.read_text())
  del summary["written"], summary["tracks"]
  faces_json.write_text(json.dumps(summary))
  face_preparation.write_labels(str(output), [])
  labels = pd.read_csv(output / "labels.csv", keep_default_na=False).set_index("video")
  assert labels.loc["folders/real/r1"].frames_kept == 3
  assert labels.loc["folders/real/r1"].track == ""


class MeanLevelScorer:
  """A stand-in for `ClipScorer` whose "probability of fake" is a clip's mean level / 255."""

  num_frames, frame_size = 2, None

  def __call__(self, clips):
    return clips.mean(axis=(1, 2, 3, 4)) / 255


def test_score_videos_scores_each_person_and_takes_the_max(drawn_tree):
  scorer = MeanLevelScorer()
  paths = [str(drawn_tree / "fake/pair.mp4"), str(drawn_tree / "real/wall.mp4")]
  crop, tracking = TRACK_SETTINGS.crop, TRACK_SETTINGS.tracking

  def score(tracks):
    return video_scoring.score_videos(
      paths, scorer, SquareDetector(), crop, 12, 4, "mean", tracks=tracks, tracking=tracking
    )

  pair, wall = score("all")
  assert pair["rule"] == "max_over_tracks" and pair["status"] == "ok"
  assert (pair["tracks"], pair["tracks_scored"], pair["faces"], pair["clips"]) == (3, 2, 24, 8)
  assert (pair["track0_faces"], pair["track1_faces"]) == (12, 12)
  assert "track2_faces" not in pair  # the small wall face is background
  track_probabilities = [pair["track0_probability"], pair["track1_probability"]]
  assert pair["probability_fake"] == max(track_probabilities)
  assert track_probabilities == pytest.approx([150 / 255, 90 / 255], abs=0.03)
  assert (wall["tracks"], wall["tracks_scored"], wall["track0_faces"]) == (2, 1, 10)

  main_pair, _ = score("main")
  assert main_pair["rule"] == "main_track" and main_pair["tracks_scored"] == 1
  assert main_pair["probability_fake"] == pytest.approx(pair["track0_probability"])
  old_pair, old_wall = score("none")  # the most confident face of each frame: the wall face
  assert old_pair["rule"] == "most_confident_face_per_frame" and old_wall["faces"] == 12
  assert not any(key.startswith("track0") for key in old_pair)

  table = video_scoring.score_table([wall, pair])
  assert list(table.columns[-4:]) == [
    "track0_faces",
    "track0_probability",
    "track1_faces",
    "track1_probability",
  ]
  assert np.isnan(table.track1_probability[0])
  with pytest.raises(ValueError, match="tracks='some'"):
    video_scoring.score_videos(paths, scorer, SquareDetector(), crop, tracks="some")


def test_evaluate_combines_the_tracks_of_a_video(drawn_tree, tmp_path):
  output = tmp_path / "faces"
  prepare(
    drawn_tree, output, dataclasses.replace(TRACK_SETTINGS, all_tracks=True), SquareDetector()
  )
  labels_csv = str(output / "labels.csv")
  videos = deepfake_data.read_labels_csv(labels_csv)
  sources = video_scoring.source_videos(labels_csv, videos.names)
  assert sources == (["folders/fake/pair"] * 2 + ["folders/real/wall"], ["0", "1", "0"])
  scorer = MeanLevelScorer()
  per_row = video_scoring.evaluate_videos(videos, scorer, 4, "mean")
  combined = video_scoring.evaluate_videos(videos, scorer, 4, "mean", sources)
  assert per_row["video"]["count"] == 3 and combined["video"]["count"] == 2
  assert combined["clip"] == per_row["clip"]
  pair = combined["videos"][0]
  assert (pair["video"], pair["tracks"], pair["label"]) == ("folders/fake/pair", 2, 1)
  row_probabilities = [r["probability_fake"] for r in per_row["videos"][:2]]
  assert [pair["track0_probability"], pair["track1_probability"]] == row_probabilities
  assert pair["probability_fake"] == max(row_probabilities) == row_probabilities[0]
  assert row_probabilities == pytest.approx([150 / 255, 90 / 255], abs=0.03)
