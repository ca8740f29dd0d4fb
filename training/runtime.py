"""Run set-up and choices that depend on the machine: precision, progress output."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from common import io_utils, tf_environment
from common.errors import ConfigError
from configs import validation
from training import distribution, run_record, summaries
from training.run_paths import RunPaths

# CPU flags of bfloat16 matrix instructions (Linux /proc/cpuinfo names).
_NATIVE_BFLOAT16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_has_native_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
  """Whether the CPU multiplies bfloat16 in hardware (AMX-BF16 or AVX512-BF16).

  Without them TensorFlow emulates bfloat16: on a 2-core AMD EPYC with AVX2
  only, the fer2013_cpu train step ran at 11 images/s in mixed_bfloat16
  against 150 in float32. Reads the Linux flags; False where there are none.
  """
  try:
    with open(cpuinfo_path) as cpuinfo:
      for line in cpuinfo:
        if line.startswith("flags"):
          return not _NATIVE_BFLOAT16_CPU_FLAGS.isdisjoint(line.split(":", 1)[-1].split())
  except OSError:
    pass
  return False


def resolve_dtype_policy(setting: str) -> str:
  """Maps `config.training.mixed_precision` to a Keras dtype policy name.

  `auto` picks mixed_bfloat16 on GPUs with bfloat16 tensor cores (compute
  capability 8.0+, e.g. A100/H100), mixed_float16 on older GPUs and float32 on
  CPUs. `mixed_bfloat16_if_native` picks mixed_bfloat16 wherever the hardware
  multiplies bfloat16 natively (those GPUs, TPUs, CPUs with AMX-BF16 or
  AVX512-BF16) and float32 elsewhere, where emulated bfloat16 is far slower.
  """
  if setting in validation.DTYPE_POLICIES:
    return setting
  if setting not in (validation.AUTO_PRECISION, validation.BFLOAT16_IF_NATIVE):
    raise ValueError(
      f"config.training.mixed_precision={setting!r}; expected one of "
      f"{list(validation.MIXED_PRECISION)}."
    )
  if_native = setting == validation.BFLOAT16_IF_NATIVE
  if if_native and tf.config.list_logical_devices("TPU"):
    return "mixed_bfloat16"  # TPUs compute in bfloat16 natively.
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    native = if_native and cpu_has_native_bfloat16()
    policy = "mixed_bfloat16" if native else "float32"
    if if_native:
      logging.info(
        "CPU %s bfloat16 matrix instructions (AMX-BF16/AVX512-BF16): using %s.",
        "with" if native else "without",
        policy,
      )
    return policy
  capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
  if tuple(capability) >= (8, 0):
    policy = "mixed_bfloat16"
  else:
    policy = "float32" if if_native else "mixed_float16"
  logging.info("GPU compute capability %s: using %s.", capability, policy)
  return policy


@keras.saving.register_keras_serializable(package="face_analysis")
class StepCountingLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
  """Keras' dynamic loss scaling, with a step counter that counts skipped steps too.

  Keras 3's `LossScaleOptimizer` skips the update of a step whose gradients
  overflow and leaves `iterations` (its inner optimizer's) where it was. Every
  float16 run skips a few steps while the scale settles, so the counter falls
  behind the steps taken, and the trainers read it for the validation cadence,
  the checkpoint names, the learning-rate schedule and resume. As the Keras 2
  (`tf.keras`) `LossScaleOptimizer` did, a skipped step here still counts, so
  a float16 run is on the same iterations as a float32 one.
  """

  def _stateful_handle_non_finite_grads(self) -> None:
    super()._stateful_handle_non_finite_grads()
    self.inner_optimizer.iterations.assign_add(1)


def wrap_optimizer_for_policy(
  optimizer: keras.optimizers.Optimizer, policy: str
) -> keras.optimizers.Optimizer:
  """Adds dynamic loss scaling where float16 gradients would underflow."""
  if policy in ("mixed_float16", "float16"):
    return StepCountingLossScaleOptimizer(optimizer)
  return optimizer


def resolve_verbose(setting: str | int) -> int:
  """`auto`: a progress bar on a terminal, one line per epoch in log files."""
  if setting == "auto":
    return 1 if sys.stdout.isatty() else 2
  if setting in (0, 1, 2, "0", "1", "2"):
    return int(setting)
  raise ValueError(f"config.logging.verbose={setting!r}; expected 'auto', 0, 1 or 2.")


def resolve_jit_compile(
  setting: bool | str, strategy: tf.distribute.Strategy, deterministic: bool
) -> bool:
  """Whether the train step compiles with XLA, from `config.training.jit_compile`.

  `auto` follows Keras' own rule: XLA on GPUs and TPUs, not on CPUs (where it
  is slower, see the README's figures), not with several replicas and not
  with deterministic ops (Keras turns XLA off in both cases). `True` compiles
  on any device, the CPU included; `False` never.
  """
  text = str(setting).strip().lower()
  if text not in ("auto", "true", "false"):
    raise ValueError(f"config.training.jit_compile={setting!r}; expected auto, true or false.")
  if text == "auto":
    accelerators = [d for d in tf.config.list_physical_devices() if d.device_type != "CPU"]
    return bool(accelerators) and strategy.num_replicas_in_sync == 1 and not deterministic
  if text == "true" and deterministic:
    raise ConfigError(validation.XLA_WITH_DETERMINISM + ".")
  return text == "true"


def compile_model(model: keras.Model, jit_compile: bool, **kwargs: Any) -> None:
  """`model.compile(jit_compile=..., **kwargs)`, refusing a silent fall back to no XLA.

  Keras compiles without XLA, with a warning, when any layer declares
  `supports_jit=False`; a run asked to use XLA stops here instead, naming the
  layers.
  """
  if jit_compile:
    blocking = [
      f"{layer.name} ({type(layer).__name__})"
      for layer in model._flatten_layers(include_self=False)  # As Keras checks them.
      if not layer.supports_jit
    ]
    if blocking:
      raise ConfigError(
        f"config.training.jit_compile=True, but these layers of {model.name} cannot be "
        f"compiled with XLA (supports_jit=False): {', '.join(blocking)}. Set "
        "config.training.jit_compile=False, or replace the layers."
      )
  model.compile(jit_compile=jit_compile, **kwargs)
  if bool(model.jit_compile) != jit_compile:
    raise RuntimeError(f"Keras set jit_compile={model.jit_compile}; expected {jit_compile}.")


@dataclasses.dataclass(frozen=True)
class Run:
  """What a trainer needs to know about where it runs."""

  paths: RunPaths  # Where this process writes (the run directory for the chief).
  resume: RunPaths  # The chief's run directory: checkpoints and metrics to resume from.
  strategy: tf.distribute.Strategy

  def scope(self):
    """Variables (model, optimizer, metrics) are created in this scope."""
    return self.strategy.scope()


def start_run(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Sets up the strategy, removes temporaries of an interrupted run and seeds every RNG.

  The resolved config is written later, by `write_config`, once the resume
  checks have passed and the checkpoint is restored (the resume contract,
  `run_record`: a refused rerun changes nothing in the workdir).

  The strategy comes first: MultiWorkerMirroredStrategy must be created
  before other TensorFlow work. With `config.training.deterministic`,
  TensorFlow's ops are made deterministic too. That switch is process-wide
  and cannot be turned off again, so it belongs to a process that runs one
  training job.
  """
  strategy = distribution.make_strategy(config.training.distribution)
  distribution.check_batch_size(config.schedule.batch_size, strategy)
  paths = RunPaths(distribution.output_dir(workdir, strategy))
  os.makedirs(paths.workdir, exist_ok=True)
  for path in run_record.remove_temporaries(paths.workdir):
    logging.info("Removed %s, left by an interrupted write.", path)
  keras.utils.set_random_seed(config.seed)
  if config.training.deterministic:
    tf.config.experimental.enable_op_determinism()
    if tf_environment.onednn_enabled():
      logging.warning(
        "Deterministic ops are on, but TensorFlow loaded with its oneDNN CPU kernels, whose "
        "sums can differ in the last bits between runs; set %s=0 before TensorFlow loads "
        "(train_main.py does so for deterministic runs).",
        tf_environment.ONEDNN_VARIABLE,
      )
    else:
      logging.info("Deterministic ops enabled (seed %d), oneDNN CPU kernels off.", config.seed)
  return Run(paths, RunPaths(workdir), strategy)


def write_config(paths: RunPaths, config: ml_collections.ConfigDict) -> None:
  """Writes the resolved config (the run's record) as config.json and to TensorBoard."""
  io_utils.write_text(paths.config, config.to_json_best_effort(indent=2) + "\n")
  summaries.write_config_text(paths.tensorboard_images, config)


def prepare_model_for_strategy(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
  """With several replicas, BatchNorm uses the statistics of the global batch."""
  if strategy.num_replicas_in_sync > 1:
    changed = distribution.synchronize_batch_norm(model)
    logging.info(
      "%d replicas: %d BatchNormalization layers synchronised.",
      strategy.num_replicas_in_sync,
      changed,
    )
