r"""Probability that each video is fake, from a trained deepfake detector.

  python -m tools.score_videos --model=runs/deepfake/export/1 \
      --videos=/data/new_videos,/data/one.mp4 --output=scores.csv

`--model` is a SavedModel export or a `.keras` checkpoint. Faces are found,
tracked and cropped as `tools.prepare_faces` does (use the same crop flags as
for the training data). Every person is scored on their own (`--tracks=all`:
the main track and every other non-background track of `--min_track_frames`
or more): a track's clip probabilities are aggregated (`--aggregation`, mean
by default), and the video's probability is the maximum over its tracks; the
CSV records the rule and each track's `track<k>_faces` and
`track<k>_probability`. `--tracks=main` scores the main track only,
`--tracks=none` the most confident face of each frame (the rule before
tracking). A video without a face, or that cannot be decoded, scores 0.5
with a warning and its status in the CSV.
"""

from __future__ import annotations

import os

from common import tf_environment

tf_environment.set_defaults()  # Before TensorFlow loads.

from absl import app, flags, logging

from common import errors, io_utils, outputs
from inference import video_scoring
from input_pipeline import face_detection, video_io
from tools import face_flags


def expand_videos(entries: list[str]) -> list[str]:
  """Files as given, folders replaced by the videos under them."""
  paths = []
  for entry in entries:
    if os.path.isdir(entry):
      paths += video_io.list_videos(entry)
    else:
      paths.append(entry)
  return paths


def _define_flags() -> None:
  """Defined only when run as a command, so that modules importing this one
  (tests, other tools) do not collide on flag names."""
  flags.DEFINE_string("model", None, "SavedModel export folder or .keras checkpoint.")
  flags.DEFINE_list("videos", None, "Video files and/or folders of videos.")
  flags.DEFINE_string("output", "scores.csv", "CSV of the per-video scores.")
  flags.DEFINE_enum(
    "aggregation", "mean", list(video_scoring.AGGREGATIONS), "Clip probabilities -> video."
  )
  flags.DEFINE_integer("num_frames", 32, "Evenly spaced frames sampled per video.", lower_bound=1)
  flags.DEFINE_integer("max_clips", 4, "Clips scored per track.", lower_bound=1)
  flags.DEFINE_enum(
    "tracks",
    "all",
    list(video_scoring.TRACK_RULES),
    "all: every person, video = max over tracks; main: the main track; none: the most "
    "confident face per frame, without tracking (the single-face rule before tracks).",
  )
  face_flags.define_flags()
  face_flags.define_tracking_flags()


def main(argv: list[str]) -> None:
  del argv
  outputs.check_not_input(flags.FLAGS.output, [flags.FLAGS.model, *(flags.FLAGS.videos or [])])
  paths = expand_videos(flags.FLAGS.videos)
  if not paths:
    raise app.UsageError(f"No video files in --videos={','.join(flags.FLAGS.videos)}.")
  scorer = video_scoring.ClipScorer(flags.FLAGS.model)
  detector = face_detection.FaceDetector(face_flags.detector_settings())
  rows = video_scoring.score_videos(
    paths,
    scorer,
    detector,
    face_flags.crop_settings(),
    num_frames=flags.FLAGS.num_frames,
    max_clips=flags.FLAGS.max_clips,
    aggregation=flags.FLAGS.aggregation,
    tracks=flags.FLAGS.tracks,
    tracking=face_flags.tracker_settings(),
  )
  io_utils.write_text(flags.FLAGS.output, video_scoring.score_table(rows).to_csv(index=False))
  logging.info("Wrote %d video scores to %s.", len(rows), flags.FLAGS.output)


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["model", "videos"])
  errors.run(main)
