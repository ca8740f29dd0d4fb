r"""Grad-CAM heat maps of the emotion model on the faces of photos.

  python -m tools.grad_cam --model=runs/emotion_quick/checkpoints/best.keras \
      --images=photo.jpg,photos/ --output=gradcam/ [--class_name=happy] \
      [--layer=stage4_block2_out] [--no_face_detection] [face flags]

Needs a `.keras` checkpoint: a SavedModel export keeps only its serving
functions, not the activations to differentiate. Faces are found and cropped
as `tools.predict_emotion` finds them (same flags and defaults). For each face
writes `--output/<path>_face<k>_gradcam.png`: the crop as the model saw it
and the heat map over it, titled with the class and its probability. The
class is the predicted one unless `--class_name` is given; `--layer` is any
layer with a [b, h, w, c] output (default: the last one, the last residual
block of the ResNet18; an unknown name lists the convolution layers). See
inference/grad_cam.py for the method.
"""

from __future__ import annotations

from common import tf_environment

tf_environment.set_defaults()  # Before TensorFlow loads.

from absl import app, flags, logging

from common import errors, outputs
from common.labels import EMOTION_CLASSES
from inference import emotion_inference, grad_cam, model_io
from input_pipeline import face_detection
from tools import face_flags


def _define_flags() -> None:
  """Defined only when run as a command, so that modules importing this one
  (tests, other tools) do not collide on flag names."""
  flags.DEFINE_string("model", None, "A .keras checkpoint (not a SavedModel export).")
  flags.DEFINE_list("images", None, "Image files and/or folders of images (recursive).")
  flags.DEFINE_string("output", None, "Folder for the heat map figures.")
  flags.DEFINE_string("layer", None, "Feature map layer; default: the last conv block output.")
  flags.DEFINE_string(
    "class_name", None, "Class explained, one of the model's own; default: predicted."
  )
  flags.DEFINE_bool("no_face_detection", False, "Take each whole image as one face crop.")
  flags.DEFINE_bool("grayscale", True, "Grayscale crops, as FER2013 is; off for colour models.")
  flags.DEFINE_integer("batch_size", 16, "Face crops per gradient computation.", lower_bound=1)
  face_flags.define_flags()


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  outputs.check_not_input(values.output, [values.model, *(values.images or [])])
  model = model_io.load_checkpoint_flag(values.model)
  # The model's own classes, stored with its checkpoint (older checkpoints: the built-in list).
  class_names = model_io.class_names(values.model, EMOTION_CLASSES)
  items = emotion_inference.expand_images(values.images)
  if not items:
    raise app.UsageError(f"No image files in --images={','.join(values.images)}.")
  detector = None
  if not values.no_face_detection:
    detector = face_detection.FaceDetector(face_flags.detector_settings())
  rows = grad_cam.explain_images(
    items,
    model,
    detector,
    face_flags.crop_settings(),
    class_names,
    values.output,
    class_name=values.class_name,
    layer_name=values.layer,
    batch_size=values.batch_size,
    grayscale=values.grayscale,
  )
  logging.info(
    "Wrote %d Grad-CAM figures for %d images to %s.", len(rows), len(items), values.output
  )


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["model", "images", "output"])
  errors.run(main)
