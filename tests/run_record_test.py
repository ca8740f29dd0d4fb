"""The resume contract's record: which config changes a workdir accepts."""

import json

import pytest

from common.errors import ResumeError
from configs import emotion as emotion_config
from training import run_record
from training.run_paths import RunPaths


def _record(workdir, config, drop=()):
  """Writes `config` as a run's record, without the dotted fields in `drop`."""
  record = run_record.resolved(config)
  for field in drop:
    *parents, name = field.split(".")
    section = record
    for parent in parents:
      section = section[parent]
    del section[name]
  path = RunPaths(str(workdir)).config
  workdir.mkdir(exist_ok=True)
  with open(path, "w", encoding="utf-8") as file:
    json.dump(record, file)
  return path


def test_a_record_from_before_a_field_existed_resumes_with_its_old_value(tmp_path):
  config = emotion_config.get_config("tiny")
  _record(tmp_path, config, drop=list(run_record.ADDED_FIELDS))
  assert run_record.compare(config, str(tmp_path)) == []
  # The old value is what the record stands for: another one is refused.
  config.optimizer.name = "sgd"
  with pytest.raises(ResumeError, match='optimizer.name: run "adamw", now "sgd"'):
    run_record.compare(config, str(tmp_path))


def test_an_added_field_the_record_holds_is_compared_as_recorded(tmp_path):
  config = emotion_config.get_config("tiny")
  config.training.ema_momentum = 0.99
  _record(tmp_path, config)
  config.training.ema_momentum = 0.0  # the built-in value, but the run averaged
  with pytest.raises(ResumeError, match="training.ema_momentum: run 0.99, now 0.0"):
    run_record.compare(config, str(tmp_path))


def test_other_fields_missing_from_the_record_are_still_refused(tmp_path):
  config = emotion_config.get_config("tiny")
  _record(tmp_path, config, drop=["model.width"])
  with pytest.raises(ResumeError, match=r"model.width: run \(absent\), now 4"):
    run_record.compare(config, str(tmp_path))
