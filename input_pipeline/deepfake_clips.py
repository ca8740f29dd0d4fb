"""Deepfake clips in tf.data: frame sampling, decoding (files, memory or shards), batches.

The videos, their labels and splits come from `deepfake_data`; this module
turns a `deepfake_data.Videos` into batches of clips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import images, tfrecords
from input_pipeline.images import resize_to_uint8

if TYPE_CHECKING:
  from input_pipeline.deepfake_data import Videos

CLIP_SAMPLING = ("window", "spread")


def find_undecodable_frame(*video_sets: Videos) -> tuple[str, str] | None:
  """The first frame file TensorFlow cannot decode, with the reason, or None.

  Frames are decoded lazily inside tf.data, where a bad file stops training
  with an error that names no file; the trainer calls this on that error to
  say which file it was.
  """
  for videos in video_sets:
    for paths in videos.frame_paths or []:
      for path in paths:
        try:
          images.decode_tf(tf.io.read_file(path), channels=3, name="frame")
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
          return path, error.message.splitlines()[0] if error.message else type(error).__name__
  return None


def sample_frame_indices(
  num_available: tf.Tensor,
  num_frames: int,
  training: bool,
  mode: str,
  seed: tf.Tensor | None = None,
) -> tf.Tensor:
  """Indices of the frames of one clip, int32 `[num_frames]`.

  Evaluation: evenly spaced, centred (the same every time). Training:
  `window` is `num_frames` consecutive frames at a random start; `spread` is
  evenly spaced frames with a random offset. Videos shorter than
  `num_frames` repeat frames.
  """
  if mode not in CLIP_SAMPLING:
    raise ValueError(f"clip_sampling={mode!r}; expected one of {list(CLIP_SAMPLING)}.")
  available = tf.cast(num_available, tf.float32)
  steps = tf.range(num_frames, dtype=tf.float32)
  stride = available / num_frames
  if not training:
    positions = stride * (steps + 0.5)
  else:
    uniform = (
      tf.random.stateless_uniform([], seed=seed) if seed is not None else tf.random.uniform([])
    )
    if mode == "spread":
      positions = stride * (steps + uniform)
    else:
      span = tf.minimum(available, float(num_frames))
      start = tf.floor(uniform * (available - span + 1.0))
      positions = start + steps * span / num_frames
  last = tf.cast(num_available, tf.int32) - 1
  return tf.clip_by_value(tf.cast(tf.floor(positions), tf.int32), 0, last)


def make_dataset(
  videos: Videos,
  config: ml_collections.ConfigDict,
  training: bool,
  weights: dict[int, float] | None = None,
) -> tf.data.Dataset:
  """Batches of uint8 clips `[b, num_frames, s, s, 3]`, one-hot labels (and weights).

  Training data repeats forever in random video order (a `model.fit` epoch is
  a number of iterations, not a pass); evaluation data is each video once.
  """
  data = config.data
  size, num_frames = data.image_size, data.num_frames
  if videos.records is not None:
    dataset, count_of, frames_of, label_of = _from_records(videos, config, training)
  else:
    counts = tf.constant(videos.frame_counts())
    labels = tf.constant(videos.labels)
    dataset = tf.data.Dataset.range(len(videos))
    if training:
      dataset = dataset.repeat().shuffle(max(len(videos), 1), seed=config.seed)
    frames_of = frame_loader(videos, size)

    def count_of(video: tf.Tensor) -> tf.Tensor:
      return counts[video]

    def label_of(video: tf.Tensor) -> tf.Tensor:
      return labels[video]

  def make_clip(position: tf.Tensor, element) -> tuple[tf.Tensor, ...]:
    # A stateless seed per stream position: the same clips whatever order the
    # parallel map runs its calls in (a stateful op would make runs differ).
    seed = tf.stack([tf.constant(config.seed, tf.int64), position])
    indices = sample_frame_indices(
      count_of(element), num_frames, training, data.clip_sampling, seed=seed
    )
    clip = tf.ensure_shape(frames_of(element, indices), (num_frames, size, size, 3))
    label = tf.cast(label_of(element), tf.int32)
    if weights is None:
      return clip, tf.one_hot(label, 2)
    return clip, tf.one_hot(label, 2), tf.gather(tf.constant([weights[0], weights[1]]), label)

  dataset = dataset.enumerate().map(make_clip, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(config.schedule.batch_size, drop_remainder=training)
  return dataset.prefetch(tf.data.AUTOTUNE)


def frame_loader(videos: Videos, size: int):
  """`(video, indices) -> uint8 [len(indices), size, size, 3]` for frames in memory or files."""
  if videos.frames is not None:
    frames = tf.constant(videos.frames)

    def load_frames(video: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
      clip = tf.gather(frames[video], indices)
      return resize_to_uint8(clip, size) if videos.frames.shape[2] != size else clip

    return load_frames
  paths = tf.ragged.constant(videos.frame_paths)

  def load_frames(video: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    contents = tf.map_fn(tf.io.read_file, tf.gather(paths[video], indices))
    return images.decode_files(contents, size, "frame")  # as `serving_bytes` decodes

  return load_frames


def _from_records(videos: Videos, config: ml_collections.ConfigDict, training: bool):
  """Parsed records of `videos` from their shards, with the accessors `make_dataset` uses.

  Training repeats the shards and shuffles records through a buffer of
  `data.shuffle_buffer` videos; evaluation reads them in writing order.
  Videos not in `videos` (a subset) are filtered out by their `index`.
  """
  shards, size = videos.records, config.data.image_size
  records = tfrecords.read_records(shards, training, config.seed)
  if training:
    records = records.repeat().shuffle(config.data.shuffle_buffer, seed=config.seed)
  dataset = records.map(tfrecords.parse_video_example, num_parallel_calls=tf.data.AUTOTUNE)
  if len(videos) < shards.count:
    wanted = np.zeros(shards.count, bool)
    wanted[videos.record_ids] = True
    wanted = tf.constant(wanted)
    dataset = dataset.filter(lambda parsed: wanted[parsed["index"]])
  if not training:  # Keras then knows the length of a validation pass.
    dataset = dataset.take(len(videos))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(videos)))

  def count_of(parsed: dict) -> tf.Tensor:
    return tf.shape(parsed["frames"].values)[0]

  def decode(data: tf.Tensor) -> tf.Tensor:
    frame = tfrecords.decode_image(data, shards.image_shape, shards.encoding)
    return frame if shards.image_shape[0] == size else resize_to_uint8(frame, size)

  def frames_of(parsed: dict, indices: tf.Tensor) -> tf.Tensor:
    chosen = tf.gather(parsed["frames"].values, indices)
    if shards.encoding == "raw":  # One op for all frames, no per-frame loop.
      frames = tf.reshape(tf.io.decode_raw(chosen, tf.uint8), [-1, *shards.image_shape])
      return frames if shards.image_shape[0] == size else resize_to_uint8(frames, size)
    return tf.map_fn(decode, chosen, fn_output_signature=tf.TensorSpec((size, size, 3), tf.uint8))

  def label_of(parsed: dict) -> tf.Tensor:
    return parsed["label"]

  return dataset, count_of, frames_of, label_of
