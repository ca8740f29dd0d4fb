r"""Measures this Keras system against the PyTorch reference on one machine.

  python -m benchmarks.run                       # everything, CPU-sized defaults
  python -m benchmarks.run --only=port,emotion --emotion_sizes=96

Set up once: `pip install -r requirements.txt -r benchmarks/requirements.txt`.

Sections (`--only`):
  port      ports the reference ResNet18's weights into the Keras model and
            prints the max |logit difference| (eval and train mode, 48 and 96
            px); it must be at most 1e-4.
  emotion   ResNet18 training throughput (images/s) at each of
            `--emotion_sizes`: ours (tf.data + on-device augmentation +
            `model.fit`, the trainer's own model and optimizer) vs the
            reference (DataLoader workers with torchvision transforms, AdamW,
            label smoothing; AMP on a GPU).
  input     the input pipeline alone, with every augmentation: ours (tf.data
            + the `ImagePreprocessor` layer) vs the DataLoader, in images/s,
            and how many times faster than training each one is.
  deepfake  EfficientNetB0 + LSTM training throughput (clips/s).
  xla       ours only: emotion (each of `--emotion_sizes`) and deepfake
            training throughput with the train step compiled by XLA and
            without, side by side, with the device, the precision policy and
            the ratio. On a GPU: `python -m benchmarks.run --only=xla`.
  storage   ours only: the training tf.data pipeline reading the same data
            from each storage: emotion images in memory vs TFRecord shards;
            deepfake clips (`--deepfake_frames` of `--storage_frames` per
            video) decoded from JPEG frame files vs shards (raw, png, jpeg).

Each measurement runs in its own process, so its peak memory (RSS of the
process and its workers; GPU peak where there is a GPU) is its own; with
`--repeat=N` each runs N times and the median throughput is reported (the
single runs are kept in the JSON). Figures are printed as tables and written
to `--output` as JSON.

`--model_only` times both ResNet18s alone on ready random arrays (Keras: the
bare model, without TensorFlow, so it runs with `KERAS_BACKEND=jax` on a
machine without TensorFlow; PyTorch: batches already on the device): model
and optimizer speed, not the end-to-end figure.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import itertools
import json
import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import app, flags, logging

from common import tf_environment

FLAGS = flags.FLAGS
flags.DEFINE_list(
  "only", ["port", "emotion", "input", "deepfake", "xla", "storage"], "Sections to run."
)
flags.DEFINE_integer("repeat", 1, "Runs of each measurement; throughputs are their median.")
flags.DEFINE_integer("storage_frames", 32, "Frames per video for the storage section.")
flags.DEFINE_list("emotion_sizes", ["48", "96"], "Emotion image sides to measure.")
flags.DEFINE_integer("batch_size", 32, "Emotion images per step (both systems).")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps first (tracing, workers starting).")
flags.DEFINE_integer("timed_steps", 10, "Timed training steps.")
flags.DEFINE_integer("input_batches", 30, "Timed batches for the input pipeline alone.")
flags.DEFINE_integer("workers", 0, "DataLoader workers; 0 means the number of CPU cores.")
flags.DEFINE_integer("deepfake_frames", 4, "Frames per clip.")
flags.DEFINE_integer("deepfake_size", 112, "Frame side.")
flags.DEFINE_integer("deepfake_batch", 4, "Clips per step.")
flags.DEFINE_string("mixed_precision", "auto", "Keras policy: auto (bf16/fp16 on GPU) or a name.")
flags.DEFINE_enum(
  "jit_compile",
  "auto",
  ["auto", "true", "false"],
  "XLA for the Keras train step (not the xla section, which measures both); auto: the "
  "trainers' rule (on GPUs and TPUs; with --model_only on JAX, always on).",
)
flags.DEFINE_bool("reference", True, "Also measure the PyTorch reference.")
flags.DEFINE_bool(
  "model_only", False, "Emotion: both models on ready arrays, no input pipeline (no TensorFlow)."
)
flags.DEFINE_string("output", "", "Also write the figures to this JSON file.")

NUM_TRAIN_IMAGES = 2048  # Distinct images the emotion loaders cycle through.
SOURCE_SIZE = 48  # The images are FER2013-like 48x48 grayscale, upsampled as needed.
MAX_PORT_ERROR = 1e-4


def _peak_memory(workers: bool = False) -> dict[str, float]:
  """Peak RSS of this process (and of the largest finished worker), in MiB."""
  gc.collect()  # shuts down DataLoader workers no longer referenced
  own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers else 0.0
  return {"peak_rss_mib": round(own, 1), "peak_worker_rss_mib": round(children, 1)}


def _emotion_images(count: int) -> tuple[np.ndarray, np.ndarray]:
  from input_pipeline import synthetic_faces

  images, labels = synthetic_faces.make_split("train", count, SOURCE_SIZE, seed=0)
  return images, labels


def _workers() -> int:
  return FLAGS.workers or os.cpu_count() or 1


# --- Ours -------------------------------------------------------------------


def _step_timer(warmup: int) -> Any:
  """A Keras callback timing from the end of step `warmup` to the last step.

  Built inside a function so that Keras is imported only in the measuring
  process, after its backend has been chosen.
  """
  import keras

  class StepTimer(keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.start = self.end = 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
      float((logs or {}).get("loss", 0.0))  # waits for the step to finish
      now = time.perf_counter()
      if batch == warmup - 1:
        self.start = now
      self.end = now

  return StepTimer()


def _keras_gpu_peak_mib() -> float | None:
  import keras

  backend = keras.backend.backend()
  try:
    if backend == "tensorflow":
      import tensorflow as tf

      if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    elif backend == "jax":
      import jax

      device = jax.devices()[0]
      if device.platform == "gpu":
        return device.memory_stats()["peak_bytes_in_use"] / 2**20
  except Exception as error:  # noqa: BLE001 - a figure we can do without
    logging.warning("No GPU memory figure: %s", error)
  return None


def _keras_device() -> str:
  """The device Keras trains on, in words."""
  import keras

  if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
      details = tf.config.experimental.get_device_details(gpus[0])
      return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
  elif keras.backend.backend() == "jax":
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
      return device.device_kind
  return f"CPU ({os.cpu_count()} cores)"


def _resolved_jit_compile(options: dict[str, Any]) -> bool:
  """The trainers' XLA rule for `options["jit_compile"]` (auto: on GPUs and TPUs)."""
  import tensorflow as tf

  from training import runtime

  return runtime.resolve_jit_compile(
    options["jit_compile"], tf.distribute.get_strategy(), deterministic=False
  )


