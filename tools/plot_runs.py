r"""Plots the training curves of one or several runs from their metrics.csv.

  python -m tools.plot_runs --runs=runs/emotion_quick,runs/deepfake_quick \
      [--labels=emotion,deepfake] [--x_axis=epoch|iteration] --output=plots/

Writes one PNG per metric family found in any run, `<output>/<metric>.png`
(loss.png, accuracy.png, roc_auc.png, precision.png, f1.png,
learning_rate.png): each run a colour, train solid, validation dashed. A
family absent from every run gets no file. The families are read from the CSV
header (`train_<m>`/`val_<m>` pairs and single columns such as
`learning_rate`), so a column added to metrics.csv is plotted without a change
here.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging
from matplotlib.figure import Figure

from common import errors, figures
from common.errors import ConfigError, DataError

METRICS_FILE = "metrics.csv"  # As `training.run_paths.RunPaths.metrics` names it.
# Columns that can be the x axis: every metrics.csv has both (see
# `training.callbacks.METRICS_COLUMNS`); `epoch` is fractional for the
# deepfake trainer, which validates every N iterations.
X_COLUMNS = ("epoch", "iteration")
# (column prefix, legend suffix, line style) of the two curves of a family.
SPLITS = (("train_", "train", "-"), ("val_", "validation", "--"))
TITLES = {
  "loss": "Loss",
  "accuracy": "Accuracy",
  "roc_auc": "ROC-AUC",
  "precision": "Precision",
  "f1": "F1",
  "learning_rate": "Learning rate",
}


@dataclasses.dataclass(frozen=True)
class RunMetrics:
  """One run's metrics.csv as float columns (NaN where a cell is empty)."""

  label: str
  path: str
  columns: dict[str, np.ndarray]


def read_run(run_dir: str, label: str, x_axis: str) -> RunMetrics:
  """Reads `<run_dir>/metrics.csv`, checking it can be plotted against `x_axis`.

  Raises:
    DataError: no metrics.csv, no header or rows, no `x_axis` column, or a
      cell that is not a number; the message names the file, line and column.
  """
  path = os.path.join(run_dir, METRICS_FILE)
  if not os.path.isfile(path):
    raise DataError(f"{path} does not exist; expected the {METRICS_FILE} a training run writes.")
  with open(path, newline="") as file:
    reader = csv.DictReader(file)
    header = reader.fieldnames
    if not header:
      raise DataError(f"{path} is empty; expected a header line such as 'iteration,epoch,...'.")
    if x_axis not in header:
      raise DataError(
        f"{path} has no {x_axis!r} column for the x axis; its columns are {list(header)}."
      )
    values: dict[str, list[float]] = {name: [] for name in header}
    for row in reader:
      for name in header:
        text = (row.get(name) or "").strip()
        try:
          value = float(text) if text else math.nan
        except ValueError:
          raise DataError(
            f"{path}, line {reader.line_num}, column {name!r}: {text!r} is not a number."
          ) from None
        if name == x_axis and math.isnan(value):
          raise DataError(f"{path}, line {reader.line_num}: the x-axis column {x_axis!r} is empty.")
        values[name].append(value)
  if not values[x_axis]:
    raise DataError(f"{path} has a header but no rows yet; expected one row per validation.")
  return RunMetrics(label, path, {name: np.asarray(v, np.float64) for name, v in values.items()})


def metric_families(runs: Sequence[RunMetrics]) -> dict[str, list[str]]:
  """Metric family -> its columns, for the families with a value in some run.

  `train_<m>` and `val_<m>` form family `<m>`; any other non-x column is a
  family of its own. Families keep the order of the CSV header.
  """
  families: dict[str, list[str]] = collections.OrderedDict()
  for run in runs:
    for column, values in run.columns.items():
      if column in X_COLUMNS or np.all(np.isnan(values)):
        continue
      family = column
      for prefix, _, _ in SPLITS:
        if column.startswith(prefix):
          family = column[len(prefix) :]
      columns = families.setdefault(family, [])
      if column not in columns:
        columns.append(column)
  return dict(families)


