"""tf.distribute for the trainers: which strategy, who writes, how data is sharded.

`config.training.distribution`:
  auto: MirroredStrategy over the local GPUs when there are several, else
    the default (one-device) strategy.
  none: the default strategy.
  mirrored: MirroredStrategy over the local GPUs, or over the local logical
    CPU devices on a machine without GPUs.
  multi_worker: MultiWorkerMirroredStrategy; the cluster comes from
    `TF_CONFIG`, as on Kubernetes, Vertex AI or a hand-started cluster.
  tpu: TPUStrategy on the TPU the environment names.

The batch size in the config is global: every step consumes
`batch_size` examples in total, split over the replicas. Each worker reads
its own 1/N of every dataset (`shard_by_data`). The chief writes the run
directory; the other workers write their copies under `workers/` in it, and
all of them resume from the chief's checkpoints (on a shared file system).

Keras 3's `fit` does not yet run under MultiWorkerMirroredStrategy
(keras-team/keras#20585): it reduces a batch and the per-step logs with
cross-worker calls that fail. `_patch_keras_for_multi_worker` replaces those
two private reductions, and is applied only for `multi_worker`.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf
from absl import logging

from common.errors import ConfigError

DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker", "tpu")


def _patch_keras_for_multi_worker() -> None:
  """Works around keras-team/keras#20585 (Keras 3.15) for MultiWorkerMirroredStrategy."""
  from keras.src import tree
  from keras.src.backend.tensorflow import trainer as tf_trainer

  if getattr(tf_trainer, "_face_analysis_patched", False):
    return
  reduce_per_replica = tf_trainer.reduce_per_replica

  def symbolic_build(self, iterator=None, data_batch=None):
    # Keras takes the cross-replica MEAN of the first batch only to learn its
    # structure and shapes; one local replica's batch serves as well.
    if iterator is not None:
      for _, _, batches in iterator:
        data_batch = tree.map_structure(
          lambda v: (
            self.distribute_strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues)
            else v
          ),
          next(batches),
        )
        break
    with self.distribute_strategy.scope():
      self._symbolic_build(data_batch=data_batch)

  def reduce_logs(values, strategy, reduction):
    # Keras reduces the scalar step logs with `axis=0`, which scalars lack.
    if tf_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
      return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
    return reduce_per_replica(values, strategy, reduction)

  tf_trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
  tf_trainer.reduce_per_replica = reduce_logs
  tf_trainer._face_analysis_patched = True


def make_strategy(name: str) -> tf.distribute.Strategy:
  """The strategy named by `config.training.distribution`."""
  if name not in DISTRIBUTIONS:
    raise ConfigError(
      f"config.training.distribution={name!r}; expected one of {list(DISTRIBUTIONS)}."
    )
  if name == "multi_worker":
    # Before anything lists logical devices: that starts TensorFlow's runtime,
    # after which the cluster's collective ops can no longer be configured.
    if "TF_CONFIG" not in os.environ:
      raise ConfigError(
        "config.training.distribution='multi_worker' needs the cluster in the TF_CONFIG "
        'environment variable, e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
        '"task": {"type": "worker", "index": 0}}.'
      )
    _patch_keras_for_multi_worker()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  elif name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
  elif name == "none" or (name == "auto" and len(tf.config.list_physical_devices("GPU")) < 2):
    return tf.distribute.get_strategy()
  else:
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
  logging.info(
    "Distribution %r: %s with %d replicas.",
    name,
    type(strategy).__name__,
    strategy.num_replicas_in_sync,
  )
  return strategy


def task(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
  """(task type, task index) of this process in a multi-worker cluster, else (None, 0)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return None, 0
  return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """The chief writes the run: task `chief`, or worker 0 when the cluster has no chief."""
  task_type, task_id = task(strategy)
  if task_type is None or task_type == "chief":
    return True
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


def output_dir(workdir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this process writes: the run directory for the chief, a sub-folder otherwise."""
  if is_chief(strategy):
    return workdir
  task_type, task_id = task(strategy)
  return os.path.join(workdir, "workers", f"{task_type}{task_id}")


def synchronize_batch_norm(model: keras.Model) -> int:
  """Makes every BatchNormalization use the statistics of the global batch.

  Each replica would otherwise normalise by its own slice of the batch and
  keep its own moving averages, so replicas would drift apart and small
  per-replica batches would give noisy statistics. Returns the layers changed.
  """
  changed = 0
  for layer in model._flatten_layers(include_self=False, recursive=True):
    if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
      layer.synchronized = True
      changed += 1
  return changed


def check_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> None:
  """The global batch must split evenly over the replicas (an empty or uneven
  per-replica batch breaks BatchNorm and the frame reshapes)."""
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise ConfigError(
      f"config.schedule.batch_size={batch_size} does not split over the {replicas} "
      f"replicas of {type(strategy).__name__}: the batch size is global, so use a "
      f"multiple of {replicas} (e.g. {replicas * max(1, round(batch_size / replicas))})."
    )


def evaluation_count(count: int, strategy: tf.distribute.Strategy, what: str) -> int:
  """How many evaluation examples to keep so every replica gets some of every batch.

  A last partial batch smaller than the number of replicas leaves some
  replica an empty batch, which BatchNorm and the frame reshapes cannot take;
  so up to `replicas - 1` examples are left out (with a warning).
  """
  replicas = strategy.num_replicas_in_sync
  keep = count - count % replicas
  if keep < count:
    logging.warning(
      "%s: evaluating %d of %d examples, a multiple of the %d replicas.",
      what,
      keep,
      count,
      replicas,
    )
  return keep


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Each worker keeps every N-th element.

  DATA rather than FILE sharding: most of our datasets come from memory, and
  shards rarely divide evenly over workers; with TFRecord shards each worker
  reads every shard and keeps its share.
  """
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return dataset.with_options(options)
