"""Deepfake trainer end to end on tiny synthetic clips: cadence, outputs, export, resume."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import deepfake as deepfake_config
from keras_models import deepfake as deepfake_model
from tools import write_tfrecords
from training import attention, callbacks, deepfake, loop, summaries
from training.run_paths import RunPaths


def tiny_config(**schedule):
  config = deepfake_config.get_config("tiny")
  config.schedule.update(schedule)
  return config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A tiny run from TFRecord shards, stopped at iteration 4 (mid-round) and resumed to 6.

  One run covers the cadence, the resume and the shards reader (two runs
  would cost another 80-100 s of the CI budget).
  """
  config = tiny_config(max_iterations=4, log_every_steps=2, validation_interval=3)
  shards = str(tmp_path_factory.mktemp("shards") / "tiny")
  write_tfrecords.write_tfrecords(config, shards)
  config.data.source, config.data.dir = "tfrecord", shards
  config.export.enabled = False
  workdir = str(tmp_path_factory.mktemp("deepfake"))
  traces = []
  train_step = keras.Model.train_step

  def counting_train_step(model, data):  # Runs once per trace, not once per step.
    traces.append(1)
    return train_step(model, data)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(keras.Model, "train_step", counting_train_step)
    loop.train_and_evaluate(config, workdir)
  # Continue to 6, as after a crash at 4: last.keras is from iteration 4.
  config.schedule.max_iterations = 6
  config.export.enabled = True
  return workdir, loop.train_and_evaluate(config, workdir), len(traces)


def test_the_train_step_is_traced_once(tiny_run):
  # The optimizer is built before fit (callbacks.restore_training_state): a
  # first trace that creates its variables would make tf.function trace again.
  assert tiny_run[2] == 1


def test_validation_rows_and_checkpoints_follow_the_iteration_cadence(tiny_run):
  workdir, summary, _ = tiny_run
  paths = RunPaths(workdir)
  rows = callbacks.read_metrics(paths.metrics)
  # 3: a regular validation; 4: the final one at max_iterations of the first
  # run; 6: the next regular one after resuming, not 4 + 3.
  assert [int(r["iteration"]) for r in rows] == [3, 4, 6]
  for row in rows:
    assert all(row[c] != "" and np.isfinite(float(row[c])) for c in callbacks.METRICS_COLUMNS)
  # 15 training videos, batch 2: epoch = passes over the training videos.
  assert [float(r["epoch"]) for r in rows] == pytest.approx([0.4, 8 / 15, 0.8], abs=1e-4)
  checkpoints = sorted(os.listdir(os.path.dirname(paths.last_checkpoint)))
  assert checkpoints == [
    "best.keras",
    "it000003.keras",
    "it000004.keras",
    "it000006.keras",
    "last.keras",
  ]
  assert sorted(os.listdir(os.path.join(workdir, "attention"))) == [
    "it000003.png",
    "it000004.png",
    "it000006.png",
  ]
  attention = event_accumulator.EventAccumulator(
    os.path.join(paths.tensorboard, "attention"), {"tensors": 0}
  )
  attention.Reload()
  # Step 3 is not a multiple of log_every_steps=2: Keras' TensorBoard callback would drop it.
  assert [e.step for e in attention.Tensors("attention/fake")] == [3, 4, 6]
  images = event_accumulator.EventAccumulator(paths.tensorboard_images, {"tensors": 0})
  images.Reload()
  tags = images.Tags()["tensors"]
  assert set(tags) == {
    "config",
    "train/augmented_samples",
    "validation/confusion_matrix",
    "validation/roc_pr_curves",
  }
  assert [e.step for e in images.Tensors("validation/roc_pr_curves")] == [3, 4, 6]
  assert summary["final_iteration"] == 6 and summary["stop_reason"] is None
  hparams, final = summaries.read_hparams(paths.tensorboard)
  assert hparams["schedule.max_iterations"] == 6 and hparams["data.source"] == "tfrecord"
  assert final == pytest.approx(
    {
      "best_val_loss": summary["best_val_loss"],
      "best_val_roc_auc": summary["best_val_roc_auc"],
      "best_iteration": summary["best_iteration"],
      "final_iteration": 6,
    }
  )


_SERVE = r"""
import json, sys
import numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
clips = np.random.default_rng(0).integers(0, 256, (3, 2, 37, 41, 3), dtype=np.uint8)
out = serve(clips=tf.constant(clips))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
"""


def test_export_answers_in_a_fresh_process(tiny_run):
  workdir, _, _ = tiny_run
  out = subprocess.run(
    [sys.executable, "-c", _SERVE, RunPaths(workdir).export(1)],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
  )
  result = json.loads(out.stdout.strip().splitlines()[-1])
  probability = np.array(result["probability_fake"])
  assert probability.shape == (3,) and ((0 <= probability) & (probability <= 1)).all()
  assert np.array(result["spatial_attention"]).shape == (3, 2, 4, 4)
  np.testing.assert_allclose(np.array(result["temporal_attention"]).sum(-1), 1.0, rtol=1e-5)


