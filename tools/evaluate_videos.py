r"""Clip- and video-level metrics of a deepfake detector on prepared faces.

  python -m tools.evaluate_videos --model=runs/deepfake/checkpoints/best.keras \
      --labels_csv=/data/ffpp_faces/labels.csv --split=test --output=runs/deepfake/eval_test

Reads a labels CSV as the trainer does (`tools.prepare_faces` writes one),
keeps the rows of `--split` (`all` keeps every row), scores up to
`--max_clips` clips per video and writes `metrics.json` (ROC-AUC, log-loss,
accuracy and balanced accuracy, per clip and per video) and
`video_scores.csv`.
"""

from __future__ import annotations

import json
import os

import pandas as pd
from absl import app, flags, logging

from input_pipeline import deepfake_data
from training import io_utils, video_scoring

_MODEL = flags.DEFINE_string("model", None, "SavedModel export folder or .keras checkpoint.")
_LABELS_CSV = flags.DEFINE_string("labels_csv", None, "Labels CSV: video,label[,group][,split].")
_FRAMES_ROOT = flags.DEFINE_string("frames_root", None, "Root of the video folders (CSV's).")
_SPLIT = flags.DEFINE_string("split", "test", "Rows of this split column value; 'all': every row.")
_AGGREGATION = flags.DEFINE_enum(
  "aggregation", "mean", list(video_scoring.AGGREGATIONS), "Clip probabilities -> video."
)
_MAX_CLIPS = flags.DEFINE_integer("max_clips", 4, "Clips scored per video.")
_OUTPUT = flags.DEFINE_string("output", "video_evaluation", "Folder for the results.")


def main(argv: list[str]) -> None:
  del argv
  videos = deepfake_data.read_labels_csv(_LABELS_CSV.value, _FRAMES_ROOT.value)
  videos = video_scoring.select_split(videos, _SPLIT.value, _LABELS_CSV.value)
  scorer = video_scoring.ClipScorer(_MODEL.value)
  logging.info("Scoring %d videos of split %r.", len(videos), _SPLIT.value)
  result = video_scoring.evaluate_videos(videos, scorer, _MAX_CLIPS.value, _AGGREGATION.value)
  per_video = result.pop("videos")
  report = {"model": _MODEL.value, "labels_csv": _LABELS_CSV.value, "split": _SPLIT.value}
  io_utils.write_json(os.path.join(_OUTPUT.value, "metrics.json"), report | result)
  io_utils.write_text(
    os.path.join(_OUTPUT.value, "video_scores.csv"), pd.DataFrame(per_video).to_csv(index=False)
  )
  logging.info("%s", json.dumps(result, indent=1))


if __name__ == "__main__":
  flags.mark_flags_as_required(["model", "labels_csv"])
  app.run(main)
