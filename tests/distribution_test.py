"""tf.distribute on CPU: MirroredStrategy over two logical devices, and two workers on localhost."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT

from keras_models import augment as _registers_emotion_layers  # noqa: F401
from training import callbacks, distribution
from training.run_paths import RunPaths

# Two logical CPU devices must be made before TensorFlow starts, hence a fresh process.
_MIRRORED = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from configs import emotion as emotion_config
from training import loop
config = emotion_config.get_config("tiny")
config.training.distribution = "mirrored"
config.export.enabled = False
config.schedule.num_epochs = 1
uneven = config.copy_and_resolve_references()
uneven.schedule.batch_size = 3
try:
  loop.train_and_evaluate(uneven, sys.argv[1] + "_uneven")
  error = None
except ValueError as e:
  error = str(e)
summary = loop.train_and_evaluate(config, sys.argv[1])
print(json.dumps({"replicas": summary["replicas"], "error": error}))
"""

_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO_ROOT}


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
  done = subprocess.run(
    [sys.executable, "-c", _MIRRORED, str(tmp_path)],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    env=_ENV,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["replicas"] == 2
  assert "batch_size=3 does not split over the 2 replicas" in result["error"]
  paths = RunPaths(str(tmp_path))
  rows = callbacks.read_metrics(paths.metrics)
  assert len(rows) == 1 and np.isfinite(float(rows[0]["val_loss"]))
  model = keras.saving.load_model(paths.last_checkpoint, compile=False)
  norms = [
    layer for layer in model._flatten_layers() if "BatchNormalization" in type(layer).__name__
  ]
  assert len(norms) == 21 and all(layer.synchronized for layer in norms)


def free_ports(count: int) -> list[int]:
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _run_two_workers(workdir, num_epochs: int) -> list[str]:
  workers = [f"localhost:{port}" for port in free_ports(2)]
  processes = []
  for index in range(2):
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    command = [sys.executable, "train_main.py", "--config=configs/emotion.py:tiny"]
    command += [f"--workdir={workdir}", "--config.training.distribution=multi_worker"]
    command += ["--config.export.enabled=False", f"--config.schedule.num_epochs={num_epochs}"]
    processes.append(
      subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**_ENV, "TF_CONFIG": json.dumps(tf_config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
    )
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  for process, output in zip(processes, outputs, strict=True):
    assert process.returncode == 0, output[-3000:]
  return outputs


def test_two_workers_train_in_step_resume_and_only_the_chief_writes_the_run(tmp_path):
  workdir = tmp_path / "run"
  outputs = _run_two_workers(workdir, num_epochs=1)
  assert "CollectiveAllReduceStrategy with 2 replicas" in outputs[0]
  # Rerunning the command on both workers resumes (as after a crash) from the
  # chief's checkpoint: one more epoch, still in step.
  outputs = _run_two_workers(workdir, num_epochs=2)
  assert all("Resuming from" in output for output in outputs)

  chief, worker = RunPaths(str(workdir)), RunPaths(str(workdir / "workers" / "worker1"))
  assert sorted(os.listdir(workdir / "workers")) == ["worker1"]
  with open(chief.metrics) as a, open(worker.metrics) as b:
    assert a.read() == b.read()
  rows = callbacks.read_metrics(chief.metrics)
  assert [(int(r["epoch"]), int(r["iteration"])) for r in rows] == [(1, 4), (2, 8)]
  models = [keras.saving.load_model(p.last_checkpoint, compile=False) for p in (chief, worker)]
  for a, b in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
    np.testing.assert_array_equal(a, b)  # BatchNorm statistics included


def test_multi_worker_without_tf_config_says_what_is_missing(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="needs the cluster in the TF_CONFIG"):
    distribution.make_strategy("multi_worker")
  with pytest.raises(ValueError, match="distribution='ring'"):
    distribution.make_strategy("ring")


def test_outside_a_cluster_this_process_is_the_chief(tmp_path):
  import tensorflow as tf

  strategy = tf.distribute.get_strategy()
  assert distribution.is_chief(strategy)
  assert distribution.output_dir(str(tmp_path), strategy) == str(tmp_path)
