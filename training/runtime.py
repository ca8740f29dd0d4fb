"""Run set-up and choices that depend on the machine: precision, progress output."""

from __future__ import annotations

import dataclasses
import os
import sys

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from training import distribution, io_utils, summaries
from training.run_paths import RunPaths

DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16", "bfloat16", "float16")


def resolve_dtype_policy(setting: str) -> str:
  """Maps `config.training.mixed_precision` to a Keras dtype policy name.

  `auto` picks mixed_bfloat16 on GPUs with bfloat16 tensor cores (compute
  capability 8.0+, e.g. A100/H100), mixed_float16 on older GPUs and float32 on
  CPUs, where reduced precision is slower, not faster.
  """
  if setting != "auto":
    if setting not in DTYPE_POLICIES:
      raise ValueError(
        f"config.training.mixed_precision={setting!r}; expected 'auto' or one of "
        f"{list(DTYPE_POLICIES)}."
      )
    return setting
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    return "float32"
  capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
  policy = "mixed_bfloat16" if tuple(capability) >= (8, 0) else "mixed_float16"
  logging.info("GPU compute capability %s: using %s.", capability, policy)
  return policy


def wrap_optimizer_for_policy(
  optimizer: keras.optimizers.Optimizer, policy: str
) -> keras.optimizers.Optimizer:
  """Adds dynamic loss scaling where float16 gradients would underflow."""
  if policy in ("mixed_float16", "float16"):
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def resolve_verbose(setting: str | int) -> int:
  """`auto`: a progress bar on a terminal, one line per epoch in log files."""
  if setting == "auto":
    return 1 if sys.stdout.isatty() else 2
  if setting in (0, 1, 2, "0", "1", "2"):
    return int(setting)
  raise ValueError(f"config.logging.verbose={setting!r}; expected 'auto', 0, 1 or 2.")


def resolve_jit_compile(setting: bool | str) -> bool | str:
  """`config.training.jit_compile`: True, False, or 'auto' (Keras: XLA on GPUs and TPUs only)."""
  text = str(setting).strip().lower()
  if text in ("auto", "true", "false"):
    return {"auto": "auto", "true": True, "false": False}[text]
  raise ValueError(f"config.training.jit_compile={setting!r}; expected auto, true or false.")


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
  """Sets up the strategy, writes the resolved config and seeds every RNG.

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
  io_utils.write_text(paths.config, config.to_json_best_effort(indent=2) + "\n")
  summaries.write_config_text(paths.tensorboard_images, config)
  keras.utils.set_random_seed(config.seed)
  if config.training.deterministic:
    tf.config.experimental.enable_op_determinism()
    logging.info("Deterministic ops enabled (seed %d).", config.seed)
  return Run(paths, RunPaths(workdir), strategy)


def prepare_model_for_strategy(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
  """With several replicas, BatchNorm uses the statistics of the global batch."""
  if strategy.num_replicas_in_sync > 1:
    changed = distribution.synchronize_batch_norm(model)
    logging.info(
      "%d replicas: %d BatchNormalization layers synchronised.",
      strategy.num_replicas_in_sync,
      changed,
    )
