"""Face detection, crop and tracking flags shared by the commands that extract faces.

Scoring must crop and choose faces as the training data were cropped and
chosen, so the commands take the same flags with the same defaults, defined
once here.
"""

from __future__ import annotations

from absl import flags

from input_pipeline import face_detection, face_tracking

_CROP = face_detection.CropSettings()
_DETECTOR = face_detection.DetectorSettings()
_TRACKER = face_tracking.TrackerSettings()


def define_flags() -> None:
  flags.DEFINE_enum("crop", _CROP.policy, face_detection.CROP_POLICIES, "Crop policy.")
  flags.DEFINE_float(
    "scale", _CROP.scale, "scale crops: square side over the longer box side.", lower_bound=0.1
  )
  flags.DEFINE_float(
    "margin", _CROP.margin, "tight crops: margin per side, fraction of box.", lower_bound=0.0
  )
  flags.DEFINE_integer("size", _CROP.size, "scale crops: output side in pixels.", lower_bound=8)
  flags.DEFINE_float(
    "min_confidence",
    _DETECTOR.min_confidence,
    "Lowest face confidence kept.",
    lower_bound=0.0,
    upper_bound=1.0,
  )
  flags.DEFINE_integer(
    "min_face_size", _DETECTOR.min_face_size, "Smallest face, in pixels.", lower_bound=1
  )
  flags.DEFINE_integer(
    "detection_max_side",
    _DETECTOR.max_side,
    "Longer side frames are downscaled to (0: never).",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    "detection_batch_size", _DETECTOR.batch_size, "Frames per MTCNN call.", lower_bound=1
  )


def crop_settings() -> face_detection.CropSettings:
  values = flags.FLAGS
  return face_detection.CropSettings(values.crop, values.scale, values.margin, values.size)


def detector_settings() -> face_detection.DetectorSettings:
  values = flags.FLAGS
  return face_detection.DetectorSettings(
    values.min_confidence,
    values.min_face_size,
    values.detection_max_side,
    values.detection_batch_size,
  )


def define_tracking_flags(max_missed: int = _TRACKER.max_missed, people: bool = True) -> None:
  """The tracker's flags; `max_missed` counts processed frames, so each command sets its own.

  `people`: also the flags that choose the people of a video (deepfake tools).
  """
  flags.DEFINE_integer(
    "max_missed",
    max_missed,
    "Processed frames a face track survives without a detection.",
    lower_bound=0,
  )
  if not people:
    return
  flags.DEFINE_integer(
    "min_track_frames",
    _TRACKER.min_track_frames,
    "Frames a track needs to be scored or written as its own person (the main track always is).",
    lower_bound=1,
  )
  flags.DEFINE_float(
    "background_size",
    _TRACKER.background_size,
    "Tracks smaller than this x the largest lasting face are background faces (0: none are).",
    lower_bound=0.0,
    upper_bound=1.0,
  )


def tracker_settings() -> face_tracking.TrackerSettings:
  values = flags.FLAGS
  return face_tracking.TrackerSettings(
    max_missed=values.max_missed,
    min_track_frames=getattr(values, "min_track_frames", _TRACKER.min_track_frames),
    background_size=getattr(values, "background_size", _TRACKER.background_size),
  )
