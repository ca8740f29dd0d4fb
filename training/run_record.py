"""The resume contract: a workdir's first config is the run's record.

A rerun in the same workdir is compared with the `config.json` there before
anything is written. A field that changes what the checkpoints and metrics
mean (everything except `MAY_CHANGE`: the task, the data and their sizes,
class names, model, optimizer, augmentation, batch size, seed...) refuses to
resume and names every differing field with both values; the workdir is left
as it was. A field of `MAY_CHANGE` (how long to train, logging and export
cadence, precision, XLA, distribution) may change; each change is appended to
`config_changes.jsonl` with the iteration it took effect at.

A damaged `checkpoints/last.keras` or `metrics.csv`, or a run with metrics
but no `last.keras`, is refused with the way out: `--recover` resumes from
the newest intact checkpoint, keeping the damaged `last.keras` as
`last.keras.damaged` and a copy of `metrics.csv` as `metrics.csv.before_recover`.

Pure Python (no TensorFlow): `train_main.py` checks all this before
TensorFlow loads.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import time
import zipfile
from typing import Any

import ml_collections

from common import io_utils
from common.errors import DataError, OutputError, ResumeError
from training.run_paths import RunPaths

# Fields that may differ between the runs of one workdir, as dotted prefixes.
MAY_CHANGE = (
  "name",
  "schedule.num_epochs",
  "schedule.max_iterations",
  "schedule.log_every_steps",
  "schedule.early_stopping_patience",
  "training.mixed_precision",
  "training.jit_compile",
  "training.distribution",
  "training.deterministic",
  "training.steps_per_execution",
  "data.shuffle_buffer",
  "logging.",
  "export.",
)
# Fields added to the configs after runs were recorded without them, each with
# the value that was then built in: a record without one resumes as if it
# held that value, so a run from before keeps resuming under today's code.
ADDED_FIELDS = {
  "data.eval_crop_fraction": 1.0,  # Evaluation saw the whole image.
  "data.ten_crop_fraction": 0.875,
  "training.ema_momentum": 0.0,  # No weight averaging.
  "optimizer.name": "adamw",
  "optimizer.momentum": 0.9,
}
# Names of the files a damaged original is kept under by --recover.
DAMAGED_SUFFIX = ".damaged"


@dataclasses.dataclass(frozen=True)
class Change:
  """A field whose value differs from the run's record."""

  field: str
  before: Any
  after: Any


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(value, dict):
    flat: dict[str, Any] = {}
    for key, item in value.items():
      flat.update(_flatten(item, f"{prefix}{key}."))
    return flat
  return {prefix[:-1]: value}


def _may_change(field: str) -> bool:
  return any(field == p or (p.endswith(".") and field.startswith(p)) for p in MAY_CHANGE)


