"""Figures of runs and evaluations, as PNG bytes written whole or not at all.

Figures are built with `matplotlib.figure.Figure` directly, never pyplot, so
no display backend or global figure state is involved (safe on headless
machines and in tests), and rendered to bytes before an atomic write.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from common import io_utils

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def figure_to_png_bytes(figure: Figure, dpi: int = 120) -> bytes:
  """Renders `figure` as PNG bytes, so the file can be written atomically."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
  return buffer.getvalue()


def write_figure(path: str, figure: Figure) -> str:
  """Atomically writes `figure` as a PNG at `path`; returns `path`."""
  io_utils.write_bytes(path, figure_to_png_bytes(figure))
  return path


def confusion_matrix_figure(
  matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str
) -> Figure:
  """Counts and row-normalised (recall per true class) confusion matrices side by side."""
  counts = np.asarray(matrix, np.int64)
  support = counts.sum(axis=1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    normalised = np.where(support > 0, counts / np.maximum(support, 1), np.nan)
  side = max(4.0, 0.7 * len(class_names) + 1.5)
  figure = Figure(figsize=(2 * side + 1, side))
  figure.suptitle(title)
  panels = (
    (counts, "Counts", lambda v: f"{int(v)}", counts.max() or 1),
    (normalised, "Row-normalised (recall)", lambda v: f"{v:.2f}", 1.0),
  )
  for index, (values, name, text, top) in enumerate(panels):
    axes = figure.add_subplot(1, 2, index + 1)
    image = axes.imshow(values, cmap="Blues", vmin=0, vmax=top)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("Predicted")
    axes.set_ylabel("True")
    axes.set_title(name)
    for (row, column), value in np.ndenumerate(values):
      label = "-" if np.isnan(value) else text(value)
      colour = "white" if not np.isnan(value) and value > top / 2 else "black"
      axes.text(column, row, label, ha="center", va="center", color=colour, fontsize=8)
  figure.tight_layout()
  return figure
