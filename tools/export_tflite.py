r"""Converts an emotion checkpoint to TensorFlow Lite, optionally quantised.

  python -m tools.export_tflite --model=runs/emotion_quick/checkpoints/best.keras \
      --quantize=none|float16|int8 --output=runs/emotion_quick/tflite/model_int8.tflite \
      [--config=configs/emotion.py:quick] [--calibration_images=300] [--overwrite]

The `.tflite` model takes uint8 RGB images `[batch, size, size, 3]` of the
model's input size and returns float32 probabilities `[batch, classes]`.
`int8` is full-integer quantisation, calibrated on `--calibration_images`
training images of `--config` (read as training reads them; give the run's
config and overrides, e.g. `--config.data.dir=/data/fer2013`); `--config` is
optional for `none` and `float16` (it then only checks the class count and
input size). The class names and the input size are stored in the file
(flatbuffer metadata `face_analysis`), read by `tools.evaluate_emotion` and
`tools.predict_emotion`.

The deepfake detector is tried too; the converter cannot convert it and the
command stops with the converter's reason (see README).
"""

from __future__ import annotations

from common import tf_environment

tf_environment.set_defaults()  # Before TensorFlow loads.

from absl import app, flags

from common import errors
from configs import validation


def _define_flags() -> None:
  """Defined only when run as a command, so other modules can import this one."""
  from ml_collections import config_flags

  from inference.tflite import QUANTIZATIONS

  config_flags.DEFINE_config_file(
    "config",
    None,
    "The run's config, for int8 calibration: configs/emotion.py:quick.",
    lock_config=True,
  )
  flags.DEFINE_string("model", None, "The .keras checkpoint to convert.")
  flags.DEFINE_enum("quantize", "none", list(QUANTIZATIONS), "Weights and ops of the model.")
  flags.DEFINE_string("output", None, "The .tflite file to write.")
  flags.DEFINE_integer(
    "calibration_images", 300, "Training images that calibrate int8.", lower_bound=1
  )
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
  flags.mark_flags_as_required(["model", "output"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from inference import tflite

  values = flags.FLAGS
  if values.config is not None:
    validation.validate(values.config)
  tflite.export_emotion_model(
    values.model,
    values.output,
    values.quantize,
    config=values.config,
    num_calibration_images=values.calibration_images,
    overwrite=values.overwrite,
  )


if __name__ == "__main__":
  _define_flags()
  errors.run(main)
