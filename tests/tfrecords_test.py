"""TFRecord shards: encodings, the preparation step, and readers that match the in-memory data."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import write_image_tree

from common.errors import DataError
from configs import deepfake as deepfake_config
from configs import emotion as emotion_config
from input_pipeline import deepfake_clips, deepfake_data, emotion_data, tfrecords
from tools import write_tfrecords
from training import loop

NUM_CLASSES = 7


def _emotion_batches(split, training=False, batch_size=8):
  dataset = emotion_data.make_dataset(split, batch_size, NUM_CLASSES, training, seed=0)
  pairs = [(x.numpy(), y.numpy().argmax(-1)) for x, y in dataset]
  return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
@pytest.mark.parametrize("channels", [1, 3])
def test_encode_decode_round_trip_eagerly_and_in_tf_data(encoding, channels):
  rng = np.random.default_rng(0)
  # Smooth images: JPEG keeps them within a few levels.
  base = rng.integers(0, 256, (3, 4, channels)).astype(np.float32)
  image = tf.image.resize(base, (12, 16)).numpy().round().astype(np.uint8)
  data = tfrecords.encode_image(image, encoding)
  eager = tfrecords.decode_image(tf.constant(data), image.shape, encoding).numpy()
  mapped = next(
    iter(
      tf.data.Dataset.from_tensors(data).map(
        lambda d: tfrecords.decode_image(d, image.shape, encoding)
      )
    )
  ).numpy()
  np.testing.assert_array_equal(eager, mapped)
  assert eager.dtype == np.uint8 and eager.shape == image.shape
  if encoding == "jpeg":  # lossy (chroma subsampling), but in RGB order
    error = np.abs(eager.astype(int) - image).mean()
    assert error < 8 and (
      channels == 1 or error < np.abs(eager[..., ::-1] - image.astype(int)).mean()
    )
  else:
    np.testing.assert_array_equal(eager, image)  # lossless, RGB order kept


def test_emotion_shards_hold_the_in_memory_splits(tmp_path):
  config = emotion_config.get_config("tiny")
  manifest = write_tfrecords.write_tfrecords(config, str(tmp_path / "shards"), shard_megabytes=0.01)
  loaded = emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR)
  config.data.source, config.data.dir = "tfrecord", manifest.directory
  shards = emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR)
  assert len(manifest.splits["train"].files) > 1  # several shards
  for split in ("train", "validation", "test"):
    in_memory, on_disk = getattr(loaded, split), getattr(shards, split)
    assert len(on_disk) == len(in_memory)
    assert on_disk.class_counts(NUM_CLASSES) == in_memory.class_counts(NUM_CLASSES)
    # Evaluation order is writing order: the very same batches.
    for a, b in zip(_emotion_batches(in_memory), _emotion_batches(on_disk), strict=True):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(emotion_data.labels_of(on_disk), in_memory.labels)
  # Training: one epoch is every image once, shuffled, in full batches, of known length.
  train = emotion_data.make_dataset(shards.train, 8, NUM_CLASSES, training=True, seed=0)
  assert int(train.cardinality()) == len(shards.train) // 8
  images, labels = _emotion_batches(shards.train, training=True)
  expected_images, expected_labels = _emotion_batches(loaded.train)
  assert not np.array_equal(labels, expected_labels)  # shuffled
  assert sorted(images.reshape(len(images), -1).tolist()) == sorted(
    expected_images.reshape(len(expected_images), -1).tolist()
  )
  # `head` reads only the first records.
  first, _ = _emotion_batches(emotion_data.head(shards.validation, 5))
  np.testing.assert_array_equal(first, _emotion_batches(loaded.validation)[0][:5])


def test_emotion_folders_are_streamed_like_the_in_memory_reader(tmp_path, monkeypatch):
  """Mixed sizes are resized as in memory, corrupt files are skipped, validation is carved
  from the same files."""
  root = write_image_tree(tmp_path / "fer", per_class=4, size=10)
  os.replace(  # One train image of another size: the split is resized to image_size.
    os.path.join(root, "train", "happy", "0.png"), os.path.join(root, "train", "happy", "x.png")
  )
  from PIL import Image

  Image.fromarray(np.full((14, 12), 99, np.uint8)).save(os.path.join(root, "train/happy/0.png"))
  for corrupt in ("test/sad/9.png", "train/angry/9.png"):  # before carving, too
    with open(os.path.join(root, corrupt), "wb") as file:
      file.write(b"not a png")
  config = emotion_config.get_config("tiny")
  config.data.update(source="folder", dir=root, validation_fraction=0.25)
  monkeypatch.setattr(emotion_data, "_DECODE_CHUNK", 5)  # several chunks
  manifest = write_tfrecords.write_tfrecords(config, str(tmp_path / "shards"))
  loaded = emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR)
  assert manifest.splits["train"].image_shape == (16, 16, 1)  # tiny image_size
  assert manifest.splits["test"].image_shape == (10, 10, 1)
  assert len(manifest.splits["test"]) == 4 * NUM_CLASSES  # the corrupt file skipped
  for split in ("train", "validation", "test"):
    for a, b in zip(
      _emotion_batches(getattr(loaded, split)),
      _emotion_batches(manifest.splits[split]),
      strict=True,
    ):
      np.testing.assert_array_equal(a, b)


def _deepfake_clips(videos, config, training=False):
  dataset = deepfake_clips.make_dataset(videos, config, training=training)
  if training:
    dataset = dataset.take(3)
  return [tuple(t.numpy() for t in batch) for batch in dataset]


def test_deepfake_shards_give_the_in_memory_clips(tmp_path):
  config = deepfake_config.get_config("tiny")
  manifest = write_tfrecords.write_tfrecords(config, str(tmp_path / "shards"), encoding="png")
  loaded = deepfake_data.load(config)
  config.data.source, config.data.dir = "tfrecord", manifest.directory
  shards = deepfake_data.load(config)
  with open(os.path.join(manifest.directory, tfrecords.MANIFEST)) as file:
    assert (
      json.load(file)["splits"]["train"]["class_counts"]
      == np.bincount(loaded.train.labels).tolist()
    )
  for split in ("train", "validation"):
    in_memory, on_disk = getattr(loaded, split), getattr(shards, split)
    assert on_disk.names == in_memory.names
    np.testing.assert_array_equal(on_disk.labels, in_memory.labels)
    np.testing.assert_array_equal(on_disk.frame_counts(), in_memory.frame_counts())
    for a, b in zip(
      _deepfake_clips(in_memory, config), _deepfake_clips(on_disk, config), strict=True
    ):
      for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
  # A subset reads only its videos, in order.
  subset = [1, 4]
  got = _deepfake_clips(shards.validation.subset(subset), config)
  want = _deepfake_clips(loaded.validation.subset(subset), config)
  np.testing.assert_array_equal(got[0][0], want[0][0])
  # Training: seeded, weighted, repeating.
  weights = deepfake_data.class_weights(shards.train.labels)
  first = deepfake_clips.make_dataset(shards.train, config, training=True, weights=weights)
  again = deepfake_clips.make_dataset(shards.train, config, training=True, weights=weights)
  for a, b in zip(first.take(9), again.take(9), strict=True):  # > one pass of 15 videos
    for x, y in zip(a, b, strict=True):
      np.testing.assert_array_equal(x.numpy(), y.numpy())
  clips, one_hot, weight = next(iter(first))
  assert clips.shape == (2, 2, 32, 32, 3) and clips.dtype == tf.uint8
  np.testing.assert_allclose(weight.numpy(), [weights[k] for k in one_hot.numpy().argmax(-1)])


def test_a_corrupt_frame_stops_the_writer_naming_it(tmp_path):
  from PIL import Image

  rows = ["video,label"]
  for index in range(4):
    folder = tmp_path / "faces" / f"v{index}"
    folder.mkdir(parents=True)
    for frame in range(3):
      Image.fromarray(np.full((8, 8, 3), 40 * frame, np.uint8)).save(folder / f"{frame}.png")
    rows.append(f"v{index},{index % 2}")
  (tmp_path / "faces" / "labels.csv").write_text("\n".join(rows) + "\n")
  (tmp_path / "faces" / "v2" / "1.png").write_bytes(b"broken")
  config = deepfake_config.get_config("tiny")
  config.data.update(
    source="csv", labels_csv=str(tmp_path / "faces" / "labels.csv"), subset_fraction=1.0
  )
  config.data.validation_fraction = 0.5
  output = tmp_path / "shards"
  with pytest.raises(DataError, match=r"v2/1\.png' cannot be decoded"):
    write_tfrecords.write_tfrecords(config, str(output))
  assert not output.exists()  # nothing half-written where a trainer would read it


def test_an_existing_output_survives_a_failed_rewrite(tmp_path):
  output = str(tmp_path / "shards")
  config = emotion_config.get_config("tiny")
  write_tfrecords.write_tfrecords(config, output)
  before = sorted(os.listdir(output))
  with pytest.raises(FileExistsError, match="--overwrite"):
    write_tfrecords.write_tfrecords(config, output)

  def failing_records():
    yield tfrecords.image_example(b"\0" * 4, 0, 0), 0
    raise OSError("disk full")

  splits = {"train": tfrecords.SplitRecords(failing_records(), (2, 2, 1))}
  with pytest.raises(OSError, match="disk full"):
    tfrecords.write_dataset(output, "emotion", "raw", splits, ["a"], "", overwrite=True)
  assert sorted(os.listdir(output)) == before
  tfrecords.read_manifest(output, "emotion")  # still readable
  write_tfrecords.write_tfrecords(config, output, encoding="png", overwrite=True)
  assert tfrecords.read_manifest(output, "emotion").encoding == "png"
  assert not os.path.exists(output + ".partial") and not os.path.exists(output + ".old")


def test_manifest_errors_name_the_file_and_field(tmp_path):
  with pytest.raises(DataError, match="manifest.json does not exist"):
    tfrecords.read_manifest(str(tmp_path), "emotion")
  output = str(tmp_path / "shards")
  write_tfrecords.write_tfrecords(emotion_config.get_config("tiny"), output)
  with pytest.raises(DataError, match="written for task 'emotion'.*'deepfake' trainer"):
    tfrecords.read_manifest(output, "deepfake")
  path = os.path.join(output, tfrecords.MANIFEST)
  with open(path) as file:
    manifest = json.load(file)
  del manifest["splits"]["train"]["count"]
  with open(path, "w") as file:
    json.dump(manifest, file)
  with pytest.raises(DataError, match=r"field 'train.count' is missing"):
    tfrecords.read_manifest(output, "emotion")
  os.remove(os.path.join(output, "validation-00000.tfrecord"))
  manifest["splits"]["train"]["count"] = 64
  with open(path, "w") as file:
    json.dump(manifest, file)
  with pytest.raises(DataError, match="validation-00000.tfrecord', which does not exist"):
    tfrecords.read_manifest(output, "emotion")
  config = emotion_config.get_config("tiny")
  config.data.update(source="tfrecord", dir=str(tmp_path / "nowhere"))
  with pytest.raises(DataError, match="nowhere' does not exist"):
    emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR)


def test_a_corrupt_shard_is_named_by_the_trainer(tmp_path, monkeypatch):
  """tf.data says only `corrupted record at N`; the trainer names the shard.

  `fit` is replaced by a pass over the real training pipeline (no model tracing).
  """
  import keras

  config = emotion_config.get_config("tiny")
  manifest = write_tfrecords.write_tfrecords(config, str(tmp_path / "shards"), shard_megabytes=0.01)
  bad = manifest.splits["train"].files[1]
  with open(bad, "r+b") as shard:
    shard.seek(40)
    shard.write(b"garbage!")
  config.data.source, config.data.dir = "tfrecord", manifest.directory
  config.export.enabled = False

  def read_batches(model, dataset, **kwargs):
    for _ in dataset:
      pass

  monkeypatch.setattr(keras.Model, "fit", read_batches)
  with pytest.raises(DataError, match=r"shard '.*train-00001\.tfrecord' is corrupted"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
