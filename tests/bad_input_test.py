"""The error contract, table-driven: bad inputs and faults across the trainers and tools.

Each case must end in ONE line `ERROR: ...` holding its key words, exit status
2, no traceback, and leave every file already in the workdir or output folder
byte-identical. Most cases run in-process through `errors.guard` (the wrapper
every entry point's `main` runs under) on exactly the checks the command makes
before TensorFlow loads or data are read; the `cli` cases run the real
commands in a subprocess.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable

import pytest

from common import errors, io_utils
from configs import deepfake as deepfake_configs
from configs import emotion as emotion_configs
from configs import validation
from training import run_record
from training.run_paths import RunPaths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def snapshot(root: str) -> dict[str, str]:
  """sha256 of every file under `root` (empty when it does not exist)."""
  hashes = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as file:
        hashes[os.path.relpath(path, root)] = hashlib.sha256(file.read()).hexdigest()
  return hashes


def emotion(**overrides) -> object:
  return _config(emotion_configs.get_config("tiny"), overrides)


def deepfake(**overrides) -> object:
  return _config(deepfake_configs.get_config("tiny"), overrides)


def _config(config, overrides):
  for field, value in overrides.items():
    node = config
    *parents, last = field.split(".")
    for parent in parents:
      node = node[parent]
    node[last] = value
  return config


def write_run(workdir: str, config, rows: int = 2, checkpoint: bytes | None = None) -> None:
  """A workdir as a finished epoch leaves it: config.json, metrics.csv, last.keras."""
  paths = RunPaths(workdir)
  io_utils.write_text(paths.config, config.to_json_best_effort(indent=2) + "\n")
  lines = ["iteration,epoch,train_loss"] + [f"{4 * (i + 1)},{i + 1},0.5" for i in range(rows)]
  io_utils.write_text(paths.metrics, "\n".join(lines) + "\n")
  if checkpoint is None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
      archive.writestr("config.json", "{}" * 2000)
      archive.writestr("model.weights.h5", os.urandom(4000))
    checkpoint = buffer.getvalue()
  io_utils.write_bytes(paths.last_checkpoint, checkpoint)


def start(config, workdir: str) -> Callable[[], None]:
  """What train_main does before TensorFlow loads."""

  def run() -> None:
    validation.validate(config)
    run_record.check_before_start(config, workdir, recover=False)

  return run


def _train(config, workdir: str) -> Callable[[], None]:
  """The whole of train_main, for errors found only once the data is read."""

  def run() -> None:
    from training import loop

    loop.train_and_evaluate(config, workdir)

  return run


@dataclasses.dataclass
class Case:
  name: str
  # Builds the inputs under tmp; returns the action and the folder to snapshot.
  setup: Callable[[str], tuple[Callable[[], object], str]]
  words: tuple[str, ...]


def _config_case(name, config_fn, words):
  return Case(name, lambda tmp: (start(config_fn(), os.path.join(tmp, "run")), tmp), words)


def _resume_case(name, first, rerun, words):
  def setup(tmp):
    workdir = os.path.join(tmp, "run")
    write_run(workdir, first())
    return start(rerun(), workdir), workdir

  return Case(name, setup, words)


def _truncated_checkpoint(tmp):
  workdir = os.path.join(tmp, "run")
  write_run(workdir, emotion())
  with open(RunPaths(workdir).last_checkpoint, "rb") as file:
    data = file.read()
  with open(RunPaths(workdir).last_checkpoint, "wb") as file:
    file.write(data[: len(data) // 2])
  return start(emotion(), workdir), workdir


def _damaged_metrics(text):
  def setup(tmp):
    workdir = os.path.join(tmp, "run")
    write_run(workdir, emotion())
    with open(RunPaths(workdir).metrics, "w") as file:
      file.write(text)
    return start(emotion(), workdir), workdir

  return setup


def _metrics_without_checkpoint(tmp):
  workdir = os.path.join(tmp, "run")
  write_run(workdir, emotion())
  os.remove(RunPaths(workdir).last_checkpoint)
  return start(emotion(), workdir), workdir


def _broken_record(tmp):
  workdir = os.path.join(tmp, "run")
  write_run(workdir, emotion())
  with open(RunPaths(workdir).config, "w") as file:
    file.write('{"task": "emot')
  return start(emotion(), workdir), workdir


def _workdir_is_file(tmp):
  path = os.path.join(tmp, "run")
  with open(path, "w") as file:
    file.write("notes")
  return start(emotion(), path), tmp


def _workdir_under_file(tmp):
  path = os.path.join(tmp, "notes")
  with open(path, "w") as file:
    file.write("notes")
  return start(emotion(), os.path.join(path, "run")), tmp


def _empty_labels_csv(tmp):
  from input_pipeline import deepfake_data

  path = os.path.join(tmp, "labels.csv")
  open(path, "w").close()
  return (lambda: deepfake_data.read_labels_csv(path)), tmp


def _binary_labels_csv(tmp):
  from input_pipeline import deepfake_data

  path = os.path.join(tmp, "labels.csv")
  with open(path, "wb") as file:
    file.write(b"video,label\n\xff\xfe\x00\x81,1\n")
  return (lambda: deepfake_data.read_labels_csv(path)), tmp


def _fer2013_csv(pixels):
  def setup(tmp):
    from input_pipeline import fer2013

    path = os.path.join(tmp, "fer2013.csv")
    good = " ".join(["7"] * 2304)
    with open(path, "w") as file:
      file.write(f"emotion,pixels,Usage\n0,{good},Training\n3,{pixels},Training\n")
    names = list(emotion().data.class_names)
    return (lambda: fer2013.read_fer2013_csv(path, names)), tmp

  return setup


def _emotion_folders(tmp):
  """An emotion data folder, and a config that reads it."""
  data = os.path.join(tmp, "data", "fer")
  for split in ("train", "test"):
    folder = os.path.join(data, split, "happy")
    os.makedirs(folder)
    with open(os.path.join(folder, "0.png"), "wb") as file:
      file.write(b"not decoded before the output check")
  return data, emotion(**{"data.source": "folder", "data.dir": data})


def _shards(output_of):
  def setup(tmp):
    from tools import write_tfrecords

    data, config = _emotion_folders(tmp)
    output = output_of(tmp, data)
    return (lambda: write_tfrecords.write_tfrecords(config, output, overwrite=True)), tmp

  return setup


def _shards_into_other_folder(tmp):
  from tools import write_tfrecords

  _, config = _emotion_folders(tmp)
  output = os.path.join(tmp, "mine")
  os.makedirs(output)
  with open(os.path.join(output, "thesis.tex"), "w") as file:
    file.write("irreplaceable")
  return (lambda: write_tfrecords.write_tfrecords(config, output, overwrite=True)), tmp


def _shards_without_overwrite(tmp):
  from input_pipeline import tfrecords
  from tools import write_tfrecords

  _, config = _emotion_folders(tmp)
  output = os.path.join(tmp, "shards")
  os.makedirs(output)
  with open(os.path.join(output, tfrecords.MANIFEST), "w") as file:
    json.dump({"format": tfrecords.FORMAT}, file)
  return (lambda: write_tfrecords.write_tfrecords(config, output, overwrite=False)), tmp


def _tflite_over(make_output):
  def setup(tmp):
    from inference import tflite

    model = os.path.join(tmp, "best.keras")
    with open(model, "wb") as file:
      file.write(b"PK not loaded before the output check")
    output = make_output(tmp, model)
    return (lambda: tflite.export_emotion_model(model, output, "none", overwrite=True)), tmp

  return setup


def _other_file(tmp, model):
  path = os.path.join(tmp, "notes.tflite")
  with open(path, "w") as file:
    file.write("not a TFLite model")
  return path


def _tflite_missing_model(tmp):
  from inference import tflite

  model = os.path.join(tmp, "absent.keras")
  return (lambda: tflite.export_emotion_model(model, os.path.join(tmp, "m.tflite"), "none")), tmp


def _tflite_weights_file(tmp):
  from inference import tflite

  model = os.path.join(tmp, "model.weights.h5")
  with open(model, "wb") as f:
    f.write(b"not a checkpoint")
  return (lambda: tflite.export_emotion_model(model, os.path.join(tmp, "m.tflite"), "none")), tmp


def _grad_cam_of_an_export(tmp):
  """A SavedModel directory (as tools.grad_cam would be given one)."""
  import tensorflow as tf

  from inference import model_io

  export = os.path.join(tmp, "export", "1")
  tf.saved_model.save(tf.Module(), export)
  return (lambda: model_io.load_checkpoint_flag(export)), tmp


def _prepare_faces_output(output_of):
  def setup(tmp):
    from common import outputs

    source = os.path.join(tmp, "videos")
    os.makedirs(os.path.join(source, "real"))
    with open(os.path.join(source, "real", "a.mp4"), "wb") as file:
      file.write(b"video")
    output = output_of(tmp, source)
    return (lambda: outputs.check_not_input(output, [source])), tmp

  return setup


def _report_output(output_of):
  """predict_emotion, grad_cam, score_videos, evaluate_* check their --output so."""

  def setup(tmp):
    from common import outputs

    images = os.path.join(tmp, "photos")
    os.makedirs(images)
    with open(os.path.join(images, "a.jpg"), "wb") as file:
      file.write(b"photo")
    output = output_of(tmp, images)
    return (lambda: outputs.check_not_input(output, [images])), tmp

  return setup


def _read_only_workdir(tmp):
  workdir = os.path.join(tmp, "run")
  os.makedirs(workdir)
  os.chmod(workdir, 0o500)
  if os.access(workdir, os.W_OK):  # root: permissions are not enforced.
    os.chmod(workdir, 0o700)
    pytest.skip("running as root: a read-only folder is still writable")
  return start(emotion(), workdir), workdir


def _cli_train(tmp, *flags):
  return [sys.executable, "train_main.py", "--config=configs/emotion.py:tiny", *flags]


CASES = [
  # Config values (train_main validates them before TensorFlow loads).
  _config_case(
    "batch_size=0", lambda: emotion(**{"schedule.batch_size": 0}), ("batch_size=0", ">= 1")
  ),
  _config_case("batch_size<0", lambda: emotion(**{"schedule.batch_size": -4}), ("batch_size=-4",)),
  _config_case("num_epochs=0", lambda: emotion(**{"schedule.num_epochs": 0}), ("num_epochs=0",)),
  _config_case("image_size=0", lambda: emotion(**{"data.image_size": 0}), ("image_size=0", "8")),
  _config_case("image_size<min", lambda: emotion(**{"data.image_size": 4}), ("image_size=4",)),
  _config_case(
    "image_size too small for the stem pool",
    lambda: emotion(**{"data.image_size": 8, "model.stem_pool": True}),
    ("image_size=8", "stem_pool"),
  ),
  _config_case("lr=0", lambda: emotion(**{"optimizer.learning_rate": 0.0}), ("learning_rate=0.0",)),
  _config_case("lr<0", lambda: emotion(**{"optimizer.learning_rate": -1e-3}), ("learning_rate",)),
  _config_case(
    "optimizer name", lambda: emotion(**{"optimizer.name": "adam"}), ("name='adam'", "sgd")
  ),
  Case(
    "batch larger than the training split",  # Found once the data is read.
    lambda tmp: (_train(emotion(**{"schedule.batch_size": 128}), os.path.join(tmp, "run")), tmp),
    ("batch_size=128", "64 images"),
  ),
  _config_case(
    "XLA with op determinism",
    lambda: emotion(**{"training.jit_compile": "True", "training.deterministic": True}),
    ("jit_compile=True", "deterministic=True"),
  ),
  _config_case("momentum=1", lambda: emotion(**{"optimizer.momentum": 1.0}), ("momentum=1.0",)),
  _config_case(
    "validation_fraction=1", lambda: emotion(**{"data.validation_fraction": 1.0}), ("[0.0, 1.0)",)
  ),
  _config_case(
    "crop_area inverted",
    lambda: emotion(**{"augment.crop_area": (0.9, 0.5)}),
    ("crop_area=(0.9, 0.5)", "low <= high"),
  ),
  _config_case("crop_area 0", lambda: emotion(**{"augment.crop_area": (0.0, 1.0)}), ("crop_area",)),
  _config_case(
    "eval_crop_fraction > 1",
    lambda: emotion(**{"data.eval_crop_fraction": 1.2}),
    ("eval_crop_fraction=1.2", "(0.0, 1.0]"),
  ),
  _config_case(
    "ten_crop_fraction > eval_crop_fraction",
    lambda: emotion(**{"data.eval_crop_fraction": 0.9, "data.ten_crop_fraction": 0.95}),
    ("ten_crop_fraction=0.95", "at most config.data.eval_crop_fraction=0.9"),
  ),
  _config_case(
    "erasing_area inverted",
    lambda: emotion(**{"augment.erasing_area": (0.5, 0.1)}),
    ("erasing_area",),
  ),
  _config_case(
    "probability>1",
    lambda: emotion(**{"augment.erasing_probability": 1.5}),
    ("erasing_probability",),
  ),
  _config_case(
    "ema_momentum of 1",
    lambda: emotion(**{"training.ema_momentum": 1.0}),
    ("training.ema_momentum=1.0", "[0.0, 1.0)"),
  ),
  _config_case(
    "export.checkpoint of last",
    lambda: emotion(**{"export.checkpoint": "last"}),
    ("export.checkpoint='last'", "'best'", "'final'"),
  ),
  _config_case(
    "probability<0",
    lambda: emotion(**{"augment.color_jitter_probability": -0.1}),
    ("color_jitter_probability",),
  ),
  _config_case(
    "duplicate class names",
    lambda: emotion(**{"data.class_names": ("a", "b", "a")}),
    ("class_names", "unique"),
  ),
  _config_case(
    "class names with commas", lambda: emotion(**{"data.class_names": ("a,b,c",)}), ("commas",)
  ),
  _config_case("dropout=1", lambda: emotion(**{"model.dropout": 1.0}), ("model.dropout",)),
  _config_case("width=0", lambda: emotion(**{"model.width": 0}), ("model.width=0",)),
  _config_case(
    "unknown precision", lambda: emotion(**{"training.mixed_precision": "fp8"}), ("'fp8'",)
  ),
  _config_case("unknown source", lambda: emotion(**{"data.source": "folders"}), ("'folders'",)),
  _config_case(
    "warmup longer than training",
    lambda: emotion(**{"schedule.warmup_epochs": 5.0}),
    ("warmup_epochs", "num_epochs"),
  ),
  _config_case("unknown task", lambda: emotion(task="age"), ("config.task='age'",)),
  _config_case("num_frames=0", lambda: deepfake(**{"data.num_frames": 0}), ("num_frames=0",)),
  _config_case(
    "max_iterations=0", lambda: deepfake(**{"schedule.max_iterations": 0}), ("max_iterations",)
  ),
  _config_case(
    "validation_interval=0",
    lambda: deepfake(**{"schedule.validation_interval": 0}),
    ("validation_interval",),
  ),
  _config_case(
    "jpeg_quality inverted",
    lambda: deepfake(**{"augment.jpeg_quality": (90.0, 30.0)}),
    ("jpeg_quality",),
  ),
  _config_case(
    "subset_fraction=0", lambda: deepfake(**{"data.subset_fraction": 0.0}), ("subset_fraction",)
  ),
  _config_case(
    "deepfake with 3 classes",
    lambda: deepfake(**{"data.class_names": ("real", "fake", "other")}),
    ("exactly 2",),
  ),
  _config_case(
    "plateau_factor=1", lambda: deepfake(**{"schedule.plateau_factor": 1.0}), ("plateau",)
  ),
  _config_case(
    "fake_ratio=2", lambda: deepfake(**{"data.synthetic.fake_ratio": 2.0}), ("fake_ratio",)
  ),
  # The workdir.
  Case("workdir is a file", _workdir_is_file, ("is a file", "--workdir")),
  Case("workdir under a file", _workdir_under_file, ("is a file",)),
  Case("read-only workdir", _read_only_workdir, ("not writable",)),
  # Resume contract: refused, and config.json (the run's record) unchanged.
  _resume_case(
    "resume with another image_size",
    emotion,
    lambda: emotion(**{"data.image_size": 24}),
    ("Cannot resume", "data.image_size: run 16, now 24", "Nothing was changed"),
  ),
  _resume_case(
    "resume with reordered classes",
    emotion,
    lambda: emotion(**{"data.class_names": tuple(reversed(emotion().data.class_names))}),
    ("Cannot resume", "data.class_names"),
  ),
  _resume_case(
    "resume with another width",
    emotion,
    lambda: emotion(**{"model.width": 8}),
    ("model.width: run 4, now 8",),
  ),
  _resume_case(
    "resume with other frames per clip",
    deepfake,
    lambda: deepfake(**{"data.num_frames": 3}),
    ("data.num_frames: run 2, now 3",),
  ),
  _resume_case(
    "resume with another batch size and seed",
    emotion,
    lambda: emotion(seed=1, **{"schedule.batch_size": 8}),
    ("schedule.batch_size: run 16, now 8", "seed: run 0, now 1"),
  ),
  Case("truncated last.keras", _truncated_checkpoint, ("last.keras is damaged", "--recover")),
  Case(
    "metrics.csv row with missing fields",
    _damaged_metrics("iteration,epoch,train_loss\n4,1,0.5\n8,2\n"),
    ("metrics.csv, line 3", "--recover"),
  ),
  Case(
    "metrics.csv without an iteration column",
    _damaged_metrics("it,epoch\n4,1\n"),
    ("metrics.csv, line 2", "iteration"),
  ),
  Case(
    "metrics.csv with garbage",
    _damaged_metrics("iteration,epoch\n4,1\n\x00\x00x,2\n"),
    ("line 3", "not an integer"),
  ),
  Case("metrics without last.keras", _metrics_without_checkpoint, ("is missing", "start over")),
  Case("broken config.json record", _broken_record, ("config.json", "cannot be read")),
  # Data files.
  Case("0-byte labels CSV", _empty_labels_csv, ("labels.csv", "empty", "video,label")),
  Case("binary labels CSV", _binary_labels_csv, ("labels.csv", "not a readable CSV")),
  Case(
    "non-numeric pixel in fer2013.csv",
    _fer2013_csv(" ".join(["7"] * 2303 + ["x"])),
    ("fer2013.csv, line 3", "not an integer"),
  ),
  Case(
    "short pixels in fer2013.csv",
    _fer2013_csv(" ".join(["7"] * 100)),
    ("line 3", "100 values"),
  ),
  # Destructive outputs.
  Case(
    "write_tfrecords --overwrite into the data folder",
    _shards(lambda tmp, data: data),
    ("is or holds the input",),
  ),
  Case(
    "write_tfrecords --overwrite into a parent",
    _shards(lambda tmp, data: os.path.dirname(data)),
    ("is or holds the input",),
  ),
  Case(
    "write_tfrecords into the data folder",
    _shards(lambda tmp, data: os.path.join(data, "shards")),
    ("inside the input folder",),
  ),
  Case(
    "write_tfrecords --overwrite into a folder it did not write",
    _shards_into_other_folder,
    ("not an output of tools.write_tfrecords", "manifest.json"),
  ),
  Case(
    "write_tfrecords to its output without --overwrite",
    _shards_without_overwrite,
    ("already exists; pass --overwrite",),
  ),
  Case(
    "export_tflite --overwrite of a file it did not write",
    _tflite_over(_other_file),
    ("not an output of tools.export_tflite",),
  ),
  Case("export_tflite missing model", _tflite_missing_model, ("absent.keras",)),
  Case(
    "export_tflite of a weights file",
    _tflite_weights_file,
    ("model.weights.h5", "is not a .keras checkpoint", "checkpoints/best.keras"),
  ),
  Case(
    "grad_cam of a SavedModel export",
    _grad_cam_of_an_export,
    ("export/1", "is a SavedModel export", "checkpoints/best.keras"),
  ),
  Case(
    "predict_emotion --output inside --images",
    _report_output(lambda tmp, images: os.path.join(images, "predictions")),
    ("inside the input folder",),
  ),
  Case(
    "score_videos --output among the input videos",
    _report_output(lambda tmp, images: os.path.join(images, "a.jpg")),
    ("inside the input folder",),
  ),
  Case(
    "prepare_faces --output=the source",
    _prepare_faces_output(lambda tmp, source: source),
    ("is or holds the input",),
  ),
  Case(
    "prepare_faces --output inside the source",
    _prepare_faces_output(lambda tmp, source: os.path.join(source, "faces")),
    ("inside the input folder",),
  ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, capsys):
  action, watched = case.setup(str(tmp_path))
  before = snapshot(watched)
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    errors.guard(lambda argv: action())([])
  assert exit_info.value.code == errors.EXIT_USER_ERROR
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("ERROR: "), lines
  for word in case.words:
    assert word in lines[0], (word, lines[0])
  assert snapshot(watched) == before


def test_at_least_40_cases():
  assert len(CASES) >= 40


CLI_CASES = [
  (
    "misspelt override",
    lambda tmp: _cli_train(tmp, f"--workdir={tmp}/run", "--config.model.widht=3"),
    ("--config.model.widht=3", "no such config field", "width"),
  ),
  (
    "wrong type",
    lambda tmp: _cli_train(tmp, f"--workdir={tmp}/run", "--config.model.width=abc"),
    ("--config.model.width=abc",),
  ),
  (
    "batch_size=0",
    lambda tmp: _cli_train(tmp, f"--workdir={tmp}/run", "--config.schedule.batch_size=0"),
    ("config.schedule.batch_size=0",),
  ),
  (
    # Lists cannot be overridden by ml_collections, tuples can: class_names is a tuple.
    "class_names override",
    lambda tmp: _cli_train(
      tmp, f"--workdir={tmp}/run", "--config.data.class_names=('a', 'b', 'a')"
    ),
    ("config.data.class_names=('a', 'b', 'a')", "unique"),
  ),
  (
    "tuple override",
    lambda tmp: _cli_train(tmp, f"--workdir={tmp}/run", "--config.augment.crop_area=0.9,0.5"),
    ("config.augment.crop_area=(0.9, 0.5)", "low <= high"),
  ),
  (
    "unknown variant",
    lambda tmp: [sys.executable, "train_main.py", "--config=configs/emotion.py:bogus"],
    ("Unknown variant 'bogus'",),
  ),
  (
    "missing config file",
    lambda tmp: [sys.executable, "train_main.py", "--config=configs/nope.py"],
    ("configs/nope.py", "No such file"),
  ),
  (
    "resume with another width",
    lambda tmp: (
      write_run(f"{tmp}/run", emotion()),
      _cli_train(tmp, f"--workdir={tmp}/run", "--config.model.width=8"),
    )[1],
    ("model.width: run 4, now 8",),
  ),
  (
    "prepare_faces --num_frames=0",
    lambda tmp: [
      sys.executable,
      "-m",
      "tools.prepare_faces",
      "--dataset=folders",
      f"--source={tmp}",
      f"--output={tmp}/faces",
      "--num_frames=0",
    ],
    ("--num_frames=0",),
  ),
  (
    "write_tfrecords --overwrite into the data folder",
    lambda tmp: [
      sys.executable,
      "-m",
      "tools.write_tfrecords",
      "--config=configs/emotion.py:tiny",
      "--config.data.source=folder",
      f"--config.data.dir={_emotion_folders(tmp)[0]}",
      f"--output={tmp}/data",
      "--overwrite",
    ],
    ("is or holds the input",),
  ),
]


@pytest.mark.parametrize("name,command,words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_the_real_commands_answer_one_line_and_exit_2(name, command, words, tmp_path):
  argv = command(str(tmp_path))
  before = snapshot(str(tmp_path))
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  errors_printed = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
  assert len(errors_printed) == 1, result.stderr
  for word in words:
    assert word in errors_printed[0], (word, errors_printed[0])
  assert snapshot(str(tmp_path)) == before


def test_verbosity_1_shows_the_traceback(tmp_path):
  argv = _cli_train(str(tmp_path), "--config.schedule.batch_size=0", "--verbosity=1")
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_a_bug_still_raises(capsys):
  with pytest.raises(ZeroDivisionError):
    errors.guard(lambda argv: 1 / 0)([])


def test_a_full_disk_is_one_line(capsys):
  def full(argv):
    raise OSError(28, "No space left on device", "/runs/a/metrics.csv.tmp")

  with pytest.raises(SystemExit) as exit_info:
    errors.guard(full)([])
  assert exit_info.value.code == 2
  line = capsys.readouterr().err.strip()
  assert line.count("\n") == 0 and "metrics.csv.tmp" in line and "disk is full" in line


def test_every_preset_is_valid():
  for variant in ("", "quick", "fer2013_cpu", "tiny"):
    validation.validate(emotion_configs.get_config(variant))
  for variant in ("", "quick", "tiny"):
    validation.validate(deepfake_configs.get_config(variant))


def test_allowed_changes_are_recorded_with_their_iteration(tmp_path):
  workdir = str(tmp_path / "run")
  write_run(workdir, emotion())
  before = snapshot(workdir)
  longer = emotion(**{"schedule.num_epochs": 5, "logging.verbose": "2"})
  changes = run_record.check_before_start(longer, workdir, recover=False)
  assert snapshot(workdir) == before  # The check itself writes nothing.
  assert {c.field: (c.before, c.after) for c in changes} == {
    "schedule.num_epochs": (2, 5),
    "logging.verbose": ("auto", "2"),
  }
  run_record.record_changes(workdir, changes, iteration=8)
  run_record.record_changes(workdir, [], iteration=12)  # Nothing changed: nothing appended.
  with open(os.path.join(workdir, "config_changes.jsonl")) as file:
    (entry,) = [json.loads(line) for line in file]
  assert entry["iteration"] == 8
  assert entry["changes"]["schedule.num_epochs"] == {"before": 2, "after": 5}


def test_recover_keeps_the_intact_rows_and_names_the_newest_intact_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  paths = RunPaths(workdir)
  write_run(workdir, emotion(), rows=3)
  with open(paths.metrics, "a") as file:
    file.write("16,4\n")  # A damaged last row.
  with open(paths.last_checkpoint, "r+b") as file:
    file.truncate(100)
  io_utils.write_bytes(paths.best_checkpoint, _valid_archive())
  with pytest.raises(errors.DataError, match="metrics.csv, line 5"):
    run_record.check_resume_files(paths)
  assert [r["iteration"] for r in run_record.read_metrics(paths.metrics, recover=True)] == [
    "4",
    "8",
    "12",
  ]
  run_record.check_resume_files(paths, recover=True)
  assert run_record.intact_checkpoints(paths) == [paths.best_checkpoint]
  assert run_record.set_aside(paths.last_checkpoint) == paths.last_checkpoint + ".damaged"


def _valid_archive() -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    archive.writestr("config.json", "{}")
  return buffer.getvalue()


def test_temporaries_of_an_interrupted_write_are_removed(tmp_path):
  workdir = tmp_path / "run"
  (workdir / "checkpoints").mkdir(parents=True)
  (workdir / "workers" / "1").mkdir(parents=True)
  for name in ("metrics.csv.tmp", "checkpoints/last.tmp.keras", "workers/1/metrics.csv.tmp"):
    (workdir / name).write_text("half")
  (workdir / "metrics.csv").write_text("iteration\n")
  removed = run_record.remove_temporaries(str(workdir))
  assert sorted(os.path.relpath(p, workdir) for p in removed) == [
    "checkpoints/last.tmp.keras",
    "metrics.csv.tmp",
  ]
  assert (workdir / "metrics.csv").exists()
  assert (workdir / "workers" / "1" / "metrics.csv.tmp").exists()  # Another worker's.


def test_a_real_run_records_an_allowed_change_and_recovers_from_a_damaged_checkpoint(
  tmp_path, caplog
):
  """End to end on the tiny trainer: a longer rerun is recorded at the iteration it took
  effect; a truncated last.keras is refused, then --recover resumes from best.keras."""
  from training import loop

  workdir = str(tmp_path / "run")
  paths = RunPaths(workdir)
  config = emotion(**{"schedule.num_epochs": 1, "export.enabled": False})
  loop.train_and_evaluate(config, workdir)  # 64 images, batch 16: 4 steps per epoch.
  longer = emotion(**{"schedule.num_epochs": 2, "export.enabled": False})
  loop.train_and_evaluate(longer, workdir)
  with open(os.path.join(workdir, "config_changes.jsonl")) as file:
    (entry,) = [json.loads(line) for line in file]
  assert entry["iteration"] == 4
  assert entry["changes"] == {"schedule.num_epochs": {"before": 1, "after": 2}}
  assert [r["iteration"] for r in run_record.read_metrics(paths.metrics)] == ["4", "8"]

  with open(paths.last_checkpoint, "r+b") as file:
    file.truncate(1000)
  before = snapshot(workdir)
  with pytest.raises(errors.DataError, match="last.keras is damaged"):
    loop.train_and_evaluate(longer, workdir)
  assert snapshot(workdir) == before
  summary = loop.train_and_evaluate(longer, workdir, recover=True)
  with open(paths.metrics + ".before_recover", "rb") as file:  # The rows as they were.
    assert hashlib.sha256(file.read()).hexdigest() == before["metrics.csv"]
  with open(paths.last_checkpoint + ".damaged", "rb") as file:  # Kept, not deleted.
    assert hashlib.sha256(file.read()).hexdigest() == before["checkpoints/last.keras"]
  # Resumed from best.keras (iteration 4 or 8), not from 0; no row is lost or repeated.
  assert re.search(r"--recover: resuming from \S*best\.keras at iteration [48]\.", caplog.text)
  assert [r["iteration"] for r in run_record.read_metrics(paths.metrics)] == ["4", "8"]
  assert summary["test"] is not None
