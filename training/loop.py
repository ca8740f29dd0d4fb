"""The one training loop: runs any `Task` through `model.fit` (big_vision's single train.py).

Outputs under the working directory, named in `run_paths.RunPaths`:
config.json, metrics.csv (a row per validation), checkpoints/best.keras (the
task's monitored quantity), checkpoints/last.keras (every
`schedule.log_every_steps` steps, or at each validation), tensorboard/,
test_report.json (when the data have a test split), export/<version>/, and
what a task's own callbacks write (deepfake: checkpoints/it*.keras,
attention/).

Cadence is counted in optimizer steps: a `model.fit` epoch is one round of
`steps_per_round` steps ending in a validation (an epoch of the training data
for emotion, `validation_interval` steps for deepfake). Rerunning the same
command resumes from `checkpoints/last.keras` (weights, optimizer state and its
step counter, so the learning-rate schedule continues too); a run stopped
inside a round first finishes that round, so validations stay on the cadence.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any

import keras
import ml_collections
from absl import logging

from common import io_utils, model_metadata
from common.errors import ConfigError, ResumeError
from configs import validation
from inference import model_io
from training import callbacks as callbacks_lib
from training import distribution, run_record, runtime, summaries, weight_averaging
from training.run_paths import RunPaths
from training.task import Task, TrainingData

TASKS = ("emotion", "deepfake")


def make_task(config: ml_collections.ConfigDict) -> Task:
  """The task named by `config.task`."""
  if config.task == "emotion":
    from training.emotion import EmotionTask

    return EmotionTask(config)
  if config.task == "deepfake":
    from training.deepfake import DeepfakeTask

    return DeepfakeTask(config)
  raise ConfigError(f"config.task={config.task!r}; expected one of {list(TASKS)}.")


def compile_model(
  model: keras.Model, task: Task, steps_per_epoch: float, policy: str, jit_compile: bool
) -> None:
  """Compiles `model` with the task's optimizer (with weight averaging if set), loss, metrics."""
  optimizer = weight_averaging.with_weight_averaging(
    task.optimizer(steps_per_epoch), task.config.training.ema_momentum
  )
  runtime.compile_model(
    model,
    jit_compile,
    optimizer=runtime.wrap_optimizer_for_policy(optimizer, policy),
    loss=task.loss(),
    metrics=task.metrics(),
    steps_per_execution=task.config.training.steps_per_execution,
  )


def check_resume_point(path: str, iteration: int, steps_per_round: int, mid_round: bool) -> None:
  """Refuses a checkpoint off the cadence when checkpoints are only written at validations.

  Then a step count that is not a whole number of rounds means the batch size
  or the data changed since the checkpoint: the rounds would not line up.
  """
  if iteration % steps_per_round and not mid_round:
    raise ResumeError(
      f"Cannot resume from {path}: it was saved after {iteration} steps, not a whole "
      f"number of epochs (validation rounds) of {steps_per_round} steps; the batch size "
      "or data changed since. Use a new --workdir for a new configuration."
    )


def _callbacks(
  task: Task,
  model: keras.Model,
  data: TrainingData,
  paths: RunPaths,
  history: list,
  metadata: dict[str, Any],
) -> list[keras.callbacks.Callback]:
  config = task.config
  log_every = config.schedule.log_every_steps
  control, drawing = task.callbacks(model, paths, history)
  checkpoints = [
    callbacks_lib.AtomicModelCheckpoint(
      paths.best_checkpoint,
      monitor=task.monitor,
      mode=task.monitor_mode,
      initial_best=callbacks_lib.best_value(history, task.monitor, task.monitor_mode),
      metadata=metadata,
    )
  ]
  if task.keep_validation_checkpoints:
    checkpoints.append(
      callbacks_lib.AtomicModelCheckpoint(paths.validation_checkpoint, metadata=metadata)
    )
  checkpoints.append(
    callbacks_lib.AtomicModelCheckpoint(
      paths.last_checkpoint, every_n_iterations=log_every or None, metadata=metadata
    )
  )
  samples = task.samples(model)
  averaging = [weight_averaging.ValidateAveragedWeights()] if config.training.ema_momentum else []
  return [
    *averaging,
    callbacks_lib.StopOnNonFiniteLoss(),
    callbacks_lib.StopAtIteration(data.max_steps),
    callbacks_lib.MetricsCsvLogger(paths.metrics, history, task.epoch_of_iteration),
    *control,
    *checkpoints,
    *drawing,
    keras.callbacks.TensorBoard(paths.tensorboard, update_freq=log_every or "epoch"),
    summaries.AugmentedSamples(
      paths.tensorboard_images, samples.inputs, samples.augment, columns=samples.columns
    ),
    summaries.ValidationFigures(
      paths.tensorboard_images, task.class_names, positive_class=task.positive_class
    ),
  ]


