"""The face tracker: synthetic detection sequences, and drawn videos with a stand-in detector."""

import numpy as np
import pytest
from conftest import SquareDetector, write_drawn_video

from input_pipeline import face_tracking
from input_pipeline.face_detection import Face
from input_pipeline.face_tracking import TrackerSettings

SETTINGS = TrackerSettings(max_missed=3, min_track_frames=4)


def face(x, y, side, confidence=0.99):
  return Face((float(x), float(y), float(side), float(side)), confidence)


def xs(track):
  return [box[0] for box in track.boxes]


def test_crossing_faces_keep_their_identities():
  # A moves right, B moves left along nearly the same line; while they overlap
  # only the front face (A) is detected, as a covered face is not.
  detections = []
  for i in range(16):
    a, b = face(10 + 10 * i, 40, 30), face(160 - 10 * i, 44, 30, 0.95)
    detections.append([a] if abs(a.box[0] - b.box[0]) < 30 else [b, a])
  tracks = face_tracking.track_faces(detections, range(16), SETTINGS)
  assert len(tracks) == 2
  right, left = sorted(tracks, key=lambda t: t.boxes[0][0])
  assert right.num_frames == 16 and np.all(np.diff(xs(right)) > 0)
  assert left.num_frames == 14 and np.all(np.diff(xs(left)) < 0)  # hidden in frames 7, 8
  assert {box[1] for box in right.boxes} == {40.0} and {box[1] for box in left.boxes} == {44.0}


def test_a_face_survives_max_missed_frames_then_a_new_track_starts():
  def run(gap):
    hidden = range(5, 5 + gap)
    detections = [[] if i in hidden else [face(50 + i, 50, 40)] for i in range(20)]
    return face_tracking.track_faces(detections, range(20), SETTINGS)

  (one,) = run(gap=3)  # missed 3 frames: max_missed
  assert one.num_frames == 17 and one.frames[4:6] == [4, 8]
  first, second = run(gap=4)
  assert first.frames == [0, 1, 2, 3, 4] and second.frames[:2] == [9, 10]


def test_a_face_of_another_size_or_far_away_is_another_track():
  frames = list(range(6))
  near_same = [[face(100, 100, 40)] if i < 3 else [face(104, 100, 42)] for i in frames]
  assert len(face_tracking.track_faces(near_same, frames, SETTINGS)) == 1
  resized = [[face(100, 100, 40)] if i < 3 else [face(90, 90, 80)] for i in frames]
  assert len(face_tracking.track_faces(resized, frames, SETTINGS)) == 2  # 2x larger
  moved = [[face(100, 100, 40)] if i < 3 else [face(200, 100, 40)] for i in frames]
  assert len(face_tracking.track_faces(moved, frames, SETTINGS)) == 2  # 2.5 sizes away


def test_the_main_track_is_the_subject_not_a_small_static_face_in_the_background():
  # A printed face on the wall: detected in every frame, more confidently than
  # the person, who is missed in half the frames (turning, a hand in front).
  rng = np.random.default_rng(0)
  detections, frames = [], list(range(0, 320, 10))
  for k, _ in enumerate(frames):
    faces = [face(500, 60, 45, 0.999)]
    if k % 2 == 0 or k < 4:
      faces.append(face(200 + rng.normal(0, 8), 150 + rng.normal(0, 5), 120, 0.93))
    detections.append(faces)
  tracks = face_tracking.track_faces(detections, frames, SETTINGS)
  assert len(tracks) == 2
  photo = next(t for t in tracks if t.mean_size < 50)
  person = next(t for t in tracks if t.mean_size > 100)
  assert photo.num_frames == 32 and person.num_frames == 18
  assert face_tracking.background_tracks(tracks, SETTINGS) == {photo.track_id}
  assert face_tracking.main_track(tracks, SETTINGS) is person
  assert face_tracking.people_tracks(tracks, SETTINGS) == [person]
  assert face_tracking.rank_tracks(tracks, SETTINGS) == [person, photo]
  # Without the background rule, the larger total face size still picks the person.
  no_background = TrackerSettings(min_track_frames=4, background_size=0)
  assert face_tracking.main_track(tracks, no_background) is person
  assert face_tracking.people_tracks(tracks, no_background) == [person, photo]


