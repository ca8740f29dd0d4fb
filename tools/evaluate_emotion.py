r"""Evaluates an emotion checkpoint or SavedModel export on a split of the data.

  python -m tools.evaluate_emotion --model=runs/emotion_quick/checkpoints/best.keras \
      --config=configs/emotion.py:quick [--split=test|validation] [--ten_crop] \
      --output=runs/emotion_quick/eval
  python -m tools.evaluate_emotion --model=runs/emotion_quick/export/1 \
      --config=configs/emotion.py:quick --output=runs/emotion_quick/eval_export
  python -m tools.evaluate_emotion --model=runs/emotion_quick/tflite/model_int8.tflite \
      --config=configs/emotion.py:quick --output=runs/emotion_quick/eval_int8 \
      [--reference_model=runs/emotion_quick/export/1] [--num_threads=1]

`--model` is a `.keras` file (best.keras or last.keras), a SavedModel
directory (`export/<version>`, through its `serving_default` signature) or a
`.tflite` file of `tools.export_tflite`. Every report also holds the model's
size on disk and its CPU latency per image (median of 50 single-image calls;
a TFLite model in `tf.lite.Interpreter` with `--num_threads`). With
`--reference_model`, that model is evaluated on the same images and its
accuracy, size and latency are reported beside; for a `.tflite` model the
reference defaults to the SavedModel of the run it was converted from
(`<run>/export/<highest version>`, else its `.keras` source).
The data are the config's, loaded as training loads them (`emotion_data.load`,
same seed, so a validation split carved from train is the same images); any
config field can be overridden, e.g. `--config.data.dir=/data/fer2013`.

Writes to `--output`: `report.json` (accuracy, macro and weighted F1,
per-class precision/recall/F1/support, confusion matrix; with `--ten_crop`
for both the plain and the ten-crop predictions), `classification_report.txt`
and `confusion_matrix.png` (counts and row-normalised; with `--ten_crop` also
`confusion_matrix_ten_crop.png`).

Ten-crop test-time augmentation: each image is resized to
`image_size / 0.875` (the ImageNet convention, 224 of 256), cut into its four
corner and centre crops of `image_size` and their mirror images, and the ten
class probabilities are averaged.
"""

from __future__ import annotations

from common import tf_environment

tf_environment.set_defaults()  # Before TensorFlow loads.

from absl import app, flags

from common import errors, outputs
from configs import validation
from inference import emotion_evaluation


def _define_flags() -> None:
  """Defined only when run as a command, so tests can import this module
  beside other tools that define flags of the same names."""
  from ml_collections import config_flags

  config_flags.DEFINE_config_file(
    "config", None, "Emotion config file and variant: configs/emotion.py:quick.", lock_config=True
  )
  flags.DEFINE_string(
    "model", None, "A .keras checkpoint, a SavedModel export directory or a .tflite file."
  )
  flags.DEFINE_string(
    "reference_model",
    None,
    "A model to compare with on the same images (default for a .tflite: its run's "
    "SavedModel; '' for none).",
  )
  flags.DEFINE_integer("num_threads", 1, "CPU threads of the TFLite interpreter.", lower_bound=1)
  flags.DEFINE_enum(
    "split", "test", list(emotion_evaluation.SPLITS), "Split of the config's data to evaluate."
  )
  flags.DEFINE_bool("ten_crop", False, "Also evaluate with ten-crop test-time augmentation.")
  flags.DEFINE_string("output", None, "Directory for the reports.")
  flags.mark_flags_as_required(["config", "model", "output"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  validation.validate(values.config)
  inputs = [values.model, values.reference_model or "", values.config.data.get("dir", "")]
  outputs.check_not_input(values.output, inputs)
  emotion_evaluation.evaluate(
    values.model,
    values.config,
    values.output,
    values.split,
    values.ten_crop,
    reference_model=values.reference_model,
    num_threads=values.num_threads,
  )


if __name__ == "__main__":
  _define_flags()
  errors.run(main)
