"""The learning-rate schedules both tasks use."""

from __future__ import annotations

import keras


def warmup_cosine(
  peak: float, total_steps: int, warmup_steps: int, min_lr_fraction: float
) -> keras.optimizers.schedules.LearningRateSchedule:
  """Linear warmup from 0 over `warmup_steps`, then cosine decay to `min_lr_fraction` x `peak`.

  Without warmup the decay starts at `peak`; it ends at `total_steps`.
  """
  return keras.optimizers.schedules.CosineDecay(
    initial_learning_rate=0.0 if warmup_steps else peak,
    decay_steps=max(1, total_steps - warmup_steps),
    alpha=min_lr_fraction,
    warmup_target=peak if warmup_steps else None,
    warmup_steps=warmup_steps,
  )
