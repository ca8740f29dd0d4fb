r"""Clip- and video-level metrics of a deepfake detector on prepared faces.

  python -m tools.evaluate_videos --model=runs/deepfake/checkpoints/best.keras \
      --labels_csv=/data/ffpp_faces/labels.csv --split=test --output=runs/deepfake/eval_test

Reads a labels CSV as the trainer does (`tools.prepare_faces` writes one),
keeps the rows of `--split` (`all` keeps every row), scores up to
`--max_clips` clips per video and writes `metrics.json` (ROC-AUC, log-loss,
accuracy and balanced accuracy, per clip and per video) and
`video_scores.csv`. Rows that are tracks of one video (`prepare_faces
--all_tracks`) make one video, scored as the maximum over its tracks, as
`tools.score_videos` does (`--nocombine_tracks`: each row a video).
"""

from __future__ import annotations

import json
import os

from common import tf_environment

tf_environment.set_defaults()  # Before TensorFlow loads.

from absl import flags, logging

from common import errors, io_utils, outputs
from inference import video_scoring
from input_pipeline import deepfake_data


def _define_flags() -> None:
  """Defined only when run as a command, so that modules importing this one
  (tests, other tools) do not collide on flag names."""
  flags.DEFINE_string("model", None, "SavedModel export folder or .keras checkpoint.")
  flags.DEFINE_string("labels_csv", None, "Labels CSV: video,label[,group][,split].")
  flags.DEFINE_string("frames_root", None, "Root of the video folders (CSV's).")
  flags.DEFINE_string("split", "test", "Rows of this split column value; 'all': every row.")
  flags.DEFINE_enum(
    "aggregation", "mean", list(video_scoring.AGGREGATIONS), "Clip probabilities -> video."
  )
  flags.DEFINE_integer("max_clips", 4, "Clips scored per video.", lower_bound=1)
  flags.DEFINE_boolean(
    "combine_tracks", True, "Score the track rows of a video as one video (max over tracks)."
  )
  flags.DEFINE_string("output", "video_evaluation", "Folder for the results.")


def main(argv: list[str]) -> None:
  del argv
  labels_csv, frames_root = flags.FLAGS.labels_csv, flags.FLAGS.frames_root
  outputs.check_not_input(flags.FLAGS.output, [flags.FLAGS.model, labels_csv, frames_root or ""])
  videos = deepfake_data.read_labels_csv(flags.FLAGS.labels_csv, flags.FLAGS.frames_root)
  videos = video_scoring.select_split(videos, flags.FLAGS.split, flags.FLAGS.labels_csv)
  scorer = video_scoring.ClipScorer(flags.FLAGS.model)
  logging.info("Scoring %d videos of split %r.", len(videos), flags.FLAGS.split)
  sources = None
  if flags.FLAGS.combine_tracks:
    sources = video_scoring.source_videos(flags.FLAGS.labels_csv, videos.names)
  result = video_scoring.evaluate_videos(
    videos, scorer, flags.FLAGS.max_clips, flags.FLAGS.aggregation, sources
  )
  per_video = result.pop("videos")
  report = {
    "model": flags.FLAGS.model,
    "labels_csv": flags.FLAGS.labels_csv,
    "split": flags.FLAGS.split,
  }
  io_utils.write_json(os.path.join(flags.FLAGS.output, "metrics.json"), report | result)
  io_utils.write_text(
    os.path.join(flags.FLAGS.output, "video_scores.csv"),
    video_scoring.score_table(per_video).to_csv(index=False),
  )
  logging.info("%s", json.dumps(result, indent=1))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["model", "labels_csv"])
  errors.run(main)
