r"""Face crops and a labels CSV from a video data set, for the deepfake trainer.

  python -m tools.prepare_faces --dataset=ffpp --source=/data/FaceForensics++ \
      --output=/data/ffpp_faces --ffpp_qualities=c23 --workers=4
  python train_main.py --config=configs/deepfake.py \
      --config.data.labels_csv=/data/ffpp_faces/labels.csv

Datasets: dfdc (a folder of dfdc_train_part_*/ with metadata.json, and/or
test sets with labels.csv), ffpp, celebdf (Celeb-DF v2), csv (a CSV
`path,label[,group][,split]`), folders (real/ and fake/). Rerunning the same
command skips the videos already prepared. The crops of a video come from
its main face track (the person it is about, not a face in the background);
`--all_tracks` writes every person's track as `<video_id>/track<k>/`. See
input_pipeline/face_preparation.py for the output layout.
"""

from __future__ import annotations

import os

from common import tf_environment

tf_environment.set_defaults()  # Before TensorFlow loads.

from absl import flags

from common import errors, outputs
from input_pipeline import face_preparation, video_datasets
from tools import face_flags


def _define_flags() -> None:
  """Defined only when run as a command, so that modules importing this one
  (tests, other tools) do not collide on flag names."""
  flags.DEFINE_enum("dataset", None, video_datasets.DATASETS, "Layout of --source.")
  flags.DEFINE_string("source", None, "Data-set root folder (or the CSV for csv).")
  flags.DEFINE_string("output", None, "Folder for the faces and labels.csv.")
  flags.DEFINE_integer("num_frames", 32, "Evenly spaced frames sampled per video.", lower_bound=1)
  flags.DEFINE_integer(
    "jpeg_quality", 95, "Quality of the face JPEGs.", lower_bound=1, upper_bound=100
  )
  flags.DEFINE_integer("workers", 1, "Videos prepared in parallel (processes).", lower_bound=1)
  flags.DEFINE_list(
    "ffpp_methods",
    None,
    f"ffpp: manipulation methods (default: all found); of {video_datasets.FFPP_METHODS}.",
  )
  flags.DEFINE_list("ffpp_qualities", ["c23"], "ffpp: raw, c23 and/or c40.")
  flags.DEFINE_string(
    "ffpp_splits", None, "ffpp: folder of the official train.json, val.json, test.json."
  )
  flags.DEFINE_boolean("progress", True, "Show a progress bar.")
  flags.DEFINE_boolean(
    "all_tracks", False, "Write every person's track as <video_id>/track<k>/, not the main one."
  )
  face_flags.define_flags()
  face_flags.define_tracking_flags()


def main(argv: list[str]) -> None:
  del argv
  # Before anything is read: the output may not be, lie in or hold the source,
  # and an existing one must be this tool's own (which a rerun resumes).
  output = flags.FLAGS.output
  outputs.check_not_input(output, [flags.FLAGS.source, flags.FLAGS.ffpp_splits or ""])
  outputs.check_replaceable(
    output,
    "tools.prepare_faces",
    lambda folder: os.path.exists(os.path.join(folder, face_preparation.SETTINGS_FILE)),
    face_preparation.SETTINGS_FILE,
    overwrite=None,
  )
  catalogue = video_datasets.load_catalogue(
    flags.FLAGS.dataset,
    flags.FLAGS.source,
    ffpp_methods=tuple(flags.FLAGS.ffpp_methods) if flags.FLAGS.ffpp_methods else None,
    ffpp_qualities=tuple(flags.FLAGS.ffpp_qualities),
    ffpp_splits_dir=flags.FLAGS.ffpp_splits,
  )
  settings = face_preparation.PreparationSettings(
    num_frames=flags.FLAGS.num_frames,
    crop=face_flags.crop_settings(),
    detector=face_flags.detector_settings(),
    jpeg_quality=flags.FLAGS.jpeg_quality,
    tracking=face_flags.tracker_settings(),
    all_tracks=flags.FLAGS.all_tracks,
  )
  face_preparation.prepare_dataset(
    catalogue,
    flags.FLAGS.output,
    settings,
    workers=flags.FLAGS.workers,
    progress=flags.FLAGS.progress,
  )


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["dataset", "source", "output"])
  errors.run(main)
