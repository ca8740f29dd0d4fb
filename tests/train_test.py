"""End to end: a tiny run writes every output; export, resume and errors."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT, write_image_tree
from tensorboard.backend.event_processing import event_accumulator

from common import labels, model_metadata
from configs import emotion as emotion_config
from inference import model_io
from inference.emotion_inference import Classifier as inference_classifier
from keras_models import emotion as emotion_model
from tools import write_tfrecords
from training import callbacks, emotion, loop, summaries
from training.run_paths import RunPaths


def tiny_config(**data):
  config = emotion_config.get_config("tiny")
  config.data.update(data)
  return config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One epoch on a generated Kaggle-layout folder tree."""
  root = write_image_tree(tmp_path_factory.mktemp("data") / "fer", per_class=8, size=20)
  config = tiny_config(source="folder", dir=root, validation_fraction=0.125)
  config.schedule.num_epochs = 1
  workdir = str(tmp_path_factory.mktemp("run"))
  summary = loop.train_and_evaluate(config, workdir)
  return config, workdir, summary


def test_run_writes_every_output(tiny_run):
  config, workdir, summary = tiny_run
  paths = RunPaths(workdir)
  assert json.load(open(paths.config))["model"]["width"] == config.model.width
  with open(paths.metrics) as file:
    reader = csv.DictReader(file)
    rows = list(reader)
  assert tuple(reader.fieldnames) == callbacks.METRICS_COLUMNS
  steps = 49 // config.schedule.batch_size  # 56 train images less 7 for validation
  assert [(int(r["iteration"]), int(r["epoch"])) for r in rows] == [(steps, 1)]
  for column in callbacks.METRICS_COLUMNS:
    assert rows[0][column] != "" and np.isfinite(float(rows[0][column])), column
  for checkpoint in (paths.best_checkpoint, paths.last_checkpoint):
    model = keras.saving.load_model(checkpoint, compile=False)
    assert model.output.shape == (None, 7)
  images = event_accumulator.EventAccumulator(paths.tensorboard_images, {"tensors": 0})
  images.Reload()
  assert set(images.Tags()["tensors"]) == {
    "config",
    "train/augmented_samples",
    "validation/confusion_matrix",
  }
  report = json.load(open(paths.test_report))
  assert report["num_images"] == 56
  assert set(report["per_class"]) == set(labels.EMOTION_CLASSES)
  assert 0.0 <= report["accuracy"] <= 1.0
  assert np.array(report["confusion_matrix"]).sum() == 56
  assert os.path.exists(os.path.join(paths.export(1), "saved_model.pb"))
  assert summary["export"] == paths.export(1)
  hparams, final = summaries.read_hparams(paths.tensorboard)
  assert hparams["model.width"] == config.model.width and hparams["data.source"] == "folder"
  assert final == pytest.approx(
    {
      "best_val_accuracy": summary["best_val_accuracy"],
      "best_epoch": 1,
      "test_accuracy": report["accuracy"],
      "test_f1_weighted": report["f1_weighted"],
      "test_roc_auc": report["roc_auc_ovr_macro"],
    }
  )