def ours_emotion_train(options: dict[str, Any]) -> dict[str, Any]:
  import keras

  size, batch = options["size"], options["batch_size"]
  warmup, timed = options["warmup_steps"], options["timed_steps"]
  steps = warmup + timed
  if options["model_only"]:
    from keras_models.resnet import build_resnet18

    policy = options["mixed_precision"]
    policy = "float32" if policy == "auto" else policy
    model = build_resnet18((size, size, 3), dtype=policy)
    model.compile(
      optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-2),
      loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
      # Keras on JAX runs op by op without jit: "auto" jits there.
      jit_compile={"auto": "auto", "true": True, "false": False}[options["jit_compile"]],
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, size, size, 3)).astype(np.float32)
    y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, steps * batch)]
    data: dict[str, Any] = {"x": x, "y": y, "batch_size": batch}
  else:
    from configs import emotion as emotion_config
    from input_pipeline import emotion_data
    from input_pipeline.fer2013 import LabelledImages
    from keras_models import emotion as emotion_model
    from training import emotion, loop, runtime

    config = emotion_config.get_config()
    config.data.image_size = size
    config.schedule.batch_size = batch
    policy = runtime.resolve_dtype_policy(options["mixed_precision"])
    model = emotion_model.build_model(config, policy)
    loop.compile_model(
      model, emotion.EmotionTask(config), steps, policy, _resolved_jit_compile(options)
    )
    images, labels = _emotion_images(NUM_TRAIN_IMAGES)
    dataset = emotion_data.make_dataset(
      LabelledImages(images, labels), batch, 7, training=True, seed=0
    )
    data = {"x": dataset.repeat(), "steps_per_epoch": steps}
  timer = _step_timer(warmup)
  model.fit(**data, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
  seconds = timer.end - timer.start
  return {
    "images_per_s": timed * batch / seconds,
    "policy": policy,
    "xla": bool(model.jit_compile),
    "device": _keras_device(),
    "backend": keras.backend.backend(),
    "gpu_peak_mib": _keras_gpu_peak_mib(),
    **_peak_memory(),
  }


def ours_emotion_input(options: dict[str, Any]) -> dict[str, Any]:
  import tensorflow as tf

  from configs import emotion as emotion_config
  from input_pipeline import emotion_data
  from input_pipeline.fer2013 import LabelledImages
  from keras_models import emotion as emotion_model

  config = emotion_config.get_config()
  config.data.image_size = options["size"]
  preprocessor = emotion_model.build_preprocessor(config)
  images, labels = _emotion_images(NUM_TRAIN_IMAGES)
  dataset = emotion_data.make_dataset(
    LabelledImages(images, labels), options["batch_size"], 7, training=True, seed=0
  ).repeat()

  @tf.function
  def augment(batch: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(preprocessor(batch, training=True))

  iterator = iter(dataset)
  for _ in range(3):
    augment(next(iterator)[0]).numpy()
  start = time.perf_counter()
  for _ in range(options["input_batches"]):
    augment(next(iterator)[0]).numpy()
  seconds = time.perf_counter() - start
  return {"images_per_s": options["input_batches"] * options["batch_size"] / seconds}


def ours_deepfake_train(options: dict[str, Any]) -> dict[str, Any]:
  from configs import deepfake as deepfake_config
  from input_pipeline import deepfake_clips, deepfake_data
  from keras_models import deepfake as deepfake_model
  from training import deepfake, loop, runtime

  config = deepfake_config.get_config()
  config.data.source = "synthetic"
  config.data.num_frames = options["frames"]
  config.data.image_size = options["size"]
  config.data.synthetic.num_train_identities = 16
  config.data.synthetic.num_validation_identities = 2
  config.data.synthetic.image_size = options["size"]
  config.schedule.batch_size = options["batch_size"]
  data = deepfake_data.load(config)
  weights = deepfake_data.class_weights(data.train.labels)
  dataset = deepfake_clips.make_dataset(data.train, config, training=True, weights=weights)
  policy = runtime.resolve_dtype_policy(options["mixed_precision"])
  jit_compile = _resolved_jit_compile(options)
  model = deepfake_model.build_model(config, policy, jit_compile)
  steps_per_epoch = len(data.train) / config.schedule.batch_size
  loop.compile_model(model, deepfake.DeepfakeTask(config), steps_per_epoch, policy, jit_compile)
  warmup, timed = options["warmup_steps"], options["timed_steps"]
  timer = _step_timer(warmup)
  model.fit(
    dataset,
    steps_per_epoch=warmup + timed,
    epochs=1,
    verbose=0,
    callbacks=[timer],
    shuffle=False,
  )
  return {
    "clips_per_s": timed * options["batch_size"] / (timer.end - timer.start),
    "policy": policy,
    "xla": bool(model.jit_compile),
    "device": _keras_device(),
    "gpu_peak_mib": _keras_gpu_peak_mib(),
    **_peak_memory(),
  }


# --- Reference --------------------------------------------------------------


def ours_storage_read(options: dict[str, Any]) -> dict[str, Any]:
  """Batches/s of the training pipelines over the same data in each storage."""
  import tempfile

  import tensorflow as tf
  from PIL import Image

  from configs import deepfake as deepfake_config
  from input_pipeline import deepfake_clips, deepfake_data, emotion_data, tfrecords
  from input_pipeline.fer2013 import LabelledImages

  def rate(dataset: tf.data.Dataset, items_per_batch: int, batches: int) -> float:
    iterator = iter(dataset)
    for _ in range(3):
      next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    return batches * items_per_batch / (time.perf_counter() - start)

  def write(directory: str, task: str, encoding: str, records: dict, shape: tuple) -> Any:
    splits = {name: tfrecords.SplitRecords(iter(items), shape) for name, items in records.items()}
    return tfrecords.write_dataset(directory, task, encoding, splits, ["a"] * 7, "benchmark")

  result: dict[str, Any] = {}
  batch = options["batch_size"]
  with tempfile.TemporaryDirectory() as root:
    images, labels = _emotion_images(NUM_TRAIN_IMAGES)
    in_memory = LabelledImages(images, labels)
    records = list(emotion_data.image_records(zip(images, labels, strict=True), "raw"))
    manifest = write(
      os.path.join(root, "emotion"),
      "emotion",
      "raw",
      {"train": records, "validation": records},
      images.shape[1:],
    )
    for name, split in (("memory", in_memory), ("shards_raw", manifest.splits["train"])):
      dataset = emotion_data.make_dataset(split, batch, 7, training=True, seed=0).repeat()
      result[f"emotion_{name}_images_per_s"] = rate(dataset, batch, options["input_batches"])

    config = deepfake_config.get_config()
    frames, size = options["frames"], options["size"]
    config.data.num_frames, config.data.image_size = frames, size
    config.schedule.batch_size = options["batch_size"]
    rng = np.random.default_rng(0)
    paths, num_videos = [], 24
    for video in range(num_videos):
      folder = os.path.join(root, "faces", f"v{video}")
      os.makedirs(folder)
      paths.append([])
      for frame in range(options["storage_frames"]):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8))
        pixels = np.asarray(coarse.resize((size, size), Image.BILINEAR))
        paths[-1].append(os.path.join(folder, f"{frame:03d}.jpg"))
        Image.fromarray(pixels).save(paths[-1][-1], quality=95)
    videos = deepfake_data.Videos(
      [f"v{i}" for i in range(num_videos)],
      np.arange(num_videos, dtype=np.int32) % 2,
      np.arange(num_videos),
      frame_paths=paths,
    )
    result["deepfake_frame_files_clips_per_s"] = rate(
      deepfake_clips.make_dataset(videos, config, training=True), batch, options["input_batches"]
    )
    for encoding in tfrecords.ENCODINGS:
      rows: list[dict] = []
      shard_records = list(deepfake_data.video_records(videos, size, encoding, rows))
      manifest = write(
        os.path.join(root, f"deepfake_{encoding}"),
        "deepfake",
        encoding,
        {"train": shard_records, "validation": shard_records},
        (size, size, 3),
      )
      on_disk = dataclasses.replace(
        videos,
        frame_paths=None,
        records=manifest.splits["train"],
        record_ids=np.arange(num_videos),
        record_frames=np.full(num_videos, options["storage_frames"]),
      )
      result[f"deepfake_shards_{encoding}_clips_per_s"] = rate(
        deepfake_clips.make_dataset(on_disk, config, training=True),
        batch,
        options["input_batches"],
      )
  return result