def _restore(model: keras.Model, run: runtime.Run, recover: bool) -> int:
  """Restores `last.keras`; with `recover`, the newest intact checkpoint when it is damaged.

  A damaged or missing `last.keras` is kept as `last.keras.damaged` and the
  newest other checkpoint that loads (deepfake `it*.keras`, `best.keras`) is
  resumed from, with a warning; `run_record.check_resume_files` refused the
  run without `recover`.
  """
  last = run.resume.last_checkpoint
  if not recover or (os.path.exists(last) and not run_record.checkpoint_problem(last)):
    return callbacks_lib.restore_training_state(model, last)
  if not os.path.exists(last) and not run_record.read_metrics(run.resume.metrics, recover=True):
    return callbacks_lib.restore_training_state(model, last)  # A new run: nothing to recover.
  if distribution.is_chief(run.strategy):
    kept = run_record.set_aside(last)
    if kept:
      logging.warning("--recover: %s is damaged; kept as %s.", last, kept)
  for candidate in run_record.intact_checkpoints(run.resume):
    try:
      iteration = callbacks_lib.restore_training_state(model, candidate)
    except ValueError as error:
      logging.warning("--recover: %s cannot be restored (%s).", candidate, error)
      continue
    logging.warning("--recover: resuming from %s at iteration %d.", candidate, iteration)
    return iteration
  logging.warning("--recover: no intact checkpoint; training starts from iteration 0.")
  return callbacks_lib.restore_training_state(model, last)


