"""The GPU path on the CPU: XLA-compiled train steps and mixed precision, for both trainers.

XLA compiles a graph through the same TensorFlow-to-XLA kernels on CPUs and
GPUs, so an op without one fails here as it would on a GPU; the mixed
precision policies run on CPUs too. Each tiny run is compared with what the
float32 runs of `train_test.py` and `deepfake_train_test.py` give: the same
iterations, epochs and checkpoints, step for step.
"""

import json
import os
import platform
import subprocess
import sys

import keras
import numpy as np
import pytest

from configs import deepfake as deepfake_config
from configs import emotion as emotion_config
from keras_models import deepfake as deepfake_model
from keras_models import emotion as emotion_model
from training import callbacks, loop, runtime
from training.run_paths import RunPaths

FLOAT16_INITIAL_SCALE = 2.0**15  # Keras' LossScaleOptimizer default


def _rows(workdir):
  return [
    (int(r["iteration"]), r["epoch"]) for r in callbacks.read_metrics(RunPaths(workdir).metrics)
  ]


def _assert_finite(workdir):
  for row in callbacks.read_metrics(RunPaths(workdir).metrics):
    for column in callbacks.METRICS_COLUMNS:
      assert np.isfinite(float(row[column])), (column, row)


def _loss_scale(checkpoint):
  """The dynamic loss scale saved with a float16 run's optimizer."""
  model = keras.saving.load_model(checkpoint)
  return float(model.optimizer.dynamic_scale.numpy())