def _torch_device() -> Any:
  import torch

  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_gpu_peak_mib() -> float | None:
  import torch

  return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def reference_emotion_train(options: dict[str, Any]) -> dict[str, Any]:
  import torch

  from benchmarks import torch_reference as ref

  device = _torch_device()
  model = ref.EmotionResNet18().to(device)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
  if options["model_only"]:
    size, batch = options["size"], options["batch_size"]
    generator = torch.Generator().manual_seed(0)
    ready = [
      (
        torch.randn(batch, 3, size, size, generator=generator).to(device),
        torch.randint(0, 7, (batch,), generator=generator).to(device),
      )
      for _ in range(8)
    ]
    batches, loader = itertools.cycle(ready), None
  else:
    images, labels = _emotion_images(NUM_TRAIN_IMAGES)
    loader = ref.emotion_loader(
      images[..., 0], labels, options["size"], options["batch_size"], options["workers"]
    )
    batches = ref.forever(loader)
  seconds = ref.time_training(
    model,
    optimizer,
    loss_fn,
    batches,
    options["warmup_steps"],
    options["timed_steps"],
    device,
  )
  del batches, loader  # ends the workers, so that their peak RSS is counted
  return {
    "images_per_s": options["timed_steps"] * options["batch_size"] / seconds,
    "device": device.type,
    "gpu_peak_mib": _torch_gpu_peak_mib(),
    **_peak_memory(workers=True),
  }


