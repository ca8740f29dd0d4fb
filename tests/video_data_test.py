"""Video decoding, frame sampling, face crops and the data-set adapters."""

import json
import os

import numpy as np
import pytest
from conftest import write_video

from common.errors import DataError
from input_pipeline import deepfake_data, face_detection, video_datasets, video_io


@pytest.mark.parametrize("extension", [".mp4", ".avi"])
def test_read_frames_samples_evenly_spaced_frames(tmp_path, extension):
  path = write_video(str(tmp_path / f"v{extension}"), 20)
  frames, indices = video_io.read_frames(path, 5)
  np.testing.assert_array_equal(indices, [2, 6, 10, 14, 18])
  assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
  # The decoded grey level is the frame's own (lossy codec: a few levels off).
  np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), 12 * indices, atol=6)


def test_read_frames_of_a_short_video_returns_every_frame(tmp_path):
  path = write_video(str(tmp_path / "short.mp4"), 3)
  frames, indices = video_io.read_frames(path, 8)
  np.testing.assert_array_equal(indices, [0, 1, 2])
  assert len(frames) == 3


def test_unreadable_videos_name_the_file(tmp_path):
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(b"this is not a video")
  with pytest.raises(video_io.VideoError, match="broken.mp4"):
    video_io.read_frames(str(broken), 4)
  with pytest.raises(video_io.VideoError, match="does not exist"):
    video_io.read_frames(str(tmp_path / "missing.mp4"), 4)


@pytest.mark.parametrize("available,wanted", [(10, 4), (4, 4), (3, 8), (300, 32), (1, 1)])
def test_evenly_spaced_indices(available, wanted):
  indices = video_io.evenly_spaced_indices(available, wanted)
  assert len(indices) == min(available, wanted)
  assert len(set(indices.tolist())) == len(indices)  # distinct
  assert indices.min() >= 0 and indices.max() < available
  assert np.all(np.diff(indices) > 0)


def test_scale_crop_is_square_resized_and_padded_at_the_border():
  image = np.full((100, 200, 3), 200, np.uint8)
  settings = face_detection.CropSettings("scale", scale=2.0, size=32)
  # A 20x40 box at the top-left corner: its 80x80 window leaves the frame.
  crop = face_detection.crop_face(image, (0, 0, 20, 40), settings)
  assert crop.shape == (32, 32, 3)
  assert crop[0, 0].max() == 0  # padded black outside the frame
  assert crop[-1, -1].min() == 200  # inside the frame
  assert face_detection.crop_window((50, 30, 20, 40), settings) == (20, 10, 100, 90)


def test_tight_crop_adds_the_margin_and_clips_to_the_frame():
  image = np.arange(100 * 200 * 3, dtype=np.int64).reshape(100, 200, 3).astype(np.uint8)
  settings = face_detection.CropSettings("tight", margin=0.25)
  crop = face_detection.crop_face(image, (100, 20, 40, 40), settings)
  np.testing.assert_array_equal(crop, image[10:70, 90:150])
  edge = face_detection.crop_face(image, (0, 80, 40, 40), settings)
  np.testing.assert_array_equal(edge, image[70:100, 0:50])


def test_bad_crop_settings_are_rejected():
  with pytest.raises(ValueError, match="crop policy"):
    face_detection.CropSettings("round")
  with pytest.raises(ValueError, match="scale=0.5"):
    face_detection.CropSettings("scale", scale=0.5)


# --- Adapters on tiny generated trees ---------------------------------------------------------


def touch(path) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "wb").close()
  return str(path)


def assert_groups_never_cross(catalogue: video_datasets.Catalogue):
  labels = np.array([r.label for r in catalogue.records])
  groups = np.array([r.group for r in catalogue.records], dtype=object)
  keep, held_out = deepfake_data.grouped_split(labels, groups, 0.3, seed=0)
  assert not set(groups[keep]) & set(groups[held_out])


