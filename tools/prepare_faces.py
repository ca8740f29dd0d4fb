r"""Face crops and a labels CSV from a video data set, for the deepfake trainer.

  python -m tools.prepare_faces --dataset=ffpp --source=/data/FaceForensics++ \
      --output=/data/ffpp_faces --ffpp_qualities=c23 --workers=4
  python train_main.py --config=configs/deepfake.py \
      --config.data.labels_csv=/data/ffpp_faces/labels.csv

Datasets: dfdc (a folder of dfdc_train_part_*/ with metadata.json, and/or
test sets with labels.csv), ffpp, celebdf (Celeb-DF v2), csv (a CSV
`path,label[,group][,split]`), folders (real/ and fake/). Rerunning the same
command skips the videos already prepared. See input_pipeline/face_preparation.py
for the output layout.
"""

from __future__ import annotations

from absl import app, flags

from input_pipeline import face_preparation, video_datasets
from tools import face_flags

_DATASET = flags.DEFINE_enum("dataset", None, video_datasets.DATASETS, "Layout of --source.")
_SOURCE = flags.DEFINE_string("source", None, "Data-set root folder (or the CSV for csv).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the faces and labels.csv.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 32, "Evenly spaced frames sampled per video.")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", 95, "Quality of the face JPEGs.")
_WORKERS = flags.DEFINE_integer("workers", 1, "Videos prepared in parallel (processes).")
_FFPP_METHODS = flags.DEFINE_list(
  "ffpp_methods",
  None,
  f"ffpp: manipulation methods (default: all found); of {video_datasets.FFPP_METHODS}.",
)
_FFPP_QUALITIES = flags.DEFINE_list("ffpp_qualities", ["c23"], "ffpp: raw, c23 and/or c40.")
_FFPP_SPLITS = flags.DEFINE_string(
  "ffpp_splits", None, "ffpp: folder of the official train.json, val.json, test.json."
)
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar.")
face_flags.define_flags()


def main(argv: list[str]) -> None:
  del argv
  catalogue = video_datasets.load_catalogue(
    _DATASET.value,
    _SOURCE.value,
    ffpp_methods=tuple(_FFPP_METHODS.value) if _FFPP_METHODS.value else None,
    ffpp_qualities=tuple(_FFPP_QUALITIES.value),
    ffpp_splits_dir=_FFPP_SPLITS.value,
  )
  settings = face_preparation.PreparationSettings(
    num_frames=_NUM_FRAMES.value,
    crop=face_flags.crop_settings(),
    detector=face_flags.detector_settings(),
    jpeg_quality=_JPEG_QUALITY.value,
  )
  face_preparation.prepare_dataset(
    catalogue, _OUTPUT.value, settings, workers=_WORKERS.value, progress=_PROGRESS.value
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["dataset", "source", "output"])
  app.run(main)