def reference_emotion_input(options: dict[str, Any]) -> dict[str, Any]:
  from benchmarks import torch_reference as ref

  images, labels = _emotion_images(NUM_TRAIN_IMAGES)
  loader = ref.emotion_loader(
    images[..., 0], labels, options["size"], options["batch_size"], options["workers"]
  )
  iterator = iter(loader)
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  for _ in range(options["input_batches"]):
    try:
      next(iterator)
    except StopIteration:
      iterator = iter(loader)
      next(iterator)
  seconds = time.perf_counter() - start
  return {"images_per_s": options["input_batches"] * options["batch_size"] / seconds}


def reference_deepfake_train(options: dict[str, Any]) -> dict[str, Any]:
  import torch

  from benchmarks import torch_reference as ref

  device = _torch_device()
  frames, size, batch = options["frames"], options["size"], options["batch_size"]
  model = ref.DeepfakeDetector().to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 1.0], device=device))
  generator = torch.Generator().manual_seed(0)
  clips = torch.randint(0, 256, (64, frames, 3, size, size), dtype=torch.uint8, generator=generator)
  labels = torch.randint(0, 2, (64,), generator=generator)
  loader = torch.utils.data.DataLoader(
    ref.ClipDataset(clips, labels),
    batch_size=batch,
    shuffle=True,
    num_workers=options["workers"],
    drop_last=True,
    persistent_workers=options["workers"] > 0,
  )

  seconds = ref.time_training(
    model,
    optimizer,
    loss_fn,
    ref.forever(loader),
    options["warmup_steps"],
    options["timed_steps"],
    device,
  )
  del loader
  return {
    "clips_per_s": options["timed_steps"] * batch / seconds,
    "device": device.type,
    "gpu_peak_mib": _torch_gpu_peak_mib(),
    **_peak_memory(workers=True),
  }