def test_ranking_prefers_more_frames_then_the_larger_face():
  frames = list(range(10))
  two_people = [[face(10, 10, 50), face(200, 10, 50)] for _ in frames]
  tracks = face_tracking.track_faces(two_people, frames, SETTINGS)
  assert [t.track_id for t in face_tracking.rank_tracks(tracks, SETTINGS)] == [0, 1]  # a tie
  longer = [[face(10, 10, 50)] + ([face(200, 10, 50)] if i < 9 else []) for i in frames]
  tracks = face_tracking.track_faces(longer, frames, SETTINGS)
  assert face_tracking.main_track(tracks, SETTINGS).num_frames == 10
  larger = [[face(10, 10, 50), face(200, 10, 60)] for _ in frames]
  tracks = face_tracking.track_faces(larger, frames, SETTINGS)
  assert face_tracking.main_track(tracks, SETTINGS).mean_size == 60
  # Both people count; a third face of 2 frames is too short to be written on its own.
  short = [faces + ([face(400, 10, 55)] if i < 2 else []) for i, faces in enumerate(larger)]
  tracks = face_tracking.track_faces(short, frames, SETTINGS)
  assert [t.mean_size for t in face_tracking.people_tracks(tracks, SETTINGS)] == [60, 50]


def test_track_description():
  frames = [0, 10, 20, 40]
  boxes = [face(0, 0, 20, 0.9), face(2, 0, 20, 0.8), face(4, 0, 30, 0.7), face(8, 0, 30, 0.6)]
  (track,) = face_tracking.track_faces([[b] for b in boxes], frames, SETTINGS)
  assert track.frames == frames and track.num_frames == 4
  assert track.mean_size == pytest.approx(25) and track.mean_confidence == pytest.approx(0.75)
  assert track.boxes_by_frame()[20] == (4.0, 0.0, 30.0, 30.0)
  assert track.describe() == {
    "track": 0,
    "frames": 4,
    "first_frame": 0,
    "last_frame": 40,
    "mean_size": 25.0,
    "mean_confidence": 0.75,
  }
  # The box predicted at frame 60 follows the last velocity (0.2 px per frame).
  assert track.predicted_box(60) == pytest.approx((12.0, 0.0, 30.0, 30.0))


def test_incremental_tracker_returns_the_id_of_each_face():
  tracker = face_tracking.FaceTracker(SETTINGS)
  assert tracker.update(0, [face(0, 0, 20), face(100, 0, 20)]) == [0, 1]
  assert tracker.update(1, [face(101, 0, 20), face(1, 0, 20)]) == [1, 0]
  assert tracker.update(2, []) == []
  assert tracker.update(3, [face(300, 0, 20)]) == [2]
  assert [t.num_frames for t in tracker.tracks()] == [2, 2, 1]


def test_bad_settings_are_rejected():
  with pytest.raises(ValueError, match="max_missed >= 0"):
    TrackerSettings(max_missed=-1)
  with pytest.raises(ValueError, match="background_size < 1"):
    TrackerSettings(background_size=1.5)
  with pytest.raises(ValueError, match="2 detection lists for 3 frames"):
    face_tracking.track_faces([[], []], [0, 1, 2])


def drawn_scenes(num_frames=40):
  """A (bright) moves right; B moves left and passes behind A, hidden in frames 17 to 24;
  A vanishes in frames 30 and 31; C is a small static face in a corner."""
  scenes = []
  for i in range(num_frames):
    a, b = (4 + 3 * i, 40, 30, 230), (126 - 3 * i, 46, 30, 150)
    squares = [(140, 4, 12, 90), b]
    if i not in (30, 31):
      squares.append(a)
    scenes.append(squares)
  return scenes


@pytest.mark.parametrize("num_frames", [40, 20])
def test_drawn_video_with_crossing_disappearing_and_background_faces(tmp_path, num_frames):
  path = write_drawn_video(str(tmp_path / "drawn.mp4"), drawn_scenes())
  settings = TrackerSettings(max_missed=8, min_track_frames=4)
  result = face_tracking.track_video(path, SquareDetector(), num_frames, settings)
  assert result.frames_sampled == num_frames
  a, b, c = result.tracks  # ranked: the two people, then the background face
  assert np.all(np.diff(xs(a)) > 0) and np.all(np.diff(xs(b)) < 0)
  assert a.mean_confidence == pytest.approx(230 / 255) and a.num_frames >= num_frames - 2
  assert b.num_frames == num_frames * 32 // 40  # hidden behind A in 8 of 40 frames
  assert c.mean_size == pytest.approx(12, abs=1) and c.num_frames == num_frames
  assert face_tracking.people_tracks(result.tracks, settings) == [a, b]
  crops = result.crops(a, face_tracking.CropSettings("tight", margin=0.0))
  assert len(crops) == a.num_frames and crops[0].shape[:2] == (30, 30)
  assert abs(float(crops[0].mean()) - 230) < 20
