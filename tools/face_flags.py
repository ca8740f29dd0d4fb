"""Face detection and crop flags shared by the commands that extract faces.

Scoring must crop faces as the training data were cropped, so both commands
take the same flags with the same defaults, defined once here.
"""

from __future__ import annotations

from absl import flags

from input_pipeline import face_detection

_CROP = face_detection.CropSettings()
_DETECTOR = face_detection.DetectorSettings()


def define_flags() -> None:
  flags.DEFINE_enum("crop", _CROP.policy, face_detection.CROP_POLICIES, "Crop policy.")
  flags.DEFINE_float("scale", _CROP.scale, "scale crops: square side over the longer box side.")
  flags.DEFINE_float("margin", _CROP.margin, "tight crops: margin per side, fraction of box.")
  flags.DEFINE_integer("size", _CROP.size, "scale crops: output side in pixels.")
  flags.DEFINE_float("min_confidence", _DETECTOR.min_confidence, "Lowest face confidence kept.")
  flags.DEFINE_integer("min_face_size", _DETECTOR.min_face_size, "Smallest face, in pixels.")
  flags.DEFINE_integer(
    "detection_max_side", _DETECTOR.max_side, "Longer side frames are downscaled to (0: never)."
  )
  flags.DEFINE_integer("detection_batch_size", _DETECTOR.batch_size, "Frames per MTCNN call.")


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