def _exact_float32_matmuls() -> None:
  """GPUs multiply float32 in TF32 by default (~1e-3 relative error): turn that off."""
  import keras

  if keras.backend.backend() == "jax":
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
  elif keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)


def port_check(options: dict[str, Any]) -> dict[str, Any]:
  import torch

  from benchmarks import port_weights
  from benchmarks import torch_reference as ref
  from keras_models.resnet import build_resnet18

  _exact_float32_matmuls()
  torch.manual_seed(0)
  results = {}
  for size in (48, 96):
    for training in (False, True):
      dropout = 0.0 if training else 0.5
      source = ref.EmotionResNet18(dropout=dropout)
      port_weights.randomize_batch_norm(source)
      target = build_resnet18((size, size, 3), dropout=dropout, dtype="float32")
      port_weights.port_resnet18(source, target)
      images = np.random.default_rng(size).normal(size=(4, size, size, 3)).astype(np.float32)
      error = port_weights.max_logit_difference(source, target, images, training=training)
      results[f"{size}px_{'train' if training else 'eval'}_max_abs_logit_diff"] = error
  results["ok"] = all(v <= MAX_PORT_ERROR for k, v in results.items() if k.endswith("diff"))
  return results


# --- Driver -----------------------------------------------------------------


def _in_subprocess(function: Callable[[dict], dict], options: dict[str, Any]) -> dict[str, Any]:
  """Runs `function(options)` in a fresh process (own memory peak, own threads)."""
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
    return pool.submit(function, options).result()


def _median_of_runs(results: list[dict[str, Any]]) -> dict[str, Any]:
  """The first run's result with every throughput (`*_per_s`) the median over the runs."""
  merged = dict(results[0])
  if len(results) > 1:
    for key in [k for k in merged if k.endswith("_per_s")]:
      values = [result[key] for result in results]
      merged[key] = float(np.median(values))
      merged[f"{key}_runs"] = values
  return merged


