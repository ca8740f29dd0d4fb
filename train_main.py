r"""Trains a face-analysis model from a config file.

  python train_main.py --config=configs/emotion.py:quick
  python train_main.py --config=configs/emotion.py --workdir=runs/fer \
      --config.data.dir=/data/fer2013 --config.schedule.batch_size=64

Any config field can be overridden with --config.FIELD=VALUE (tuples as
`--config.augment.crop_area=0.5,1.0`); the config is locked, so a misspelt
field is an error. The workdir defaults to runs/<config.name>. Rerunning a
command resumes the run in its workdir, if the config still describes the
same run (`training/run_record.py`); `--recover` resumes past a damaged
`last.keras` or `metrics.csv`.

Bad input (a config value, the workdir, the data) is one line and exit
status 2 (`common/errors.py`); `--verbosity=1` shows its traceback.
"""

import os

from common import tf_environment

tf_environment.set_defaults()  # Before TensorFlow loads.

from absl import app, flags, logging
from ml_collections import config_flags

from common import errors
from configs import validation
from training import run_record

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file, optionally with a variant: configs/emotion.py:quick.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory for checkpoints, logs and exports (default runs/<config.name>)."
)
_RECOVER = flags.DEFINE_bool(
  "recover",
  False,
  "Resume past a damaged checkpoints/last.keras or metrics.csv: from the newest intact "
  "checkpoint, keeping the damaged files as *.damaged.",
)
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("runs", config.name)
  # Every check that needs no TensorFlow, before it loads and before anything is written.
  validation.validate(config)
  run_record.check_before_start(config, workdir, _RECOVER.value)
  if config.training.deterministic:
    tf_environment.turn_off_onednn()  # Before TensorFlow loads.
  # Imported here so that --help, flag and config errors answer without loading TensorFlow.
  from training import loop

  logging.info("Config %s, workdir %s", config.name, workdir)
  loop.train_and_evaluate(config, workdir, recover=_RECOVER.value)


if __name__ == "__main__":
  errors.run(main)
