"""Deepfake data: labels CSV, grouped split, clip sampling, class weights, synthetic clips."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from common.errors import DataError
from configs import deepfake as deepfake_config
from input_pipeline import deepfake_clips, deepfake_data, synthetic_clips


def _write_frames(root, video, count, size=8):
  folder = os.path.join(root, video)
  os.makedirs(folder, exist_ok=True)
  for i in range(count):
    Image.fromarray(np.full((size, size, 3), 10 * i, np.uint8)).save(
      os.path.join(folder, f"{i:03d}.jpg")
    )


def test_labels_csv_parses_labels_groups_and_frames(tmp_path):
  _write_frames(tmp_path, "a", 3)
  _write_frames(tmp_path, "b", 2)
  (tmp_path / "labels.csv").write_text("video,label,group\na,REAL,x\nb,fake,\n")
  videos = deepfake_data.read_labels_csv(str(tmp_path / "labels.csv"))
  assert videos.labels.tolist() == [0, 1]
  assert videos.groups.tolist() == ["x", "b"]  # an empty group is the video itself
  assert videos.frame_counts().tolist() == [3, 2]
  assert videos.frame_paths[0][0].endswith(os.path.join("a", "000.jpg"))
  assert videos.splits is None


@pytest.mark.parametrize(
  "csv,message",
  [
    ("video\na\n", r"missing column\(s\) \['label'\]"),
    ("video,label\nmissing,0\n", r"line 2: frames folder .*missing' of video 'missing' does not"),
    ("video,label\na,maybe\n", r"line 2: label 'maybe' is not one of 0, 1, REAL, FAKE"),
    ("video,label,split\na,0,dev\n", r"line 2: split 'dev'"),
    ("video,label\nempty,0\n", r"line 2: frames folder .*empty' holds no image"),
  ],
)
def test_bad_labels_csv_is_named(tmp_path, csv, message):
  _write_frames(tmp_path, "a", 2)
  os.makedirs(tmp_path / "empty")
  (tmp_path / "labels.csv").write_text(csv)
  with pytest.raises(DataError, match=message):
    deepfake_data.read_labels_csv(str(tmp_path / "labels.csv"))


def test_grouped_split_never_leaks_a_group_and_is_stratified():
  groups = np.repeat(np.arange(60), 3)  # an original and two fakes per group
  labels = np.tile([0, 1, 1], 60)
  keep, held_out = deepfake_data.grouped_split(labels, groups, 0.3, seed=0)
  assert not set(groups[keep]) & set(groups[held_out])
  assert len(keep) + len(held_out) == len(labels)
  assert 0.25 <= len(held_out) / len(labels) <= 0.4
  assert abs(labels[held_out].mean() - 2 / 3) < 0.05
  again, _ = deepfake_data.grouped_split(labels, groups, 0.3, seed=0)
  np.testing.assert_array_equal(keep, again)


def test_subset_keeps_whole_groups():
  groups = np.repeat(np.arange(40), 2)
  videos = deepfake_data.Videos(
    [str(i) for i in range(80)],
    np.tile([0, 1], 40),
    groups,
    frames=np.zeros((80, 1, 1, 1, 3), np.uint8),
  )
  subset = deepfake_data.take_subset(videos, 0.25, seed=0)
  assert len(subset) == 20
  assert all(np.sum(subset.groups == g) == 2 for g in set(subset.groups.tolist()))


def test_class_weights_are_balanced():
  weights = deepfake_data.class_weights(np.array([0, 1, 1, 1]))
  assert weights == pytest.approx({0: 2.0, 1: 4 / 6})
  with pytest.raises(DataError, match="only class 'fake'"):
    deepfake_data.class_weights(np.array([1, 1]))


def test_clip_sampling():
  evaluation = deepfake_clips.sample_frame_indices(32, 4, training=False, mode="spread")
  assert evaluation.numpy().tolist() == [4, 12, 20, 28]
  tf.random.set_seed(0)
  windows = [deepfake_clips.sample_frame_indices(10, 4, True, "window").numpy() for _ in range(20)]
  for window in windows:
    assert np.all(np.diff(window) == 1) and 0 <= window[0] and window[-1] <= 9
  assert len({w[0] for w in windows}) > 2
  spreads = [deepfake_clips.sample_frame_indices(32, 4, True, "spread").numpy() for _ in range(20)]
  for spread in spreads:
    assert np.all(np.diff(spread) == 8)
  assert len({s[0] for s in spreads}) > 2
  short = deepfake_clips.sample_frame_indices(2, 4, training=False, mode="window").numpy()
  assert short.tolist() == [0, 0, 1, 1]  # a short video repeats frames


def test_dataset_from_files_and_memory(tmp_path):
  config = deepfake_config.get_config("tiny")
  config.data.image_size = 16
  for name, count in (("a", 3), ("b", 5)):
    _write_frames(tmp_path, name, count, size=20)
  (tmp_path / "labels.csv").write_text("video,label\na,0\nb,1\n")
  videos = deepfake_data.read_labels_csv(str(tmp_path / "labels.csv"))
  clips, labels, weights = next(
    iter(deepfake_clips.make_dataset(videos, config, training=True, weights={0: 2.0, 1: 0.5}))
  )
  assert clips.shape == (2, 2, 16, 16, 3) and clips.dtype == tf.uint8
  assert labels.shape == (2, 2)
  np.testing.assert_allclose(weights.numpy(), np.where(labels.numpy()[:, 1] > 0, 0.5, 2.0))
  evaluation = list(deepfake_clips.make_dataset(videos, config, training=False))
  assert sum(len(batch[0]) for batch in evaluation) == 2


def test_synthetic_clips_share_identity_across_groups():
  videos = synthetic_clips.make_split("train", 6, num_frames=3, size=32, seed=0)
  assert videos.frames.shape[1:] == (3, 32, 32, 3)
  assert set(videos.labels.tolist()) == {0, 1}
  for group in set(videos.groups.tolist()):
    members = np.flatnonzero(videos.groups == group)
    assert videos.labels[members[0]] == 0  # each identity has its real video first
    real = videos.frames[members[0]].astype(int)
    for fake in members[1:]:
      difference = np.abs(videos.frames[fake].astype(int) - real)
      # Same scene and person; only the inner face differs.
      assert np.median(difference) < 8 and difference.max() > 20
  again = synthetic_clips.make_split("train", 6, num_frames=3, size=32, seed=0)
  np.testing.assert_array_equal(videos.frames, again.frames)


def test_training_clips_are_the_same_for_the_same_seed():
  config = deepfake_config.get_config("tiny")
  videos = deepfake_data.Videos(
    [f"v{i}" for i in range(6)],
    np.array([0, 1] * 3, np.int32),
    np.arange(6, dtype=np.int32),
    frames=np.arange(6 * 12, dtype=np.uint8).reshape(6, 12, 1, 1, 1)
    * np.ones((1, 1, 32, 32, 3), np.uint8),
  )

  def first_clips(seed):
    config.seed = seed
    dataset = deepfake_clips.make_dataset(videos, config, training=True)
    return np.concatenate([clips.numpy()[:, :, 0, 0, 0] for clips, _ in dataset.take(8)])

  first = first_clips(0)
  np.testing.assert_array_equal(first, first_clips(0))
  assert not np.array_equal(first, first_clips(1))
  assert len(np.unique(first % 12)) > 2  # random frame offsets, not one fixed pattern