def _serve(export_dir, task):
  """Probabilities of the export in a fresh process: dtype and shape."""
  script = r"""
import json, sys
import numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
rng = np.random.default_rng(0)
if sys.argv[2] == "emotion":
  out = serve(images=tf.constant(rng.integers(0, 256, (2, 21, 19, 1), dtype=np.uint8)))
  result = out["probabilities"]
else:
  out = serve(clips=tf.constant(rng.integers(0, 256, (2, 2, 30, 30, 3), dtype=np.uint8)))
  result = out["probability_fake"]
print(json.dumps({"dtype": result.dtype.name, "values": result.numpy().tolist(),
                  "dtypes": sorted({v.dtype.name for v in out.values()})}))
"""
  out = subprocess.run(
    [sys.executable, "-c", script, export_dir, task],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def emotion_runs(tmp_path_factory):
  """float16: one epoch with XLA, then resumed to two without; bfloat16: two epochs.

  On this CPU, XLA compiles each step function for minutes: one compiled run
  per trainer keeps the suite in its time budget.
  """
  runs = {}
  config = emotion_config.get_config("tiny")
  config.training.mixed_precision = "mixed_float16"
  config.training.jit_compile = "True"
  config.schedule.num_epochs = 1
  config.export.enabled = False
  workdir = str(tmp_path_factory.mktemp("emotion_float16"))
  first = loop.train_and_evaluate(config, workdir)
  first_scale = _loss_scale(RunPaths(workdir).last_checkpoint)
  config.training.jit_compile = "False"
  config.schedule.num_epochs = 2
  config.export.enabled = True
  runs["mixed_float16"] = (workdir, loop.train_and_evaluate(config, workdir), first, first_scale)
  config = emotion_config.get_config("tiny")
  config.training.mixed_precision = "mixed_bfloat16"
  config.export.enabled = False
  workdir = str(tmp_path_factory.mktemp("emotion_bfloat16"))
  runs["mixed_bfloat16"] = (workdir, loop.train_and_evaluate(config, workdir), None, None)
  return runs


def test_emotion_float16_with_xla_counts_every_step_and_resumes(emotion_runs):
  workdir, summary, first, first_scale = emotion_runs["mixed_float16"]
  assert first["jit_compile"] and not summary["jit_compile"]
  assert summary["dtype_policy"] == "mixed_float16"
  # Overflowing steps were skipped (the scale fell from its initial value)...
  assert first_scale < FLOAT16_INITIAL_SCALE
  # ...and still counted: 64 images, batch 16, as in float32.
  assert _rows(workdir) == [(4, "1"), (8, "2")]
  _assert_finite(workdir)
  assert sorted(os.listdir(os.path.dirname(RunPaths(workdir).last_checkpoint))) == [
    "best.keras",
    "last.keras",
  ]


def test_emotion_bfloat16_counts_every_step(emotion_runs):
  workdir, summary, _, _ = emotion_runs["mixed_bfloat16"]
  assert summary["dtype_policy"] == "mixed_bfloat16" and not summary["jit_compile"]
  assert _rows(workdir) == [(4, "1"), (8, "2")]
  _assert_finite(workdir)


def test_emotion_float16_checkpoint_and_export_serve_float32(emotion_runs):
  workdir, summary, _, _ = emotion_runs["mixed_float16"]
  model = keras.saving.load_model(RunPaths(workdir).best_checkpoint, compile=False)
  assert model.get_layer("resnet18").get_layer("stage1_block1_conv1").compute_dtype == "float16"
  images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  probabilities = model.predict(images, verbose=0)
  assert probabilities.dtype == np.float32
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
  served = _serve(summary["export"], "emotion")
  assert served["dtype"] == "float32"
  np.testing.assert_allclose(np.sum(served["values"], -1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def deepfake_runs(tmp_path_factory):
  """float16: with XLA to 4 (mid-round), resumed without it to 6; bfloat16: to 3.

  Batches of 3 split the 9 validation clips evenly: XLA compiles a step once
  per batch shape, and a last batch of another size would cost another compile.
  """
  runs = {}
  config = deepfake_config.get_config("tiny")
  config.training.mixed_precision = "mixed_float16"
  config.training.jit_compile = "True"
  config.schedule.batch_size = 3
  config.schedule.max_iterations = 4
  config.export.enabled = False
  workdir = str(tmp_path_factory.mktemp("deepfake_float16"))
  first = loop.train_and_evaluate(config, workdir)
  first_scale = _loss_scale(RunPaths(workdir).last_checkpoint)
  config.training.jit_compile = "False"
  config.schedule.max_iterations = 6
  config.export.enabled = True
  runs["mixed_float16"] = (
    workdir,
    loop.train_and_evaluate(config, workdir),
    first,
    first_scale,
  )
  config = deepfake_config.get_config("tiny")
  config.training.mixed_precision = "mixed_bfloat16"
  config.schedule.max_iterations = 3
  config.export.enabled = False
  workdir = str(tmp_path_factory.mktemp("deepfake_bfloat16"))
  runs["mixed_bfloat16"] = (workdir, loop.train_and_evaluate(config, workdir), None, None)
  return runs


def test_deepfake_float16_with_xla_counts_every_step_and_resumes(deepfake_runs):
  workdir, summary, first, first_scale = deepfake_runs["mixed_float16"]
  assert first["jit_compile"] and not summary["jit_compile"]
  assert first_scale < FLOAT16_INITIAL_SCALE  # steps were skipped...
  # ...and counted: the float32 run's rows (deepfake_train_test.py): a
  # validation at 3, the last at max_iterations 4, the next regular one at 6;
  # 15 training videos, batch 3.
  assert [i for i, _ in _rows(workdir)] == [3, 4, 6]
  assert [float(e) for _, e in _rows(workdir)] == pytest.approx([0.6, 0.8, 1.2], abs=1e-4)
  _assert_finite(workdir)
  assert sorted(os.listdir(os.path.dirname(RunPaths(workdir).last_checkpoint))) == [
    "best.keras",
    "it000003.keras",
    "it000004.keras",
    "it000006.keras",
    "last.keras",
  ]
  assert summary["final_iteration"] == 6


def test_deepfake_bfloat16_counts_every_step(deepfake_runs):
  workdir, summary, _, _ = deepfake_runs["mixed_bfloat16"]
  assert summary["dtype_policy"] == "mixed_bfloat16"
  assert [i for i, _ in _rows(workdir)] == [3]
  _assert_finite(workdir)


def test_deepfake_float16_export_serves_float32(deepfake_runs):
  _, summary, _, _ = deepfake_runs["mixed_float16"]
  served = _serve(summary["export"], "deepfake")
  assert served["dtypes"] == ["float32"]
  values = np.array(served["values"])
  assert values.shape == (2,) and ((0 <= values) & (values <= 1)).all()


def test_a_skipped_float16_step_is_counted_and_moves_the_schedule():
  schedule = keras.optimizers.schedules.PolynomialDecay(1.0, decay_steps=10, end_learning_rate=0.0)
  optimizer = runtime.wrap_optimizer_for_policy(
    keras.optimizers.SGD(learning_rate=schedule), "mixed_float16"
  )
  weight = keras.Variable(np.ones(3, np.float32))
  optimizer.build([weight])
  optimizer.apply([keras.ops.convert_to_tensor([np.inf, 1.0, 1.0])], [weight])  # overflow
  np.testing.assert_array_equal(weight.numpy(), np.ones(3))  # skipped...
  assert int(optimizer.iterations.numpy()) == 1  # ...and counted
  assert float(optimizer.dynamic_scale.numpy()) == FLOAT16_INITIAL_SCALE / 2
  assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.9)  # the schedule moved on
  optimizer.apply(
    [keras.ops.convert_to_tensor([1.0, 1.0, 1.0]) * optimizer.dynamic_scale], [weight]
  )
  np.testing.assert_allclose(weight.numpy(), np.full(3, 1.0 - 0.9), rtol=1e-6)
  assert int(optimizer.iterations.numpy()) == 2
  plain = keras.optimizers.SGD()
  assert runtime.wrap_optimizer_for_policy(plain, "mixed_bfloat16") is plain  # no scaling needed


def test_jit_compile_setting_resolves_as_keras_does_and_refuses_a_fallback():
  import tensorflow as tf

  strategy = tf.distribute.get_strategy()
  assert runtime.resolve_jit_compile("auto", strategy, deterministic=False) is False  # a CPU
  assert runtime.resolve_jit_compile("True", strategy, deterministic=False) is True
  assert runtime.resolve_jit_compile(False, strategy, deterministic=False) is False
  with pytest.raises(ValueError, match="deterministic=True"):
    runtime.resolve_jit_compile(True, strategy, deterministic=True)
  with pytest.raises(ValueError, match="jit_compile='fast'"):
    runtime.resolve_jit_compile("fast", strategy, deterministic=False)
  inputs = keras.Input((8, 8, 3))
  rotated = keras.layers.RandomRotation(0.1, name="keras_rotation")(inputs)
  model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(rotated))
  with pytest.raises(ValueError, match=r"keras_rotation \(RandomRotation\)"):
    runtime.compile_model(model, True, loss="mse")
  runtime.compile_model(model, False, loss="mse")
  assert model.jit_compile is False


@pytest.mark.parametrize(
  ("flags", "native"),
  [
    ("fpu sse2 avx avx2 fma", False),  # an AMD EPYC of this CI: emulated bfloat16
    ("avx2 avx512f avx512_bf16 avx512_vnni", True),
    ("avx2 avx512f amx_bf16 amx_tile", True),
    ("avx512f avx512_bf16x", False),  # whole flags only
  ],
)
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, flags, native):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text(f"processor\t: 0\nmodel name\t: CPU\nflags\t\t: {flags}\n\n" * 2)
  assert runtime.cpu_has_native_bfloat16(str(cpuinfo)) is native
  assert runtime.cpu_has_native_bfloat16(str(tmp_path / "absent")) is False


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_if_native_falls_back_to_float32_on_other_cpus(monkeypatch, native):
  monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: native)
  expected = "mixed_bfloat16" if native else "float32"
  assert runtime.resolve_dtype_policy("mixed_bfloat16_if_native") == expected
  assert runtime.resolve_dtype_policy("auto") == "float32"  # auto stays float32 on CPUs
  assert runtime.resolve_dtype_policy("mixed_bfloat16") == "mixed_bfloat16"  # forced
  with pytest.raises(ValueError, match="'fp8'.*mixed_bfloat16_if_native"):
    runtime.resolve_dtype_policy("fp8")