def _ratio(a: float | None, b: float | None) -> float | None:
  return round(a / b, 2) if a and b else None


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
  widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
  return "\n".join(
    "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
    for row in [header, *rows]
  )


def main(argv: list[str]) -> None:
  del argv
  tf_environment.set_defaults(log_level="2")  # Before any measurement loads TensorFlow.
  base = {
    "batch_size": FLAGS.batch_size,
    "warmup_steps": FLAGS.warmup_steps,
    "timed_steps": FLAGS.timed_steps,
    "input_batches": FLAGS.input_batches,
    "workers": _workers(),
    "mixed_precision": FLAGS.mixed_precision,
    "jit_compile": FLAGS.jit_compile,
    "model_only": FLAGS.model_only,
  }
  report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "options": base}
  rows: list[tuple[str, str, str, str, str]] = []

  def run(name: str, function: Callable, options: dict[str, Any]) -> dict[str, Any]:
    results = []
    for attempt in range(FLAGS.repeat):
      logging.info("Measuring %s (run %d of %d) ...", name, attempt + 1, FLAGS.repeat)
      results.append(_in_subprocess(function, options))
    result = _median_of_runs(results)
    logging.info("%s: %s", name, result)
    report[name] = result
    return result

  if "port" in FLAGS.only:
    result = run("port", port_check, base)
    for key, value in result.items():
      if key != "ok":
        rows.append(("port", key, f"{value:.2e}", f"<= {MAX_PORT_ERROR:g}", ""))
  if "emotion" in FLAGS.only or "input" in FLAGS.only:
    for size in map(int, FLAGS.emotion_sizes):
      options = {**base, "size": size}
      if "emotion" in FLAGS.only:
        ours = run(f"emotion{size}_train_ours", ours_emotion_train, options)
        theirs = (
          run(f"emotion{size}_train_reference", reference_emotion_train, options)
          if FLAGS.reference
          else {}
        )
        rows.append(
          (
            f"emotion {size}px train",
            "images/s",
            f"{ours['images_per_s']:.1f}",
            f"{theirs.get('images_per_s', float('nan')):.1f}",
            str(_ratio(ours["images_per_s"], theirs.get("images_per_s"))),
          )
        )
        rows.append(
          (
            f"emotion {size}px train",
            "peak RSS MiB (+workers)",
            f"{ours['peak_rss_mib']:.0f} (+{ours['peak_worker_rss_mib']:.0f})",
            f"{theirs.get('peak_rss_mib', 0):.0f} (+{theirs.get('peak_worker_rss_mib', 0):.0f})",
            "",
          )
        )
        if ours.get("gpu_peak_mib") or theirs.get("gpu_peak_mib"):
          rows.append(
            (
              f"emotion {size}px train",
              "GPU peak MiB",
              str(ours.get("gpu_peak_mib")),
              str(theirs.get("gpu_peak_mib")),
              "",
            )
          )
      if "input" in FLAGS.only and not FLAGS.model_only:
        ours_in = run(f"emotion{size}_input_ours", ours_emotion_input, options)
        theirs_in = (
          run(f"emotion{size}_input_reference", reference_emotion_input, options)
          if FLAGS.reference
          else {"images_per_s": float("nan")}
        )
        rows.append(
          (
            f"emotion {size}px input only",
            "images/s",
            f"{ours_in['images_per_s']:.1f}",
            f"{theirs_in['images_per_s']:.1f}",
            str(_ratio(ours_in["images_per_s"], theirs_in["images_per_s"])),
          )
        )
        train = report.get(f"emotion{size}_train_ours", {}).get("images_per_s")
        if train:
          rows.append(
            (
              f"emotion {size}px input only",
              "x its own training speed",
              str(_ratio(ours_in["images_per_s"], train)),
              str(
                _ratio(
                  theirs_in["images_per_s"],
                  report.get(f"emotion{size}_train_reference", {}).get("images_per_s"),
                )
              ),
              "",
            )
          )
  deepfake_options = {
    **base,
    "frames": FLAGS.deepfake_frames,
    "size": FLAGS.deepfake_size,
    "batch_size": FLAGS.deepfake_batch,
  }
  deepfake_label = f"deepfake {FLAGS.deepfake_frames}x{FLAGS.deepfake_size}px train"
  if "deepfake" in FLAGS.only and not FLAGS.model_only:
    options = deepfake_options
    ours = run("deepfake_train_ours", ours_deepfake_train, options)
    theirs = (
      run("deepfake_train_reference", reference_deepfake_train, options)
      if FLAGS.reference
      else {"clips_per_s": float("nan"), "peak_rss_mib": 0, "peak_worker_rss_mib": 0}
    )
    label = deepfake_label
    rows.append(
      (
        label,
        "clips/s",
        f"{ours['clips_per_s']:.2f}",
        f"{theirs['clips_per_s']:.2f}",
        str(_ratio(ours["clips_per_s"], theirs["clips_per_s"])),
      )
    )
    rows.append(
      (
        label,
        "peak RSS MiB (+workers)",
        f"{ours['peak_rss_mib']:.0f} (+{ours['peak_worker_rss_mib']:.0f})",
        f"{theirs['peak_rss_mib']:.0f} (+{theirs['peak_worker_rss_mib']:.0f})",
        "",
      )
    )

  xla_rows: list[tuple[str, ...]] = []
  if "xla" in FLAGS.only and not FLAGS.model_only:
    measured = [
      (f"emotion{size}", f"emotion {size}px train", ours_emotion_train, {**base, "size": size})
      for size in map(int, FLAGS.emotion_sizes)
    ]
    measured.append(("deepfake", deepfake_label, ours_deepfake_train, deepfake_options))
    for key, label, function, options in measured:
      off = run(f"{key}_xla_off", function, {**options, "jit_compile": "false"})
      on = run(f"{key}_xla_on", function, {**options, "jit_compile": "true"})
      unit = "images_per_s" if "images_per_s" in on else "clips_per_s"
      assert on["xla"] and not off["xla"], (on, off)
      xla_rows.append(
        (
          label,
          on["device"],
          on["policy"],
          unit.replace("_per_s", "/s"),
          f"{off[unit]:.2f}",
          f"{on[unit]:.2f}",
          str(_ratio(on[unit], off[unit])),
        )
      )

  if "storage" in FLAGS.only and not FLAGS.model_only:
    options = {
      **base,
      "frames": FLAGS.deepfake_frames,
      "size": FLAGS.deepfake_size,
      "storage_frames": FLAGS.storage_frames,
    }
    result = run("storage", ours_storage_read, options)
    base_rate = result["emotion_memory_images_per_s"]
    for name in ("memory", "shards_raw"):
      value = result[f"emotion_{name}_images_per_s"]
      ratio = f"x{value / base_rate:.2f} vs memory"
      rows.append((f"emotion input from {name}", "images/s", f"{value:.0f}", "", ratio))
    files = result["deepfake_frame_files_clips_per_s"]
    for key in ("frame_files", "shards_raw", "shards_png", "shards_jpeg"):
      value = result[f"deepfake_{key}_clips_per_s"]
      label = f"deepfake {FLAGS.deepfake_frames}x{FLAGS.deepfake_size}px input from {key}"
      rows.append((label, "clips/s", f"{value:.1f}", "", f"x{value / files:.2f} vs files"))

  tables = []
  if rows:
    header = ("measurement", "figure", "ours (Keras)", "reference (PyTorch)", "ours/reference")
    tables.append(_table(header, rows))
  if xla_rows:
    header = ("ours with XLA", "device", "policy", "figure", "XLA off", "XLA on", "on/off")
    tables.append(_table(header, xla_rows))
  suffix = f"\n(median of {FLAGS.repeat} runs each)" if FLAGS.repeat > 1 else ""
  print("\n\n".join(tables) + suffix, flush=True)  # noqa: T201 - the benchmark's output
  if FLAGS.output:
    with open(FLAGS.output, "w") as file:
      json.dump(report, file, indent=2)
  if "port" in report and not report["port"]["ok"]:
    raise SystemExit(f"Weight port check failed: logits differ by more than {MAX_PORT_ERROR}.")


if __name__ == "__main__":
  app.run(main)
