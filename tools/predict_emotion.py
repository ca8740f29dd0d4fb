r"""Emotion of every face in photos, with annotated copies.

  python -m tools.predict_emotion --model=runs/emotion_quick/checkpoints/best.keras \
      --images=photo.jpg,photos/ --output=predictions/ [--crop=scale --scale=1.3 ...]
  python -m tools.predict_emotion --model=runs/emotion_quick/export/1 \
      --images=fer_faces/ --output=predictions/ --no_face_detection

`--model` is a `.keras` checkpoint, a SavedModel export or a `.tflite` file
of `tools.export_tflite` (its class names are read from the file). Folders are
searched recursively for image files. Every face MTCNN finds above
`--min_confidence` is cropped (the face flags of `tools.score_videos`; the
default `scale` crop of 1.3 x the box matches the FER2013 framing) and
classified; `--no_face_detection` classifies each whole image, for images that
are face crops already. Crops are made grayscale first, as FER2013 is
(`--nograyscale` for a model trained on colour faces).

Writes to `--output`: `predictions.csv` and `predictions.json` (one row per
face: image, face index, box x/y/width/height, detector confidence, emotion,
its probability, `p_<class>` for every class; an image without a face or that
cannot be decoded gets one row with status `no_face` or `unreadable`, and a
warning) and `annotated/<path>.jpg` (each image with its boxes and captions;
a folder's images keep their path from the folder's parent).

Videos and webcams (`--video=clip.mp4,clips/` or `--video=0`, instead of
`--images`): every frame, or every `--every`-th, goes through the detector and
the face tracker; each track's probabilities are smoothed (`--smoothing`,
exponential, 0 = off). Writes `<name>.csv`, `<name>_annotated.mp4`,
`<name>_timeline.png` per video and `videos.csv`; see inference/emotion_video.py.

  python -m tools.predict_emotion --model=runs/emotion_quick/checkpoints/best.keras \
      --video=interview.mp4 --output=predictions/ [--every=2] [--smoothing=0.7]
"""

from __future__ import annotations

import dataclasses
import os

from common import tf_environment

tf_environment.set_defaults()  # Before TensorFlow loads.

from absl import app, flags, logging

from common import errors, outputs
from common.labels import EMOTION_CLASSES
from inference import emotion_inference, emotion_video, model_io
from input_pipeline import face_detection
from tools import face_flags


def _define_flags() -> None:
  """Defined only when run as a command, so that modules importing this one
  (tests, other tools) do not collide on flag names."""
  flags.DEFINE_string(
    "model", None, "A .keras checkpoint, a SavedModel export directory or a .tflite file."
  )
  flags.DEFINE_list("images", None, "Image files and/or folders of images (recursive).")
  flags.DEFINE_string("output", None, "Folder for predictions.csv/.json and annotated/.")
  flags.DEFINE_bool("no_face_detection", False, "Classify each whole image as one face crop.")
  flags.DEFINE_bool("grayscale", True, "Grayscale crops, as FER2013 is; off for colour models.")
  flags.DEFINE_integer("batch_size", 32, "Face crops per model call.", lower_bound=1)
  face_flags.define_flags()
  _define_video_flags()


def _define_video_flags() -> None:
  """Emotion on videos (`--video`); see inference/emotion_video.py."""
  video = emotion_video.VideoSettings()
  flags.DEFINE_list("video", None, "Video files, folders of videos, or webcam indices (0).")
  flags.DEFINE_integer(
    "every", video.every, "Videos: detect and classify every N-th frame.", lower_bound=1
  )
  flags.DEFINE_float(
    "smoothing",
    video.smoothing,
    "Videos: smoothing alpha per track (0: off).",
    lower_bound=0.0,
    upper_bound=1.0,
  )
  flags.DEFINE_integer(
    "max_frames", video.max_frames, "Videos: stop after N frames (0: all).", lower_bound=0
  )
  flags.DEFINE_bool("progress", video.progress, "Videos: show a progress bar.")
  face_flags.define_tracking_flags(max_missed=10, people=False)


def _predict_videos(values: flags.FlagValues) -> None:
  if values.no_face_detection:
    raise app.UsageError("--no_face_detection is for --images; videos need face tracks.")
  videos = emotion_video.expand_videos(values.video)
  if not videos:
    raise app.UsageError(f"No video files in --video={','.join(values.video)}.")
  classifier = emotion_inference.Classifier(values.model)
  settings = emotion_video.VideoSettings(
    every=values.every,
    smoothing=values.smoothing,
    grayscale=values.grayscale,
    batch_size=values.batch_size,
    max_frames=values.max_frames,
    progress=values.progress,
  )
  summaries = emotion_video.predict_videos(
    videos,
    classifier,
    face_detection.FaceDetector(face_flags.detector_settings()),
    face_flags.crop_settings(),
    model_io.class_names(classifier.path, EMOTION_CLASSES, classifier.class_names),
    values.output,
    face_flags.tracker_settings(),
    settings,
  )
  statuses = [s["status"] for s in summaries]
  logging.info(
    "%d videos (%s). Wrote %s.",
    len(videos),
    ", ".join(f"{statuses.count(s)} {s}" for s in emotion_inference.STATUSES),
    os.path.join(values.output, emotion_video.SUMMARY_CSV),
  )


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  if bool(values.images) == bool(values.video):
    raise app.UsageError("Give either --images or --video.")
  # Annotated crops written among the inputs would be read as inputs next time.
  outputs.check_not_input(values.output, [values.model, *(values.images or values.video)])
  if values.video:
    return _predict_videos(values)
  items = emotion_inference.expand_images(values.images)
  if not items:
    raise app.UsageError(f"No image files in --images={','.join(values.images)}.")
  classifier = emotion_inference.Classifier(values.model)
  detector = None
  if not values.no_face_detection:
    detector = face_detection.FaceDetector(face_flags.detector_settings())
  crop = face_flags.crop_settings()
  class_names = model_io.class_names(classifier.path, EMOTION_CLASSES, classifier.class_names)
  rows = emotion_inference.predict_images(
    items,
    classifier,
    detector,
    crop,
    class_names,
    values.output,
    batch_size=values.batch_size,
    grayscale=values.grayscale,
  )
  metadata = {
    "model": values.model,
    "model_format": classifier.format,
    "class_names": class_names,
    "face_detection": detector is not None,
    "detector": dataclasses.asdict(face_flags.detector_settings()) if detector else None,
    "crop": dataclasses.asdict(crop) if detector else None,
    "grayscale": values.grayscale,
    "num_images": len(items),
  }
  emotion_inference.write_rows(values.output, rows, metadata)
  counts = emotion_inference.image_status_counts(rows)
  logging.info(
    "%d faces in %d images (%s). Wrote %s, %s and %s/.",
    sum(r["face"] is not None for r in rows),
    len(items),
    ", ".join(f"{n} {s}" for s, n in counts.items()),
    os.path.join(values.output, emotion_inference.PREDICTIONS_CSV),
    os.path.join(values.output, emotion_inference.PREDICTIONS_JSON),
    os.path.join(values.output, emotion_inference.ANNOTATED_DIR),
  )


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["model", "output"])
  errors.run(main)
