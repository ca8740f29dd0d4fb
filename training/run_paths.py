"""Where a run writes its outputs: the one place that names them.

A `RunPaths` is rooted at the directory this process writes: the run
directory for the chief (and a single-process run), `DIR/workers/<task>/` for
the other workers of a multi-worker run (`distribution.output_dir`), so no
two processes ever write the same file, temporary names included.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class RunPaths:
  """Output paths under a run's working directory."""

  workdir: str

  def _path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  @property
  def config(self) -> str:
    return self._path("config.json")

  @property
  def metrics(self) -> str:
    return self._path("metrics.csv")

  @property
  def best_checkpoint(self) -> str:
    return self._path("checkpoints", "best.keras")

  @property
  def last_checkpoint(self) -> str:
    return self._path("checkpoints", "last.keras")

  @property
  def final_checkpoint(self) -> str:
    """The weights at the end of training (written when `export.checkpoint` is final)."""
    return self._path("checkpoints", "final.keras")

  @property
  def validation_checkpoint(self) -> str:
    """The checkpoint kept at each validation; `{iteration}` is filled in when saving."""
    return self._path("checkpoints", "it{iteration:06d}.keras")

  @property
  def tensorboard(self) -> str:
    return self._path("tensorboard")

  @property
  def tensorboard_images(self) -> str:
    """The config text, augmented samples and validation figures (a TensorBoard run)."""
    return self._path("tensorboard", "images")

  @property
  def tensorboard_attention(self) -> str:
    """The deepfake attention snapshots (a TensorBoard run)."""
    return self._path("tensorboard", "attention")

  def attention_png(self, iteration: int) -> str:
    """The deepfake attention snapshot of the validation at `iteration`."""
    return self._path("attention", f"it{iteration:06d}.png")

  @property
  def test_report(self) -> str:
    return self._path("test_report.json")

  @property
  def export_base(self) -> str:
    """TF Serving's `model_base_path`: versions live in numbered subfolders."""
    return self._path("export")

  def export(self, version: int) -> str:
    return self._path("export", str(version))
