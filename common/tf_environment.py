"""TensorFlow's process settings, which count only if set before it loads.

Every entry point (`train_main.py`, the tools, the benchmarks, the tests)
calls `set_defaults()` before its first import of TensorFlow; a value the
user has already set in the environment is kept.
"""

from __future__ import annotations

import os

# TensorFlow's switch for its oneDNN CPU kernels, read once as it loads.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def set_defaults(log_level: str = "1") -> None:
  """Quiet C++ start-up logs and TensorFlow's oneDNN CPU kernels on every x86 CPU."""
  # Keep TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) out of
  # the logs; warnings and errors still show.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", log_level)
  # TensorFlow turns its oneDNN kernels on by itself only on CPUs with
  # AVX-512 VNNI/BF16 or AMX; elsewhere it runs its older Eigen kernels. On a
  # 2-core AMD EPYC with AVX2 only, oneDNN made the fer2013_cpu train step
  # 1.9x faster (93 -> 180 images/s, float32) and the deepfake one 1.2x.
  os.environ.setdefault(ONEDNN_VARIABLE, "1")


def turn_off_onednn() -> None:
  """TensorFlow's Eigen CPU kernels, for runs that must repeat bit for bit.

  TensorFlow runs a oneDNN kernel on one thread when the op happens to be
  called from a thread of its intra-op pool, and on all of them otherwise, so
  the order of a sum, and its last bits, depend on thread scheduling. With
  oneDNN on, 4 of 12 pairs of deterministic tiny emotion runs side by side
  on a 2-core AMD EPYC wrote different metrics.csv files; with it off, 0 of 22.
  """
  os.environ[ONEDNN_VARIABLE] = "0"


def onednn_enabled() -> bool:
  """Whether the loaded TensorFlow runs its oneDNN CPU kernels (loads TensorFlow)."""
  from tensorflow.python.util import _pywrap_util_port

  return bool(_pywrap_util_port.IsMklEnabled())