def test_dfdc_metadata_and_test_labels(tmp_path):
  part = tmp_path / "dfdc_train_part_0"
  for name in ("real1.mp4", "fake1.mp4", "fake2.mp4", "real2.mp4", "orphan.mp4"):
    touch(part / name)
  metadata = {
    "real1.mp4": {"label": "REAL", "split": "train", "original": None},
    "fake1.mp4": {"label": "FAKE", "split": "train", "original": "real1.mp4"},
    "fake2.mp4": {"label": "FAKE", "split": "train", "original": "real1.mp4"},
    "real2.mp4": {"label": "REAL", "split": "train"},
    "orphan.mp4": {"label": "FAKE", "split": "train", "original": None},
    "gone.mp4": {"label": "FAKE", "split": "train", "original": "real2.mp4"},
  }
  (part / "metadata.json").write_text(json.dumps(metadata))
  test = tmp_path / "test_videos"
  touch(test / "t1.mp4")
  touch(test / "t2.mp4")
  (test / "labels.csv").write_text("filename,label\nt1.mp4,0\nt2.mp4,1\nt3.mp4,1\n")

  catalogue = video_datasets.load_catalogue("dfdc", str(tmp_path))
  by_id = {r.video_id: r for r in catalogue.records}
  assert sorted(by_id) == [
    "dfdc/dfdc_train_part_0/fake1",
    "dfdc/dfdc_train_part_0/fake2",
    "dfdc/dfdc_train_part_0/orphan",
    "dfdc/dfdc_train_part_0/real1",
    "dfdc/dfdc_train_part_0/real2",
    "dfdc/test_videos/t1",
    "dfdc/test_videos/t2",
  ]
  part_ids = "dfdc/dfdc_train_part_0/"
  assert by_id[part_ids + "fake1"].group == by_id[part_ids + "real1"].group == "dfdc:real1"
  assert by_id[part_ids + "fake2"].label == 1 and by_id[part_ids + "real2"].label == 0
  assert by_id[part_ids + "orphan"].group == "dfdc:orphan"  # null original: on its own
  assert by_id["dfdc/test_videos/t2"].split == "test" and by_id["dfdc/test_videos/t2"].label == 1
  assert by_id[part_ids + "real1"].split == ""  # train parts: the trainer splits
  skipped = [path for path, _ in catalogue.skipped]
  assert any(p.endswith("gone.mp4") for p in skipped)
  assert any(p.endswith("t3.mp4") for p in skipped)
  assert any("orphan.mp4" in w for w in catalogue.warnings)
  assert_groups_never_cross(catalogue)


def test_dfdc_bad_label_names_the_file_and_entry(tmp_path):
  touch(tmp_path / "p" / "a.mp4")
  (tmp_path / "p" / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "MAYBE"}}))
  with pytest.raises(DataError, match=r"metadata.json.*'a.mp4'.*REAL or FAKE"):
    video_datasets.dfdc(str(tmp_path))
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="no DFDC metadata.json"):
    video_datasets.dfdc(str(tmp_path / "empty"))
  with pytest.raises(DataError, match="does not exist"):
    video_datasets.dfdc(str(tmp_path / "missing"))


