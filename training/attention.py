"""Attention snapshots of the deepfake detector: PNGs and TensorBoard images at each validation."""

from __future__ import annotations

from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

from common import io_utils
from keras_models import deepfake as deepfake_model
from training import callbacks as callbacks_lib
from training import summaries, weight_averaging
from training.run_paths import RunPaths


def overlay_attention(clip: np.ndarray, maps: np.ndarray, min_side: int = 128) -> np.ndarray:
  """Frames side by side, each blended with its attention map (JET colours).

  Args:
    clip: uint8 `[t, s, s, 3]` RGB.
    maps: float `[t, h, w]` in 0-1.
    min_side: frames smaller than this are enlarged to it, to be legible.

  Returns:
    uint8 RGB `[2 * side, t * side, 3]`: the frames above, the overlays below.
  """
  side = max(clip.shape[1], min_side)
  frames, overlays = [], []
  for frame, attention in zip(clip, maps, strict=True):
    frame = cv2.resize(frame, (side, side), interpolation=cv2.INTER_NEAREST)
    heat = cv2.resize(attention.astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    heat = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)
    frames.append(frame)
    overlays.append(cv2.addWeighted(frame, 0.55, cv2.cvtColor(heat, cv2.COLOR_BGR2RGB), 0.45, 0))
  return np.concatenate([np.concatenate(frames, 1), np.concatenate(overlays, 1)], 0)


class AttentionSnapshots(keras.callbacks.Callback):
  """At each validation, draws the attention of a fixed real and a fixed fake clip.

  Writes `paths.attention_png(iteration)` (this process's run directory: a
  worker of a multi-worker run writes under its own; real on top, fake below: frames,
  then overlays, with the model's probability of fake in the TensorBoard
  description) and the same images to TensorBoard.
  """

  def __init__(self, clips: np.ndarray, labels: list[str], paths: RunPaths):
    super().__init__()
    self.clips = clips
    self.labels = labels
    self.paths = paths
    self.writer = tf.summary.create_file_writer(paths.tensorboard_attention)
    self._explainer: keras.Model | None = None

  def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    if self._explainer is None:
      self._explainer = deepfake_model.build_explainer(self.model)
    with weight_averaging.averaged_weights(self.model):  # The weights validated.
      outputs = self._explainer(self.clips, training=False)
    maps = keras.ops.convert_to_numpy(outputs["spatial_attention"])
    fake_probability = keras.ops.convert_to_numpy(outputs["probabilities"])[:, 1]
    panels = [overlay_attention(clip, m) for clip, m in zip(self.clips, maps, strict=True)]
    iteration = callbacks_lib.current_iteration(self.model)
    path = self.paths.attention_png(iteration)
    image = np.concatenate(panels, 0)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if ok:
      io_utils.write_bytes(path, encoded.tobytes())
    with summaries.recording(self.writer):
      for label, panel, probability in zip(self.labels, panels, fake_probability, strict=True):
        tf.summary.image(
          f"attention/{label}",
          panel[None],
          step=iteration,
          description=f"{label} clip; model's probability of fake {probability:.3f}",
        )
    self.writer.flush()
