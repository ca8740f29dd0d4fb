"""Checks every config value, and the relations between them, before anything runs.

`validate(config)` is called by `train_main.py` and by the tools that take a
training config, before any data is read or anything written, so that a zero
batch size or an inverted range is one line naming the field instead of a
ZeroDivisionError or a TensorFlow shape error an hour later. It imports no
TensorFlow (tests/configs_test.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_collections

from common.errors import ConfigError

TASKS = ("emotion", "deepfake")
SOURCES = {
  "emotion": ("auto", "folder", "csv", "synthetic", "tfrecord"),
  "deepfake": ("auto", "csv", "synthetic", "tfrecord"),
}
# Keras dtype policies, and the settings `training.runtime.resolve_dtype_policy`
# turns into one of them on the machine at hand.
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16", "bfloat16", "float16")
AUTO_PRECISION = "auto"
BFLOAT16_IF_NATIVE = "mixed_bfloat16_if_native"
MIXED_PRECISION = (AUTO_PRECISION, BFLOAT16_IF_NATIVE, *DTYPE_POLICIES)
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker", "tpu")
EXPORT_CHECKPOINTS = ("best", "final")
EMOTION_OPTIMIZERS = ("adamw", "sgd")
# Refused here and by `training.runtime.resolve_jit_compile` (for callers without a config).
XLA_WITH_DETERMINISM = (
  "config.training.jit_compile=True and config.training.deterministic=True: Keras compiles "
  "without XLA when TensorFlow's op determinism is on; set one of them to False"
)
# The smallest input side each model accepts: the emotion ResNet18 halves a
# 96 px face three times (four with the stem pool) and needs at least a 1x1
# map at the end; EfficientNetB0 halves it five times.
MIN_IMAGE_SIZE = {"emotion": 8, "deepfake": 32}


class _Checker:
  """Collects every problem of a config, so one run of the command names them all."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.problems: list[str] = []

  def get(self, field: str) -> Any:
    value: Any = self.config
    for part in field.split("."):
      value = value[part]
    return value

  def has(self, field: str) -> bool:
    try:
      self.get(field)
    except (KeyError, AttributeError):
      return False
    return True

  def check(self, field: str, ok: Callable[[Any], bool], expected: str) -> None:
    if not self.has(field):
      return
    value = self.get(field)
    try:
      good = ok(value)
    except (TypeError, ValueError):
      good = False
    if not good:
      self.problems.append(f"config.{field}={_show(value)}: expected {expected}")

  def integer(self, field: str, low: int, high: float = math.inf) -> None:
    text = f"an integer >= {low}" if high == math.inf else f"an integer in {low}..{high}"
    self.check(field, lambda v: _is_int(v) and low <= v <= high, text)

  def number(self, field: str, low: float, high: float, low_open=False, high_open=False) -> None:
    text = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def ok(v: Any) -> bool:
      if not _is_number(v) or not math.isfinite(v):
        return False
      above = v > low if low_open else v >= low
      below = v < high if high_open else v <= high
      return above and below

    self.check(field, ok, text)

  def probability(self, field: str) -> None:
    self.number(field, 0.0, 1.0)

  def choice(self, field: str, choices: tuple[Any, ...]) -> None:
    self.check(field, lambda v: v in choices, f"one of {list(choices)}")

  def pair(
    self, field: str, low: float, high: float, low_open=False, high_open=False, size: int = 2
  ) -> None:
    """A (low, high) range inside [low, high] with its low end <= its high end."""
    bound = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def ok(v: Any) -> bool:
      values = list(v)
      if len(values) != size or not all(_is_number(x) and math.isfinite(x) for x in values):
        return False
      inside = all(
        (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
        for x in values
      )
      return inside and (size != 2 or values[0] <= values[1])

    what = "(low, high) with low <= high, both in" if size == 2 else f"{size} numbers in"
    self.check(field, ok, f"{what} {bound}")


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
  return repr(tuple(value)) if isinstance(value, list) else repr(value)


def _check_shared(c: _Checker, task: str) -> None:
  c.integer("seed", 0)
  c.choice("data.source", SOURCES[task])
  c.check(
    "data.class_names",
    lambda v: len(v) >= 2 and all(isinstance(n, str) and n for n in v) and len(set(v)) == len(v),
    "at least 2 unique non-empty class names",
  )
  c.check(
    "data.class_names",
    lambda v: not any("," in str(n) for n in v),
    "names without commas: write a tuple, --config.data.class_names=\"('a', 'b')\", or "
    "repeat the flag once per name",
  )
  c.integer("data.image_size", MIN_IMAGE_SIZE[task], 4096)
  c.number("data.validation_fraction", 0.0, 1.0, high_open=True)
  c.integer("data.shuffle_buffer", 1)
  c.number("optimizer.learning_rate", 0.0, 10.0, low_open=True)
  c.integer("schedule.batch_size", 1)
  c.number("schedule.warmup_epochs", 0.0, math.inf)
  c.number("schedule.min_lr_fraction", 0.0, 1.0)
  c.integer("schedule.log_every_steps", 0)
  c.choice("training.mixed_precision", MIXED_PRECISION)
  c.check(
    "training.jit_compile",
    lambda v: str(v).lower() in ("auto", "true", "false"),
    "auto, True or False",
  )
  c.choice("training.distribution", DISTRIBUTIONS)
  c.check("training.deterministic", lambda v: isinstance(v, bool), "True or False")
  if (
    str(c.get("training.jit_compile")).lower() == "true" and c.get("training.deterministic") is True
  ):
    c.problems.append(XLA_WITH_DETERMINISM)
  c.integer("training.steps_per_execution", 1)
  c.number("training.ema_momentum", 0.0, 1.0, high_open=True)
  c.check("logging.verbose", lambda v: v in ("auto", 0, 1, 2, "0", "1", "2"), "auto, 0, 1 or 2")
  c.integer("export.version", 1)
  c.choice("export.checkpoint", EXPORT_CHECKPOINTS)


def _check_emotion(c: _Checker) -> None:
  c.integer("data.synthetic.num_train", 1)
  c.integer("data.synthetic.num_validation", 1)
  c.integer("data.synthetic.num_test", 0)
  c.integer("data.synthetic.image_size", 8, 4096)
  c.number("data.eval_crop_fraction", 0.0, 1.0, low_open=True)
  c.number("data.ten_crop_fraction", 0.0, 1.0, low_open=True)
  c.pair("augment.crop_area", 0.0, 1.0, low_open=True)
  c.pair("augment.crop_aspect_ratio", 0.0, 100.0, low_open=True)
  c.pair("augment.color_jitter", 0.0, 1.0, size=4)
  c.check(
    "augment.color_jitter",
    lambda v: v[3] <= 0.5,
    "(brightness, contrast, saturation, hue) with hue in [0, 0.5]",
  )
  c.probability("augment.color_jitter_probability")
  c.probability("augment.grayscale_probability")
  c.number("augment.rotation_degrees", 0.0, 180.0)
  c.probability("augment.erasing_probability")
  c.pair("augment.erasing_area", 0.0, 1.0, low_open=True)
  c.integer("model.width", 1)
  c.integer("model.head_units", 1)
  c.number("model.dropout", 0.0, 1.0, high_open=True)
  c.check("model.stem_pool", lambda v: isinstance(v, bool), "True or False")
  c.choice("optimizer.name", EMOTION_OPTIMIZERS)
  c.number("optimizer.weight_decay", 0.0, math.inf)
  c.number("optimizer.momentum", 0.0, 1.0, high_open=True)
  c.number("optimizer.beta_1", 0.0, 1.0, high_open=True)
  c.number("optimizer.beta_2", 0.0, 1.0, high_open=True)
  c.number("optimizer.clipnorm", 0.0, math.inf)
  c.integer("schedule.num_epochs", 1)
  c.number("training.label_smoothing", 0.0, 1.0, high_open=True)
  config = c.config
  ten_crop, eval_crop = config.data.ten_crop_fraction, config.data.eval_crop_fraction
  if _is_number(ten_crop) and _is_number(eval_crop) and ten_crop > eval_crop + 1e-9:
    c.problems.append(
      f"config.data.ten_crop_fraction={ten_crop!r}: expected at most "
      f"config.data.eval_crop_fraction={eval_crop!r} (the model centre-crops every view to "
      "that fraction, so a view cannot show more of the image)"
    )
  if c.has("schedule.num_epochs") and _is_number(config.schedule.warmup_epochs):
    if _is_int(config.schedule.num_epochs) and config.schedule.warmup_epochs > (
      config.schedule.num_epochs
    ):
      c.problems.append(
        f"config.schedule.warmup_epochs={config.schedule.warmup_epochs!r}: expected at most "
        f"config.schedule.num_epochs={config.schedule.num_epochs!r}"
      )
  if _is_int(config.model.width) and _is_int(config.data.image_size) and config.model.stem_pool:
    if config.data.image_size < 16:
      c.problems.append(
        f"config.data.image_size={config.data.image_size!r}: expected >= 16 with "
        "config.model.stem_pool=True (the ResNet halves the image 4 times)"
      )


def _check_deepfake(c: _Checker) -> None:
  c.check(
    "data.class_names",
    lambda v: len(v) == 2,
    "exactly 2 class names (real, fake): the detector has 2 outputs",
  )
  c.integer("data.num_frames", 1, 1024)
  c.choice("data.clip_sampling", ("window", "spread"))
  c.number("data.subset_fraction", 0.0, 1.0, low_open=True)
  c.integer("data.synthetic.num_train_identities", 1)
  c.integer("data.synthetic.num_validation_identities", 1)
  c.integer("data.synthetic.frames_per_video", 1)
  c.integer("data.synthetic.image_size", 8, 4096)
  c.probability("data.synthetic.fake_ratio")
  c.number("augment.rotation_degrees", 0.0, 180.0)
  c.pair("augment.scale", 0.0, 10.0, low_open=True)
  c.number("augment.translation", 0.0, 1.0, high_open=True)
  c.pair("augment.color_jitter", 0.0, 1.0, size=3)
  c.probability("augment.blur_probability")
  c.number("augment.blur_sigma", 0.0, 100.0)
  c.probability("augment.jpeg_probability")
  c.pair("augment.jpeg_quality", 1.0, 100.0)
  c.check("model.attention_after", lambda v: isinstance(v, str) and v, "a backbone layer name")
  c.number("model.batch_norm_momentum", 0.0, 1.0, high_open=True)
  c.number("model.drop_connect_rate", 0.0, 1.0, high_open=True)
  c.integer("model.lstm_units", 1)
  c.number("model.dropout", 0.0, 1.0, high_open=True)
  c.integer("schedule.max_iterations", 1)
  c.integer("schedule.validation_interval", 1)
  c.choice("schedule.learning_rate_schedule", ("plateau", "cosine"))
  c.number("schedule.plateau_factor", 0.0, 1.0, low_open=True, high_open=True)
  c.integer("schedule.plateau_patience", 0)
  c.integer("schedule.plateau_cooldown", 0)
  c.integer("schedule.early_stopping_patience", 1)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming every out-of-range value of `config` (one line).

  Relations are checked too: ranges are (low, high) with low <= high,
  warmup within the schedule, the input size large enough for the model.
  The batch size's divisibility by the replica count is checked once the
  devices are known (`training.distribution.check_batch_size`).
  """
  task = config.get("task", "")
  if task not in TASKS:
    raise ConfigError(f"config.task={task!r}: expected one of {list(TASKS)}.")
  checker = _Checker(config)
  _check_shared(checker, task)
  (_check_emotion if task == "emotion" else _check_deepfake)(checker)
  if checker.problems:
    count = len(checker.problems)
    raise ConfigError(
      f"{count} config value{'s' if count > 1 else ''} out of range: "
      + "; ".join(checker.problems)
      + ". Fix the --config.FIELD=VALUE override(s) or the config file."
    )