def make_ffpp(root) -> None:
  for vid in ("000", "001", "002", "003"):
    touch(root / "original_sequences/youtube/c23/videos" / f"{vid}.mp4")
  touch(root / "original_sequences/youtube/c40/videos/000.mp4")
  for name in ("000_001", "001_000", "002_003"):
    touch(root / "manipulated_sequences/Deepfakes/c23/videos" / f"{name}.mp4")
  touch(root / "manipulated_sequences/FaceSwap/c23/videos/003_002.mp4")
  touch(root / "original_sequences/actors/c23/videos/01__walk.mp4")
  touch(root / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walk__ABCD.mp4")


def test_faceforensics_groups_fakes_with_their_originals(tmp_path):
  make_ffpp(tmp_path)
  catalogue = video_datasets.faceforensics(str(tmp_path))
  by_id = {r.video_id: r for r in catalogue.records}
  assert len(by_id) == 10  # c23 only: 4 + 1 originals, 5 fakes
  group = {k.split("/")[-1]: r.group for k, r in by_id.items()}
  assert group["000"] == group["001"] == group["000_001"] == group["001_000"]
  assert group["002"] == group["003"] == group["002_003"] == group["003_002"]
  assert group["000"] != group["002"]
  assert group["01__walk"] == group["01_02__walk__ABCD"]
  assert by_id["ffpp/Deepfakes/c23/000_001"].label == 1
  assert by_id["ffpp/Deepfakes/c23/000_001"].method == "Deepfakes"
  assert by_id["ffpp/youtube/c23/000"].label == 0
  assert_groups_never_cross(catalogue)


def test_faceforensics_filters_and_official_splits(tmp_path):
  make_ffpp(tmp_path)
  splits = tmp_path / "splits"
  splits.mkdir()
  (splits / "train.json").write_text(json.dumps([["000", "001"]]))
  (splits / "val.json").write_text(json.dumps([["002", "003"]]))
  (splits / "test.json").write_text(json.dumps([]))
  catalogue = video_datasets.faceforensics(
    str(tmp_path), methods=("FaceSwap",), qualities=("c23", "c40"), splits_dir=str(splits)
  )
  ids = sorted(r.video_id for r in catalogue.records)
  assert "ffpp/FaceSwap/c23/003_002" in ids and not any("Deepfakes" in i for i in ids)
  assert "ffpp/youtube/c40/000" in ids and not any("actors" in i for i in ids)
  split = {r.video_id: r.split for r in catalogue.records}
  assert split["ffpp/youtube/c23/000"] == "train"
  assert split["ffpp/FaceSwap/c23/003_002"] == "validation"
  with pytest.raises(DataError, match="FF\\+\\+ method 'Face3Face'"):
    video_datasets.faceforensics(str(tmp_path), methods=("Face3Face",))
  with pytest.raises(DataError, match="not a FaceForensics"):
    video_datasets.faceforensics(str(tmp_path / "splits"))


def test_celeb_df_test_list_label_one_means_real(tmp_path):
  for rel in (
    "Celeb-real/id0_0000.mp4",
    "Celeb-real/id1_0000.mp4",
    "YouTube-real/00001.mp4",
    "Celeb-synthesis/id0_id1_0000.mp4",
    "Celeb-synthesis/id1_id0_0000.mp4",
  ):
    touch(tmp_path / rel)
  (tmp_path / "List_of_testing_videos.txt").write_text(
    "1 Celeb-real/id1_0000.mp4\n0 Celeb-synthesis/id1_id0_0000.mp4\n1 YouTube-real/00009.mp4\n"
  )
  catalogue = video_datasets.celeb_df(str(tmp_path))
  by_id = {r.video_id: r for r in catalogue.records}
  assert by_id["celebdf/Celeb-real/id1_0000"].split == "test"
  assert by_id["celebdf/Celeb-real/id1_0000"].label == 0
  assert by_id["celebdf/Celeb-synthesis/id1_id0_0000"].split == "test"
  assert by_id["celebdf/Celeb-synthesis/id1_id0_0000"].label == 1
  assert by_id["celebdf/Celeb-real/id0_0000"].split == ""
  assert by_id["celebdf/Celeb-synthesis/id0_id1_0000"].group == "celebdf:id0"
  assert by_id["celebdf/Celeb-real/id0_0000"].group == "celebdf:id0"
  assert [p for p, _ in catalogue.skipped] == [str(tmp_path / "YouTube-real/00009.mp4")]
  assert_groups_never_cross(catalogue)


def test_generic_csv_and_folders(tmp_path):
  touch(tmp_path / "clips/a.mp4")
  touch(tmp_path / "clips/b.avi")
  csv_path = tmp_path / "videos.csv"
  csv_path.write_text("path,label,group\nclips/a.mp4,REAL,g1\nclips/b.avi,1,g1\nclips/c.mp4,0,\n")
  catalogue = video_datasets.generic_csv(str(csv_path))
  assert [(r.video_id, r.label, r.group) for r in catalogue.records] == [
    ("csv/clips/a", 0, "g1"),
    ("csv/clips/b", 1, "g1"),
  ]
  assert catalogue.skipped[0][0].endswith("c.mp4")
  csv_path.write_text("video,label\nclips/a.mp4,0\n")
  with pytest.raises(DataError, match=r"missing column\(s\) \['path'\]"):
    video_datasets.generic_csv(str(csv_path))

  touch(tmp_path / "set/real/x/1.mp4")
  touch(tmp_path / "set/fake/2.mov")
  touch(tmp_path / "set/fake/notes.txt")
  folders = video_datasets.load_catalogue("folders", str(tmp_path / "set"))
  assert [(r.video_id, r.label) for r in folders.records] == [
    ("folders/real/x/1", 0),
    ("folders/fake/2", 1),
  ]
  with pytest.raises(DataError, match="expected real/ and fake/"):
    video_datasets.generic_folders(str(tmp_path / "clips"))


def test_rows_without_a_split_are_split_by_group(tmp_path):
  """DFDC/Celeb-DF style: only test rows carry a split; the rest become train/validation."""
  splits = [""] * 20 + ["test"] * 4
  videos = deepfake_data.Videos(
    names=[str(i) for i in range(24)],
    labels=np.array([i % 2 for i in range(24)], np.int32),
    groups=np.array([f"g{i // 2}" for i in range(24)], dtype=object),
    splits=splits,
    frames=np.zeros([24, 1, 2, 2, 3], np.uint8),
  )
  assigned = deepfake_data._split_unassigned(videos, 0.3, seed=0).splits
  assert assigned[20:] == ["test"] * 4
  assert set(assigned[:20]) == {"train", "validation"}
  train_groups = {videos.groups[i] for i in range(20) if assigned[i] == "train"}
  val_groups = {videos.groups[i] for i in range(20) if assigned[i] == "validation"}
  assert not train_groups & val_groups