_SERVE = r"""
import json, sys
import numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
rng = np.random.default_rng(0)
results = {}
for name, shape in {"gray": (2, 17, 23, 1), "colour": (3, 31, 9, 3)}.items():
  out = serve(images=tf.constant(rng.integers(0, 256, shape, dtype=np.uint8)))
  results[name] = {
      "sums": out["probabilities"].numpy().sum(-1).tolist(),
      "dtype": out["probabilities"].dtype.name,
      "shape": out["probabilities"].shape.as_list(),
      "labels": [l.decode() for l in out["labels"].numpy()],
  }
try:
  serve(images=tf.zeros((1, 8, 8, 4), tf.uint8))
  results["four_channels"] = "accepted"
except Exception as error:
  results["four_channels"] = str(error)
wrong = {"float32": tf.zeros((1, 8, 8, 3)), "rank3": tf.zeros((8, 8, 3), tf.uint8)}
for name, bad in wrong.items():
  try:
    serve(images=bad)
    results[name] = "accepted"
  except Exception as error:
    results[name] = f"{type(error).__name__}: {error}"
# The encoded-bytes signature: a JPEG and a PNG of different sizes in one batch.
serve_bytes = tf.saved_model.load(sys.argv[1]).signatures["serving_bytes"]
gray = rng.integers(0, 256, (17, 23, 1), dtype=np.uint8)
files = [tf.io.encode_jpeg(gray, quality=100), tf.io.encode_png(np.repeat(gray[:9], 3, -1))]
out = serve_bytes(image_bytes=tf.stack(files))
results["bytes"] = {
    "sums": out["probabilities"].numpy().sum(-1).tolist(),
    "labels": [l.decode() for l in out["labels"].numpy()],
}
# A lossless PNG at the model's size: the same pixels through either signature.
size = int(sys.argv[2])
pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
png = serve_bytes(image_bytes=tf.stack([tf.io.encode_png(pixels)]))["probabilities"]
raw = serve(images=tf.constant(pixels[None]))["probabilities"]
results["bytes_vs_pixels"] = float(np.abs(png.numpy() - raw.numpy()).max())
try:
  serve_bytes(image_bytes=tf.constant([b"not an image"]))
  results["not_an_image"] = "accepted"
except Exception as error:
  results["not_an_image"] = str(error)
print(json.dumps(results))
"""


def test_class_names_travel_with_the_checkpoints_and_the_export(tiny_run):
  """Tools label outputs with the model's own classes, read from what the run saved."""
  config, workdir, summary = tiny_run
  paths = RunPaths(workdir)
  expected = {"task": "emotion", "class_names": list(config.data.class_names)}
  for saved in (paths.best_checkpoint, paths.last_checkpoint, summary["export"]):
    assert model_metadata.read(saved) == expected, saved
  assert model_io.class_names(paths.best_checkpoint, ["x"]) == expected["class_names"]
  assert inference_classifier(paths.best_checkpoint).class_names == expected["class_names"]


def test_export_serves_in_a_fresh_process(tiny_run):
  config, workdir, _ = tiny_run
  out = subprocess.run(
    [sys.executable, "-c", _SERVE, RunPaths(workdir).export(1), str(config.data.image_size)],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
  )
  results = json.loads(out.stdout.strip().splitlines()[-1])
  for name, batch in (("gray", 2), ("colour", 3)):
    assert results[name]["shape"] == [batch, 7]
    assert results[name]["dtype"] == "float32"
    np.testing.assert_allclose(results[name]["sums"], 1.0, rtol=1e-5)
    assert set(results[name]["labels"]) <= set(labels.EMOTION_CLASSES)
  expected = "images: expected uint8 [batch >= 1, height >= 1, width >= 1, channels 1 or 3]"
  assert expected in results["four_channels"] and "[1 8 8 4]" in results["four_channels"]
  assert "expected to be a uint8 tensor but is a float tensor" in results["float32"]
  # The signature is of unknown rank, so the graph's check names the expected shape.
  assert expected in results["rank3"] and "[8 8 3]" in results["rank3"]
  np.testing.assert_allclose(results["bytes"]["sums"], 1.0, rtol=1e-5)
  assert set(results["bytes"]["labels"]) <= set(labels.EMOTION_CLASSES)
  assert results["bytes_vs_pixels"] < 1e-6
  assert "image_bytes: not a JPEG, PNG, GIF, BMP or WebP file" in results["not_an_image"]


def test_saved_model_cli_shows_both_signatures(tiny_run):
  _, workdir, _ = tiny_run
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  out = subprocess.run(
    [cli, "show", "--dir", RunPaths(workdir).export(1), "--all"],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
  ).stdout
  default = out[out.index("signature_def['serving_default']") :]
  encoded = out[out.index("signature_def['serving_bytes']") :]
  assert "inputs['images'] tensor_info:\n        dtype: DT_UINT8" in default
  assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING" in encoded
  for text in (default, encoded):
    assert "outputs['probabilities']" in text and "outputs['labels']" in text


