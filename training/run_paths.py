"""Where a run writes its outputs: the one place that names them."""

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
  def tensorboard(self) -> str:
    return self._path("tensorboard")

  @property
  def tensorboard_images(self) -> str:
    """The config text, augmented samples and validation figures (a TensorBoard run)."""
    return self._path("tensorboard", "images")

  @property
  def test_report(self) -> str:
    return self._path("test_report.json")

  @property
  def export_base(self) -> str:
    """TF Serving's `model_base_path`: versions live in numbered subfolders."""
    return self._path("export")

  def export(self, version: int) -> str:
    return self._path("export", str(version))