def test_the_entry_points_turn_on_tensorflows_onednn_kernels():
  """TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX."""
  script = (
    "import tools.evaluate_emotion;"
    "from common import tf_environment;"
    "print(tf_environment.onednn_enabled())"
  )
  env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
  run = lambda extra: subprocess.run(  # noqa: E731
    [sys.executable, "-c", script],
    capture_output=True,
    text=True,
    check=True,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    env={**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra},
  ).stdout.split()[-1]
  if platform.machine() in ("x86_64", "AMD64"):
    assert run({}) == "True"
  assert run({"TF_ENABLE_ONEDNN_OPTS": "0"}) == "False"  # the user's setting is kept


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_no_layer_of_either_model_turns_xla_off(policy):
  models = [
    emotion_model.build_model(emotion_config.get_config("tiny"), policy),
    deepfake_model.build_model(deepfake_config.get_config("tiny"), policy, jit_compile=True),
  ]
  for model in models:
    assert [layer.name for layer in model._flatten_layers() if not layer.supports_jit] == []
  # With XLA off, the LSTM may use cuDNN on a GPU; with it on, never.
  lstm = models[1].get_layer("lstm")
  assert lstm.use_cudnn is False
  assert (
    deepfake_model.build_model(deepfake_config.get_config("tiny")).get_layer("lstm").use_cudnn
    == "auto"
  )
