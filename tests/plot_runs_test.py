"""tools.plot_runs: metrics.csv files -> one PNG per metric family."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from common import figures
from common.errors import DataError
from tools import plot_runs
from training.callbacks import METRICS_COLUMNS

ALL_FAMILIES = {"loss", "accuracy", "roc_auc", "precision", "f1", "learning_rate"}


def write_metrics(run_dir, epochs, iterations, drop=(), seed=0):
  """Writes `run_dir/metrics.csv` with the trainer's columns, less `drop`; returns run_dir."""
  rng = np.random.default_rng(seed)
  columns = [c for c in METRICS_COLUMNS if c not in drop]
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "metrics.csv"), "w", newline="") as file:
    writer = csv.DictWriter(file, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for epoch, iteration in zip(epochs, iterations, strict=True):
      row = {name: float(rng.uniform()) for name in columns}
      row.update(epoch=epoch, iteration=iteration)
      writer.writerow({name: row[name] for name in columns})
  return str(run_dir)


@pytest.fixture
def two_runs(tmp_path):
  """An emotion-like run (whole epochs) and a deepfake-like one (fractional epochs)."""
  emotion = write_metrics(tmp_path / "emotion", [1, 2, 3], [10, 20, 30])
  deepfake = write_metrics(tmp_path / "deepfake", [0.4, 0.8, 1.2], [3, 6, 9], seed=1)
  return emotion, deepfake


def assert_valid_png(path):
  with open(path, "rb") as file:
    assert file.read(len(figures.PNG_MAGIC)) == figures.PNG_MAGIC
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    width, height = image.size
  assert width > 0 and height > 0


def test_writes_a_valid_png_per_metric_family(two_runs, tmp_path):
  output = str(tmp_path / "plots")
  written = plot_runs.plot_runs(two_runs, output, labels=["emotion", "deepfake"])
  assert {os.path.basename(p) for p in written} == {f"{f}.png" for f in ALL_FAMILIES}
  assert sorted(os.listdir(output)) == sorted(os.path.basename(p) for p in written)
  for path in written:
    assert_valid_png(path)


def test_plots_against_iterations_too(two_runs, tmp_path):
  written = plot_runs.plot_runs(two_runs, str(tmp_path / "plots"), x_axis="iteration")
  assert len(written) == len(ALL_FAMILIES)


def test_a_metric_absent_from_every_run_gets_no_file(tmp_path):
  drop = ("train_roc_auc", "val_roc_auc")
  runs = [
    write_metrics(tmp_path / "a", [1, 2], [5, 10], drop=drop),
    write_metrics(tmp_path / "b", [1, 2], [5, 10], drop=drop + ("learning_rate",)),
  ]
  output = tmp_path / "plots"
  written = plot_runs.plot_runs(runs, str(output))
  names = {os.path.basename(p) for p in written}
  assert names == {f"{f}.png" for f in ALL_FAMILIES - {"roc_auc"}}  # learning_rate: run a.
  assert not (output / "roc_auc.png").exists()


def test_families_pair_train_and_validation_columns(two_runs):
  runs = [plot_runs.read_run(d, d, "epoch") for d in two_runs]
  families = plot_runs.metric_families(runs)
  assert list(families) == ["loss", "accuracy", "roc_auc", "precision", "f1", "learning_rate"]
  assert families["loss"] == ["train_loss", "val_loss"]
  assert families["learning_rate"] == ["learning_rate"]


def test_missing_metrics_csv_names_the_path(two_runs, tmp_path):
  empty = tmp_path / "not_a_run"
  empty.mkdir()
  with pytest.raises(DataError, match=str(empty / "metrics.csv")):
    plot_runs.plot_runs([two_runs[0], str(empty)], str(tmp_path / "plots"))
  assert not (tmp_path / "plots").exists()


def test_missing_x_column_names_the_file_and_column(tmp_path):
  run = write_metrics(tmp_path / "run", [1, 2], [5, 10], drop=("epoch",))
  with pytest.raises(DataError, match=r"metrics\.csv has no 'epoch' column"):
    plot_runs.plot_runs([run], str(tmp_path / "plots"), x_axis="epoch")
  assert plot_runs.plot_runs([run], str(tmp_path / "plots"), x_axis="iteration")


def test_bad_cell_and_empty_csv_are_clear_errors(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "metrics.csv").write_text("iteration,epoch,train_loss\n5,1,0.5\n10,2,oops\n")
  with pytest.raises(DataError, match=r"line 3, column 'train_loss': 'oops' is not a number"):
    plot_runs.read_run(str(run), "run", "epoch")
  (run / "metrics.csv").write_text("iteration,epoch,train_loss\n")
  with pytest.raises(DataError, match="no rows"):
    plot_runs.read_run(str(run), "run", "epoch")


def test_labels_must_match_the_runs(two_runs, tmp_path):
  with pytest.raises(ValueError, match="one label per run"):
    plot_runs.plot_runs(two_runs, str(tmp_path / "plots"), labels=["only_one"])


def test_default_labels_are_run_names_unless_they_clash():
  assert plot_runs.default_labels(["runs/a", "runs/b/"]) == ["a", "b"]
  assert plot_runs.default_labels(["x/run", "y/run"]) == ["x/run", "y/run"]
