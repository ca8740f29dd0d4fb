r"""Trains a face-analysis model from a config file.

  python train_main.py --config=configs/emotion.py:quick
  python train_main.py --config=configs/emotion.py --workdir=runs/fer \
      --config.data.dir=/data/fer2013 --config.schedule.batch_size=64

Any config field can be overridden with --config.FIELD=VALUE; the config is
locked, so a misspelt field is an error. The workdir defaults to
runs/<config.name>. Rerunning a command resumes the run in its workdir.
"""

import os

# Keep TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) out of
# the training log; warnings and errors still show. Set before TF loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file, optionally with a variant: configs/emotion.py:quick.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory for checkpoints, logs and exports (default runs/<config.name>)."
)
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported here so that --help and flag errors answer without loading TensorFlow.
  from training import loop

  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("runs", config.name)
  logging.info("Config %s, workdir %s", config.name, workdir)
  loop.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main)
