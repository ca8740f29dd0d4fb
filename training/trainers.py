"""Dispatches a config to the trainer of its `task`."""

from __future__ import annotations

from typing import Any

import ml_collections


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the trainer named by `config.task`; returns its summary."""
  if config.task == "emotion":
    from training import emotion

    return emotion.train_and_evaluate(config, workdir)
  if config.task == "deepfake":
    from training import deepfake

    return deepfake.train_and_evaluate(config, workdir)
  raise ValueError(f"config.task={config.task!r}; expected 'emotion' or 'deepfake'.")
