"""Crash-safe writes: every output appears whole or not at all.

Each writer puts its bytes in a temporary file beside the target and renames
it over the target (`os.replace` is atomic on POSIX and Windows), so a crash
mid-write leaves the previous version intact instead of a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING, Any

from common import model_metadata
from common.errors import DataError

if TYPE_CHECKING:  # Writing files should not load TensorFlow.
  import keras
  import pandas as pd


def write_bytes(path: str, data: bytes) -> None:
  """Atomically writes `data` to `path`."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  temporary = f"{path}.tmp"
  with open(temporary, "wb") as file:
    file.write(data)
    file.flush()
    os.fsync(file.fileno())
  os.replace(temporary, path)


def write_text(path: str, text: str) -> None:
  """Atomically writes `text` to `path` (UTF-8)."""
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value: Any) -> None:
  """Atomically writes `value` as indented JSON."""
  write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def save_model(model: keras.Model, path: str, metadata: dict[str, Any] | None = None) -> None:
  """Atomically saves `model` (weights, optimizer state, config) as `.keras`.

  `metadata` (`common.model_metadata.describe`: task, class names) is stored
  inside the archive.
  """
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  temporary = f"{path[: -len('.keras')]}.tmp.keras"
  model.save(temporary)
  if metadata is not None:
    model_metadata.add_to_keras_archive(temporary, metadata)
  os.replace(temporary, path)


def replace_directory(source: str, target: str) -> None:
  """Moves the finished directory `source` to `target`, replacing it.

  The old `target` is moved aside first and deleted only after the new one is
  in place, so one of the two complete versions always exists.
  """
  old = f"{target}.old"
  if os.path.exists(old):
    shutil.rmtree(old)
  if os.path.exists(target):
    os.replace(target, old)
  os.replace(source, target)
  if os.path.exists(old):
    shutil.rmtree(old)


def read_csv_table(csv_path: str, expected: str) -> pd.DataFrame:
  """A CSV of strings; an empty, binary or malformed file is a DataError naming it.

  `expected` describes the columns, for the message (e.g. 'video,label[,group][,split]').
  """
  import pandas as pd

  try:
    return pd.read_csv(csv_path, dtype=str, keep_default_na=False)
  except pd.errors.EmptyDataError as error:
    raise DataError(
      f"{csv_path}: the file is empty; expected a header line {expected} and one row per entry."
    ) from error
  except (pd.errors.ParserError, UnicodeDecodeError) as error:
    raise DataError(
      f"{csv_path}: not a readable CSV file ({' '.join(str(error).split())}); expected the "
      f"columns {expected}."
    ) from error