def resolved(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as `config.json` records it (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def check_workdir(workdir: str) -> None:
  """Refuses a workdir that is a file, or that this process cannot write."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise OutputError(f"--workdir={workdir!r} is a file, not a folder; choose another --workdir.")
  existing = workdir
  while existing and not os.path.exists(existing):
    existing = os.path.dirname(existing)
  existing = existing or "."
  if not os.path.isdir(existing):
    raise OutputError(
      f"--workdir={workdir!r}: {existing!r} is a file, not a folder; choose another --workdir."
    )
  if not os.access(existing, os.W_OK | os.X_OK):
    raise OutputError(
      f"--workdir={workdir!r}: {existing!r} is not writable; make it writable or choose "
      "another --workdir."
    )


def compare(config: ml_collections.ConfigDict, workdir: str) -> list[Change]:
  """The allowed changes of `config` against the workdir's record (none for a new run).

  Raises:
    ResumeError: a field outside `MAY_CHANGE` differs (every one is named).
    DataError: the record `config.json` is not JSON.
  """
  path = RunPaths(workdir).config
  if not os.path.exists(path):
    return []
  try:
    with open(path, encoding="utf-8") as file:
      record = json.load(file)
  except (OSError, ValueError) as error:
    raise DataError(
      f"{path} (the run's config record) cannot be read ({error}); restore it, or use a new "
      "--workdir."
    ) from error
  after = _flatten(resolved(config))
  added = {field: value for field, value in ADDED_FIELDS.items() if field in after}
  before = {**added, **_flatten(record)}
  missing = object()
  changes = [
    Change(field, before.get(field, missing), after.get(field, missing))
    for field in sorted(set(before) | set(after))
    if before.get(field, missing) != after.get(field, missing)
  ]

  def show(value: Any) -> str:
    return "(absent)" if value is missing else json.dumps(value)

  refused = [c for c in changes if not _may_change(c.field)]
  if refused:
    listed = "; ".join(f"{c.field}: run {show(c.before)}, now {show(c.after)}" for c in refused)
    raise ResumeError(
      f"Cannot resume {workdir!r}: the config differs from the run's record {path} in "
      f"field(s) that change what its checkpoints mean: {listed}. Nothing was changed; use "
      "a new --workdir for a new configuration, or rerun with the run's values."
    )
  return [dataclasses.replace(c, before=None if c.before is missing else c.before) for c in changes]


def record_changes(workdir: str, changes: list[Change], iteration: int) -> None:
  """Appends the allowed `changes` and the iteration they take effect at to config_changes.jsonl."""
  if not changes:
    return
  path = os.path.join(workdir, "config_changes.jsonl")
  old = ""
  if os.path.exists(path):
    with open(path, encoding="utf-8") as file:
      old = file.read()
  entry = {
    "iteration": iteration,
    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "changes": {c.field: {"before": c.before, "after": c.after} for c in changes},
  }
  io_utils.write_text(path, old + json.dumps(entry) + "\n")


def read_metrics(path: str, recover: bool = False) -> list[dict[str, str]]:
  """Rows of a metrics CSV (empty when there is none yet), each with an integer `iteration`.

  Raises:
    DataError: a row is damaged (names the line), unless `recover`, which
      keeps the rows up to the first damaged one.
  """
  if not os.path.exists(path):
    return []
  rows: list[dict[str, str]] = []
  with open(path, newline="", encoding="utf-8", errors="replace") as file:
    reader = csv.DictReader(file)
    for row in reader:
      problem = _row_problem(row, rows)
      if problem:
        if recover:
          break
        raise DataError(
          f"{path}, line {reader.line_num}: {problem}. Restore the file, or rerun with "
          "--recover to keep the rows before this line (the file is kept as "
          f"{os.path.basename(path)}.before_recover)."
        )
      rows.append(row)
  return rows


def _row_problem(row: dict[str, Any], previous: list[dict[str, str]]) -> str:
  if None in row or any(value is None for value in row.values()):
    return "the row has a different number of fields than the header"
  text = row.get("iteration")
  if text is None:
    return "no 'iteration' column; expected the columns metrics.csv is written with"
  try:
    iteration = int(text)
  except ValueError:
    return f"iteration {text!r} is not an integer"
  if previous and iteration <= int(previous[-1]["iteration"]):
    return f"iteration {iteration} does not follow {previous[-1]['iteration']}"
  return ""


def checkpoint_problem(path: str) -> str:
  """Why the `.keras` archive at `path` cannot be read ('' when it is intact)."""
  try:
    with zipfile.ZipFile(path) as archive:
      bad = archive.testzip()
  except (OSError, zipfile.BadZipFile, EOFError) as error:
    return f"not a readable .keras archive ({type(error).__name__}: {error})"
  if bad is not None:
    return f"its member {bad!r} is corrupt"
  return ""


def intact_checkpoints(paths: RunPaths) -> list[str]:
  """Checkpoints other than last.keras that could be resumed from, newest first."""
  candidates = glob.glob(os.path.join(os.path.dirname(paths.last_checkpoint), "*.keras"))
  candidates = [
    c
    for c in candidates
    if os.path.abspath(c) != os.path.abspath(paths.last_checkpoint)
    and ".tmp" not in os.path.basename(c)
    and not checkpoint_problem(c)
  ]
  return sorted(candidates, key=os.path.getmtime, reverse=True)


def check_resume_files(paths: RunPaths, recover: bool = False) -> None:
  """Refuses a damaged last.keras or metrics.csv, or metrics without last.keras.

  With `recover`, only a damaged metrics.csv's later rows are dropped; the
  loop resumes from the newest intact checkpoint.
  """
  rows = read_metrics(paths.metrics, recover=recover)
  if recover:
    return
  last = paths.last_checkpoint
  way_out = (
    "rerun with --recover to resume from the newest intact checkpoint "
    f"({_newest(paths)}) and keep the damaged file as last.keras{DAMAGED_SUFFIX}, or use a "
    "new --workdir"
  )
  if os.path.exists(last):
    problem = checkpoint_problem(last)
    if problem:
      raise DataError(f"{last} is damaged: {problem}. Nothing was changed; {way_out}.")
  elif rows:
    raise DataError(
      f"{paths.metrics} holds {len(rows)} row(s) up to iteration {rows[-1]['iteration']}, but "
      f"{last} is missing, so resuming would start over. Nothing was changed; {way_out}."
    )


def _newest(paths: RunPaths) -> str:
  candidates = intact_checkpoints(paths)
  return os.path.basename(candidates[0]) if candidates else "none found: training starts over"


def unused_name(path: str) -> str:
  """`path`, or `path2`, `path3`... the first that does not exist."""
  target, number = path, 1
  while os.path.lexists(target):
    number += 1
    target = f"{path}{number}"
  return target


def set_aside(path: str) -> str | None:
  """Keeps a damaged file as `<path>.damaged` (numbered if taken); returns the new name."""
  if not os.path.exists(path):
    return None
  target = unused_name(path + DAMAGED_SUFFIX)
  os.replace(path, target)
  return target


def remove_temporaries(workdir: str) -> list[str]:
  """Deletes the temporary files an interrupted write left in `workdir` (`*.tmp`, `*.tmp.keras`).

  Every writer of a run writes `<target>.tmp` (or `.tmp.keras`) and renames it
  into place, so such a file is never a finished output.
  """
  removed = []
  for root, folders, files in os.walk(workdir):
    if root == workdir and "workers" in folders:
      folders.remove("workers")  # Other workers' own temporaries, possibly being written.
    for name in files:
      if name.endswith((".tmp", ".tmp.keras")):
        os.remove(os.path.join(root, name))
        removed.append(os.path.join(root, name))
  return removed


def check_before_start(
  config: ml_collections.ConfigDict, workdir: str, recover: bool
) -> list[Change]:
  """Every check of a (re)run that needs no TensorFlow; returns the allowed changes."""
  check_workdir(workdir)
  changes = compare(config, workdir)
  check_resume_files(RunPaths(workdir), recover=recover)
  return changes