_LOAD_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
if sys.argv[2] == "classifier":
  from inference import emotion_inference

  probabilities = emotion_inference.Classifier(sys.argv[1])(np.zeros((2, 20, 20, 3), np.uint8))
else:
  from inference import model_io

  probabilities = model_io.load_checkpoint_flag(sys.argv[1])(np.zeros((2, 16, 16, 3), np.uint8))
print(np.asarray(probabilities).shape)
"""


@pytest.mark.parametrize("loader", ["classifier", "checkpoint_flag"])
def test_checkpoints_load_in_a_process_that_built_no_model(tiny_run, loader):
  """The tools load `.keras` files without building a model first (the fused batch norm)."""
  _, workdir, _ = tiny_run
  out = subprocess.run(
    [sys.executable, "-c", _LOAD_IN_A_FRESH_PROCESS, RunPaths(workdir).best_checkpoint, loader],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == "(2, 7)"


def test_the_final_weights_can_be_tested_and_exported_instead_of_the_best(tiny_run, tmp_path):
  config, workdir, _ = tiny_run
  paths = RunPaths(str(tmp_path / "run"))
  shutil.copytree(workdir, paths.workdir)
  kept = {p: open(p, "rb").read() for p in (paths.best_checkpoint, paths.last_checkpoint)}
  config = config.copy_and_resolve_references()
  config.export.checkpoint = "final"
  config.export.version = 2
  summary = loop.train_and_evaluate(config, paths.workdir)
  assert summary["checkpoint"] == paths.final_checkpoint
  rows = callbacks.read_metrics(paths.metrics)
  report = json.load(open(paths.test_report))
  assert report["checkpoint"] == paths.final_checkpoint
  assert (report["iteration"], report["epoch"]) == (int(rows[-1]["iteration"]), 1)
  final = model_io.load_checkpoint(paths.final_checkpoint)
  last = model_io.load_checkpoint(paths.last_checkpoint)
  for got, want in zip(final.get_weights(), last.get_weights(), strict=True):
    np.testing.assert_array_equal(got, want)
  assert model_metadata.class_names(paths.final_checkpoint) == list(config.data.class_names)
  assert summary["export"] == paths.export(2) and os.path.isdir(paths.export(1))
  assert {p: open(p, "rb").read() for p in kept} == kept


def test_rerunning_a_finished_run_does_not_train_again(tiny_run, tmp_path):
  config, workdir, _ = tiny_run
  rows = callbacks.read_metrics(RunPaths(workdir).metrics)
  summary = loop.train_and_evaluate(config, workdir)
  assert callbacks.read_metrics(RunPaths(workdir).metrics) == rows
  assert summary["best_epoch"] == 1


def test_restore_brings_back_weights_and_optimizer_state(tiny_run):
  config, workdir, _ = tiny_run
  path = RunPaths(workdir).last_checkpoint
  model = emotion_model.build_model(config)
  task = emotion.EmotionTask(config)
  loop.compile_model(model, task, steps_per_epoch=3, policy="float32", jit_compile=False)
  iteration = callbacks.restore_training_state(model, path)
  assert iteration == 3  # one epoch of 3 steps
  loop.check_resume_point(path, iteration, steps_per_round=3, mid_round=False)
  saved = keras.saving.load_model(path)
  images = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
  np.testing.assert_array_equal(model.predict(images, verbose=0), saved.predict(images, verbose=0))
  for restored, reference in zip(model.optimizer.variables, saved.optimizer.variables, strict=True):
    np.testing.assert_array_equal(restored.numpy(), reference.numpy())
  with pytest.raises(ValueError, match="not a whole number of epochs"):
    loop.check_resume_point(path, iteration, steps_per_round=2, mid_round=False)
  # Where last.keras is written between validations too, the loop finishes the round.
  loop.check_resume_point(path, iteration, steps_per_round=2, mid_round=True)


# Keras warns about every layer it cannot match before it raises.
@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_resuming_with_a_different_model_is_a_clear_error(tiny_run):
  config, workdir, _ = tiny_run
  config = config.copy_and_resolve_references()
  config.model.width = 8
  with open(RunPaths(workdir).config) as file:
    record = file.read()
  # Refused before anything is written: the run's record is unchanged.
  with pytest.raises(ValueError, match=r"Cannot resume .* model\.width: run 4, now 8"):
    loop.train_and_evaluate(config, workdir)
  with open(RunPaths(workdir).config) as file:
    assert file.read() == record


def _train_command(workdir, *overrides):
  return [
    sys.executable,
    "train_main.py",
    "--config=configs/emotion.py:tiny",
    f"--workdir={workdir}",
    *overrides,
  ]


def test_kill_and_resume_continues_without_duplicate_rows(tmp_path):
  """Also the trainer on TFRecord shards (data.source=tfrecord), at no extra run's cost."""
  workdir = str(tmp_path / "run")
  shards = write_tfrecords.write_tfrecords(tiny_config(), str(tmp_path / "shards"))
  overrides = [
    "--config.schedule.num_epochs=8",
    "--config.logging.verbose=2",
    "--config.data.source=tfrecord",
    f"--config.data.dir={shards.directory}",
    "--config.export.enabled=False",
  ]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  process = subprocess.Popen(
    _train_command(workdir, *overrides),
    cwd=REPO_ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  paths = RunPaths(workdir)
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(paths.last_checkpoint) and len(callbacks.read_metrics(paths.metrics)) >= 2:
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = len(callbacks.read_metrics(paths.metrics))
  assert 2 <= killed_at < 8, "the run ended before it could be killed"

  resumed = subprocess.run(
    _train_command(workdir, *overrides), cwd=REPO_ROOT, env=env, capture_output=True, text=True
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming from" in resumed.stderr
  rows = callbacks.read_metrics(paths.metrics)
  steps = 64 // 16
  assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
  assert [int(r["iteration"]) for r in rows] == [steps * e for e in range(1, 9)]
  model = keras.saving.load_model(paths.last_checkpoint)
  assert int(model.optimizer.iterations) == 8 * steps
  report = json.loads(open(paths.test_report).read())
  assert report["num_images"] == len(shards.splits["test"])
  # The cosine schedule ran to its end: the last learning rate is the floor.
  assert float(rows[-1]["learning_rate"]) == pytest.approx(0.0, abs=1e-7)


def test_misspelt_override_is_an_error():
  result = subprocess.run(
    [sys.executable, "train_main.py", "--config=configs/emotion.py:tiny", "--config.model.widht=3"],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
  )
  assert result.returncode != 0
  assert "widht" in result.stderr


def test_missing_explicit_data_dir_is_an_error(tmp_path):
  from common.errors import DataError

  with pytest.raises(DataError, match="does not exist"):
    loop.train_and_evaluate(
      tiny_config(source="auto", dir=str(tmp_path / "absent")), str(tmp_path / "r")
    )


def test_deterministic_runs_write_identical_metrics(tmp_path):
  """The emotion trainer; the deepfake trainer's clip sampling is tested to be seeded
  in deepfake_data_test (its two-run check cost 74 s of the CI budget)."""
  config_file = "configs/emotion.py:tiny"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  workdirs = [str(tmp_path / run) for run in ("a", "b")]
  # Side by side: most of a tiny run is single-threaded graph tracing.
  processes = [
    subprocess.Popen(
      [
        sys.executable,
        "train_main.py",
        f"--config={config_file}",
        f"--workdir={workdir}",
        "--config.training.deterministic=True",
        "--config.export.enabled=False",
      ],
      cwd=REPO_ROOT,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for workdir in workdirs
  ]
  for process in processes:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    # oneDNN's CPU sums depend on thread scheduling (common/tf_environment.py).
    assert "oneDNN CPU kernels off" in stderr
  contents = []
  for workdir in workdirs:
    with open(RunPaths(workdir).metrics) as file:
      contents.append(file.read())
  assert len(contents[0].splitlines()) >= 3  # a header and at least two validations
  assert contents[0] == contents[1]
