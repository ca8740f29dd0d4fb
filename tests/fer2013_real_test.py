"""Optional check on the real FER2013 beside the checkout (skipped when absent)."""

import os

import pytest
from conftest import REPO_ROOT

from common import labels
from configs import emotion as emotion_config
from input_pipeline import emotion_data

FER2013_DIR = os.path.join(REPO_ROOT, "..", "shared", "data", "fer2013")

pytestmark = pytest.mark.skipif(
  not os.path.isdir(FER2013_DIR), reason="real FER2013 not present at ../shared/data/fer2013"
)


def test_real_fer2013_folders_load_with_the_right_class_counts():
  config = emotion_config.get_config()
  config.data.dir = FER2013_DIR
  data = emotion_data.load(config, emotion_data.DEFAULT_FER2013_DIR)
  num_classes = len(labels.EMOTION_CLASSES)
  train_counts = [
    a + b
    for a, b in zip(
      data.train.class_counts(num_classes), data.validation.class_counts(num_classes), strict=True
    )
  ]
  assert dict(zip(labels.EMOTION_CLASSES, train_counts, strict=True)) == (
    labels.FER2013_TRAIN_COUNTS
  )
  assert len(data.test) == 3589
  assert data.train.images.shape[1:] == (48, 48, 1)
  assert len(data.validation) == 2871  # 10% carved from Training, stratified