def test_attention_overlay_layout():
  clip = np.zeros((3, 32, 32, 3), np.uint8)
  clip[1] = 200
  maps = np.zeros((3, 4, 4), np.float32)
  maps[:, 0, 0] = 1.0
  panel = attention.overlay_attention(clip, maps)
  assert panel.shape == (256, 384, 3) and panel.dtype == np.uint8
  assert (panel[:128, 128:256] == 200).all()  # frames on top, enlarged
  assert (panel[:128, :128] == 0).all()
  overlay = panel[128:, :128].astype(int)
  # The map shows below: JET red where attention is 1, blue where it is 0.
  red, blue = overlay[5, 5], overlay[120, 120]
  assert red[0] > red[2] and blue[2] > blue[0]


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
  config = deepfake_config.get_config("tiny")
  config.optimizer.learning_rate = 1e-3
  config.schedule.max_iterations = 110
  config.schedule.min_lr_fraction = 0.01
  assert deepfake.learning_rate(config, 5.0) == 1e-3  # the recipe: a constant rate
  config.schedule.learning_rate_schedule = "cosine"
  config.schedule.warmup_epochs = 2.0  # of 5 steps each
  schedule = deepfake.learning_rate(config, 5.0)
  rates = [float(schedule(step)) for step in (0, 5, 10, 60, 110)]
  assert rates == pytest.approx([0.0, 5e-4, 1e-3, 5.05e-4, 1e-5], rel=1e-3)
  config.schedule.learning_rate_schedule = "linear"
  with pytest.raises(ValueError, match="learning_rate_schedule='linear'"):
    deepfake.learning_rate(config, 5.0)


@pytest.mark.parametrize("bad_video", [1, 5])  # read first for TensorBoard samples / by fit
def test_a_corrupt_frame_file_is_named(tmp_path, monkeypatch, bad_video):
  """tf.data's decode error names no file; the trainer finds the file and says so.

  `fit` is replaced by a pass over the real training tf.data pipeline, which
  raises TensorFlow's own decode error without the cost of tracing the model.
  """
  from PIL import Image

  def read_batches(model, dataset, **kwargs):
    for _ in dataset.take(8):
      pass

  rows = ["video,label,split"]
  for index in range(8):
    folder = tmp_path / "faces" / f"v{index}"
    folder.mkdir(parents=True)
    for frame in range(2):  # = num_frames: every clip holds both
      Image.new("RGB", (16, 16), (index * 30, frame * 40, 90)).save(folder / f"{frame}.jpg")
    rows.append(f"v{index},{index % 2},{'train' if index < 6 else 'validation'}")
  (tmp_path / "faces" / "labels.csv").write_text("\n".join(rows) + "\n")
  bad = tmp_path / "faces" / f"v{bad_video}" / "1.jpg"
  bad.write_bytes(b"\xff\xd8 not a jpeg after all")

  config = tiny_config(max_iterations=40, validation_interval=20)
  config.data.source = "csv"
  config.data.labels_csv = str(tmp_path / "faces" / "labels.csv")
  config.data.subset_fraction = 1.0
  config.export.enabled = False
  monkeypatch.setattr(keras.Model, "fit", read_batches)
  message = rf"v{bad_video}/1\.jpg.*cannot be decoded"
  with pytest.raises(deepfake.deepfake_data.DataError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_the_test_split_gets_a_clip_and_video_level_report(tmp_path):
  """As tools.evaluate_videos computes them, on the best checkpoint (here untrained)."""
  import tensorflow as tf
  from PIL import Image

  rows = ["video,label,split"]
  for index in range(12):
    folder = tmp_path / "faces" / f"v{index}"
    folder.mkdir(parents=True)
    for frame in range(3):
      Image.new("RGB", (16, 16), (index * 20, frame * 40, 90)).save(folder / f"{frame}.jpg")
    split = "train" if index < 6 else "validation" if index < 8 else "test"
    rows.append(f"v{index},{index % 2},{split}")
  (tmp_path / "faces" / "labels.csv").write_text("\n".join(rows) + "\n")
  config = tiny_config()
  config.data.source = "csv"
  config.data.labels_csv = str(tmp_path / "faces" / "labels.csv")
  config.data.subset_fraction = 1.0
  task = deepfake.DeepfakeTask(config)
  task.load_data(tf.distribute.get_strategy())
  model = deepfake_model.build_model(config)
  checkpoint = str(tmp_path / "best.keras")
  model.save(checkpoint)
  report = task.evaluate_test(model, checkpoint)
  assert report["num_videos"] == 4 and report["checkpoint"] == checkpoint
  for level in ("clip", "video"):
    assert set(report[level]) >= {"roc_auc", "log_loss", "accuracy", "balanced_accuracy"}
