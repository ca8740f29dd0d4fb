"""The embedded synthetic faces: deterministic, FER-like, all classes."""

import numpy as np

from common import labels
from input_pipeline import synthetic_faces


def test_split_shapes_dtypes_and_determinism():
  images, classes = synthetic_faces.make_split("train", 20, image_size=32, seed=3)
  assert images.shape == (20, 32, 32, 1) and images.dtype == np.uint8
  assert classes.shape == (20,) and classes.dtype == np.int32
  again, again_classes = synthetic_faces.make_split("train", 20, image_size=32, seed=3)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(classes, again_classes)


def test_prefix_is_stable_and_splits_and_seeds_differ():
  small, _ = synthetic_faces.make_split("train", 5, image_size=24, seed=0)
  large, _ = synthetic_faces.make_split("train", 10, image_size=24, seed=0)
  np.testing.assert_array_equal(small, large[:5])
  validation, _ = synthetic_faces.make_split("validation", 5, image_size=24, seed=0)
  other_seed, _ = synthetic_faces.make_split("train", 5, image_size=24, seed=1)
  assert not np.array_equal(small, validation)
  assert not np.array_equal(small, other_seed)


def test_class_frequencies_follow_fer2013():
  probabilities = synthetic_faces.class_probabilities()
  assert np.isclose(probabilities.sum(), 1.0)
  assert labels.EMOTION_CLASSES[int(np.argmax(probabilities))] == "happy"
  assert labels.EMOTION_CLASSES[int(np.argmin(probabilities))] == "disgust"
  _, classes = synthetic_faces.make_split("train", 400, image_size=16, seed=0)
  counts = np.bincount(classes, minlength=7)
  assert (counts > 0).all()
  assert (
    counts[labels.EMOTION_CLASSES.index("happy")]
    > counts[labels.EMOTION_CLASSES.index("disgust")] * 4
  )


def test_images_vary_and_expressions_differ():
  faces = {
    name: synthetic_faces.draw_face(name, np.random.default_rng(7), 48)
    for name in labels.EMOTION_CLASSES
  }
  # Same identity, pose and lighting (same generator seed): only the
  # expression differs, and every pair of expressions differs visibly.
  names = list(faces)
  for i, a in enumerate(names):
    for b in names[i + 1 :]:
      difference = np.abs(faces[a].astype(int) - faces[b].astype(int))
      assert (difference > 30).sum() > 10, (a, b)
  images, _ = synthetic_faces.make_split("test", 8, image_size=48, seed=0)
  assert images.std() > 20  # not blank