def _keep_metrics_copy(run: runtime.Run, recover: bool) -> None:
  """With `recover`, metrics.csv is copied to `metrics.csv.before_recover` before it is rewritten.

  The rows after the checkpoint resumed from, and a damaged row, are dropped
  from metrics.csv; the copy keeps them.
  """
  path = run.resume.metrics
  if not recover or not distribution.is_chief(run.strategy) or not os.path.exists(path):
    return
  kept = run_record.unused_name(path + ".before_recover")
  shutil.copyfile(path, kept)
  logging.warning("--recover: %s copied to %s before it is rewritten.", path, kept)


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, recover: bool = False
) -> dict[str, Any]:
  """Trains `config.task`, evaluates the best (or final) checkpoint on the test split, exports it.

  The config is validated and compared with the workdir's record before
  anything is written (`configs.validation`, `run_record`); `recover` resumes
  past a damaged `last.keras` or `metrics.csv` (see `_restore`).

  Returns:
    The run summary: the task's figures (best validation value and where it
    was reached), replicas, dtype policy, XLA, the test report (None without
    a test split) and the export path (None when export is off).
  """
  validation.validate(config)
  changes = run_record.check_before_start(config, workdir, recover)
  task = make_task(config)
  run = runtime.start_run(config, workdir)
  paths = run.paths
  data = task.load_data(run.strategy)

  policy = runtime.resolve_dtype_policy(config.training.mixed_precision)
  jit_compile = runtime.resolve_jit_compile(
    config.training.jit_compile, run.strategy, config.training.deterministic
  )
  with run.scope():
    model = task.build_model(policy, jit_compile)
    runtime.prepare_model_for_strategy(model, run.strategy)
    compile_model(model, task, data.steps_per_epoch, policy, jit_compile)
    iteration = _restore(model, run, recover)
  round_steps = data.steps_per_round
  check_resume_point(
    run.resume.last_checkpoint, iteration, round_steps, bool(config.schedule.log_every_steps)
  )
  if iteration:
    logging.info("Resuming from %s at iteration %d.", run.resume.last_checkpoint, iteration)
  _keep_metrics_copy(run, recover)
  history = callbacks_lib.rows_up_to(run.resume.metrics, iteration, recover)
  runtime.write_config(paths, config)
  run_record.record_changes(paths.workdir, changes, iteration)
  for change in changes:
    logging.info(
      "From iteration %d, config.%s is %r (was %r).",
      iteration,
      change.field,
      change.after,
      change.before,
    )
  metadata = model_metadata.describe(config.task, task.class_names)  # In every checkpoint.
  with task.reading_errors():
    callbacks = _callbacks(task, model, data, paths, history, metadata)
  logging.info(
    "Training %s (%s, XLA %s, %d parameters) from step %d to %d, validating every %d steps.",
    model.name,
    policy,
    "on" if jit_compile else "off",
    model.count_params(),
    iteration,
    data.max_steps,
    round_steps,
  )

  def fit(**kwargs: Any) -> None:
    with task.reading_errors():
      model.fit(  # The one call of `model.fit` in the product.
        data.train,
        validation_data=data.validation,
        verbose=runtime.resolve_verbose(config.logging.verbose),
        callbacks=callbacks,
        shuffle=False,  # The datasets shuffle themselves.
        **kwargs,
      )

  finished = iteration >= data.max_steps or task.finished(model)
  done_in_round = iteration % round_steps
  if not finished and done_in_round:
    # Finish the interrupted round so that validations stay on the cadence.
    fit(steps_per_epoch=round_steps - done_in_round, epochs=1)
    iteration = callbacks_lib.current_iteration(model)
    finished = model.stop_training or iteration >= data.max_steps
  if not finished:
    fit(
      steps_per_epoch=round_steps if data.repeats else None,
      initial_epoch=iteration // round_steps,
      epochs=math.ceil(data.max_steps / round_steps),
    )
  return _finish(task, run, model, policy, metadata)


def _finish(
  task: Task, run: runtime.Run, model: keras.Model, policy: str, metadata: dict[str, Any]
) -> dict[str, Any]:
  """Test report, export and HParams summary of the checkpoint `export.checkpoint` names."""
  config, paths = task.config, run.paths
  rows = callbacks_lib.read_metrics(paths.metrics)
  pick = max if task.monitor_mode == "max" else min
  best_row = pick(rows, key=lambda r: float(r[task.monitor]))
  if config.export.checkpoint == "final":
    path = paths.final_checkpoint
    iteration = callbacks_lib.current_iteration(model)
    callbacks_lib.save_checkpoint(model, path, metadata)
  else:
    path = paths.best_checkpoint
    iteration = int(best_row["iteration"])
  chosen = model_io.load_checkpoint(path)
  test = task.evaluate_test(chosen, path)
  if test is not None:
    test["iteration"] = iteration
  task_summary, final_metrics = task.summarize(rows, best_row, test)
  summary: dict[str, Any] = {
    **task_summary,
    "replicas": run.strategy.num_replicas_in_sync,
    "dtype_policy": policy,
    "jit_compile": bool(model.jit_compile),  # What Keras compiled the train step with.
    "checkpoint": path,  # The weights tested and exported.
    "test": test,
    "export": None,
  }
  if test is not None:
    io_utils.write_json(paths.test_report, test)
  if distribution.is_chief(run.strategy):  # One HParams row per run, not per worker.
    summaries.write_hparams(
      paths.tensorboard, config, final_metrics, step=int(rows[-1]["iteration"])
    )
  if config.export.enabled:
    summary["export"] = task.export(chosen, paths.export(config.export.version))
    logging.info("Exported the SavedModel to %s.", summary["export"])
  logging.info("Summary: %s", json.dumps({k: v for k, v in summary.items() if k != "test"}))
  return summary
