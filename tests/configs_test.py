"""Configs: parsing or validating one imports no TensorFlow; both share configs/common.py."""

import subprocess
import sys

import pytest

from configs import common, deepfake, emotion

VARIANTS = {"emotion": ("", "quick", "fer2013_cpu", "tiny"), "deepfake": ("", "quick", "tiny")}


@pytest.mark.parametrize("task", sorted(VARIANTS))
def test_parsing_a_config_imports_no_tensorflow(task):
  """As train_main parses it (config_flags loads the file by path), then every variant."""
  code = (
    "import sys\n"
    "from ml_collections import config_flags\n"
    "from absl import flags\n"
    f"config_flags.DEFINE_config_file('config', 'configs/{task}.py')\n"
    "flags.FLAGS(['prog'])\n"
    "assert flags.FLAGS.config.task\n"
    f"from configs import {task}, validation\n"
    # What train_main checks before TensorFlow loads imports none either.
    "from common import errors, outputs\n"
    "from training import run_record\n"
    f"for variant in {VARIANTS[task]!r}:\n"
    f"  validation.validate({task}.get_config(variant))\n"
    "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
    "assert not heavy, heavy\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_both_configs_extend_the_shared_blocks():
  """Every shared field exists in both task configs, under the same name."""
  shared = set(_fields(common.get_config()))
  for module, variants in ((emotion, VARIANTS["emotion"]), (deepfake, VARIANTS["deepfake"])):
    for variant in variants:
      assert shared <= set(_fields(module.get_config(variant))), (module.__name__, variant)


def test_an_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="Unknown variant 'huge'"):
    emotion.get_config("huge")
  with pytest.raises(ValueError, match="Unknown variant 'huge'"):
    deepfake.get_config("huge")


def _fields(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from _fields(value, f"{prefix}{key}.")
    else:
      yield prefix + key


def test_the_fer2013_cpu_preset_builds_its_half_width_resnet18():
  """The preset's model: 48x48 input, width 32 with the stem pool (2,868,455 weights)."""
  import keras

  from keras_models import emotion as emotion_model
  from training import runtime

  config = emotion.get_config("fer2013_cpu")
  policy = runtime.resolve_dtype_policy(config.training.mixed_precision)
  assert policy == ("mixed_bfloat16" if runtime.cpu_has_native_bfloat16() else "float32")
  model = emotion_model.build_model(config, policy)
  assert model.count_params() == 2_868_455
  outputs = model(keras.ops.zeros((2, 48, 48, 3), "uint8"), training=False)
  assert tuple(outputs.shape) == (2, 7) and outputs.dtype == "float32"
