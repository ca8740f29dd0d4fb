"""The config blocks both tasks share, with one name for each idea.

`configs/emotion.py` and `configs/deepfake.py` start from `get_config()` and
add or override their own fields (the flax `configs/default.py` pattern). The
loop counts in optimizer steps; an epoch is one pass over the training data
in both tasks (the `epoch` column of metrics.csv).

Parsing a config imports no TensorFlow: configs import `common` only.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The shared fields with their defaults; a task config overrides them."""
  config = ml_collections.ConfigDict()
  config.task = ""  # Which task runs the config: emotion | deepfake.
  config.name = ""  # Default workdir is runs/<name>.
  config.seed = 0  # Seeds weights, data order, augmentation and splits.

  config.data = ml_collections.ConfigDict()
  # auto | a task's own readers | synthetic | tfrecord (shards written by
  # `python -m tools.write_tfrecords` at `dir`).
  config.data.source = "auto"
  config.data.dir = ""  # The data's directory; for source=tfrecord, the shards.
  # Model output order; stored with checkpoints and exports. A tuple, so the
  # command line can override it (ml_collections cannot override lists):
  # --config.data.class_names="('a', 'b', 'c')", or the flag once per name.
  config.data.class_names = ()
  config.data.image_size = 0  # Model input side; images and frames are resized to it.
  config.data.validation_fraction = 0.1  # Held out of train when there is no validation split.
  # Records in the training shuffle buffer when streaming TFRecord shards.
  config.data.shuffle_buffer = 10_000

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-3  # Peak (and initial) learning rate.

  config.schedule = ml_collections.ConfigDict()
  config.schedule.batch_size = 32  # Global batch size, over all replicas.
  # Linear warmup from 0, in epochs (passes over the training data), before
  # the cosine decay.
  config.schedule.warmup_epochs = 0.0
  # The lowest learning rate as a fraction of the peak: the cosine's floor
  # (and, with a plateau schedule, the rate at which training stops).
  config.schedule.min_lr_fraction = 0.0
  # Train scalars (TensorBoard) and checkpoints/last.keras every N steps;
  # 0: at each validation only.
  config.schedule.log_every_steps = 0

  config.training = ml_collections.ConfigDict()
  # auto: mixed_bfloat16/mixed_float16 on a GPU, float32 on a CPU;
  # mixed_bfloat16_if_native: mixed_bfloat16 where the device multiplies
  # bfloat16 natively (GPUs of compute capability 8.0+, TPUs, CPUs with
  # AMX-BF16/AVX512-BF16), float32 elsewhere; or a Keras dtype policy name.
  config.training.mixed_precision = "auto"
  # XLA for the train and evaluation steps: auto (Keras' rule: on GPUs and
  # TPUs with one replica, not on CPUs, where it is slower), True (any device,
  # the CPU included) or False. A layer that XLA cannot compile is an error.
  config.training.jit_compile = "auto"
  # auto (all local GPUs when several), none, mirrored, multi_worker (TF_CONFIG)
  # or tpu; schedule.batch_size is the global batch over all replicas.
  config.training.distribution = "auto"
  # Deterministic TF ops (tf.config.experimental.enable_op_determinism): with
  # the same seed, reruns on the same machine give identical metrics; slower
  # on GPUs, where some kernels lose their fast non-deterministic paths, and on
  # CPUs, where train_main.py turns TensorFlow's oneDNN kernels off.
  config.training.deterministic = False
  config.training.steps_per_execution = 1  # Train steps per tf.function call.
  # Polyak averaging: the momentum of an exponential moving average of the
  # weights, updated every step (0: off). Validation, checkpoints, the test
  # report and the export use the average; training goes on with the weights.
  config.training.ema_momentum = 0.0

  config.logging = ml_collections.ConfigDict()
  # Progress bar: auto (bar on a terminal, a line per epoch otherwise), or the
  # Keras verbose levels 0, 1, 2.
  config.logging.verbose = "auto"

  config.export = ml_collections.ConfigDict()
  config.export.enabled = True  # SavedModel for TF Serving at DIR/export/<version>.
  config.export.version = 1
  # The weights the test report and the export use: best (checkpoints/best.keras,
  # the best validation of the task's monitored quantity) or final (the end of
  # training, saved as checkpoints/final.keras; after a schedule that decays to
  # zero, the converged weights, which a small validation split picks among
  # noisily).
  config.export.checkpoint = "best"
  return config