def plot_family(family: str, runs: Sequence[RunMetrics], x_axis: str) -> Figure:
  """One figure of `family` over `x_axis`: a colour per run, validation dashed."""
  title = TITLES.get(family, family.replace("_", " ").capitalize())
  figure = Figure(figsize=(7, 4.5))
  axes = figure.add_subplot()
  for index, run in enumerate(runs):
    x = run.columns[x_axis]
    curves = [
      (f"{prefix}{family}", f"{run.label} {split}", style) for prefix, split, style in SPLITS
    ]
    curves.append((family, run.label, "-"))
    for column, legend, style in curves:
      y = run.columns.get(column)
      if y is None or np.all(np.isnan(y)):
        continue
      axes.plot(
        x,
        y,
        color=f"C{index % 10}",
        linestyle=style,
        marker="o" if len(x) <= 30 else None,
        markersize=3,
        label=legend,
      )
  axes.set_title(title)
  axes.set_xlabel(x_axis)
  axes.set_ylabel(title)
  axes.grid(alpha=0.3)
  axes.legend(fontsize="small")
  return figure


def default_labels(run_dirs: Sequence[str]) -> list[str]:
  """Run directory names, or the whole paths where two names coincide."""
  paths = [os.path.normpath(run_dir) for run_dir in run_dirs]
  names = [os.path.basename(path) for path in paths]
  return names if len(set(names)) == len(names) else paths


def plot_runs(
  run_dirs: Sequence[str],
  output_dir: str,
  labels: Sequence[str] | None = None,
  x_axis: str = "epoch",
) -> list[str]:
  """Writes `<output_dir>/<family>.png` for every metric family; returns the paths.

  Raises:
    ConfigError: no runs, `labels` of another length, or an unknown `x_axis`.
    DataError: a run's metrics.csv is missing or malformed (see `read_run`).
  """
  if not run_dirs:
    raise ConfigError("No runs given; expected at least one run directory.")
  if x_axis not in X_COLUMNS:
    raise ConfigError(f"x_axis={x_axis!r}; expected one of {list(X_COLUMNS)}.")
  if labels is None:
    labels = default_labels(run_dirs)
  if len(labels) != len(run_dirs):
    raise ConfigError(
      f"{len(labels)} labels {list(labels)} for {len(run_dirs)} runs {list(run_dirs)}; "
      "expected one label per run."
    )
  runs = [read_run(d, label, x_axis) for d, label in zip(run_dirs, labels, strict=True)]
  written = []
  for family in metric_families(runs):
    path = os.path.join(output_dir, f"{family}.png")
    written.append(figures.write_figure(path, plot_family(family, runs, x_axis)))
  return written


def _split_list(text: str | None) -> list[str]:
  return [item.strip() for item in (text or "").split(",") if item.strip()]


def _define_flags() -> None:
  """Defined only when run as a command, so tests can import this module
  beside other tools that define flags of the same names."""
  flags.DEFINE_string("runs", None, "Comma-separated run directories, each with a metrics.csv.")
  flags.DEFINE_string("labels", None, "Comma-separated legend labels (default: run dir names).")
  flags.DEFINE_enum("x_axis", "epoch", list(X_COLUMNS), "metrics.csv column for the x axis.")
  flags.DEFINE_string("output", None, "Directory for the PNGs, one per metric.")
  flags.mark_flags_as_required(["runs", "output"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flag_values = flags.FLAGS
  labels = _split_list(flag_values.labels) if flag_values.labels else None
  written = plot_runs(_split_list(flag_values.runs), flag_values.output, labels, flag_values.x_axis)
  if not written:
    logging.warning("No metric columns with values in any run: nothing written.")
  logging.info("Wrote %d figures:\n%s", len(written), "\n".join(written))


if __name__ == "__main__":
  _define_flags()
  errors.run(main)
