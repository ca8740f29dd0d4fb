"""What a checkpoint or an export says about itself: its task and class names.

A `.keras` checkpoint carries `face_analysis.json` inside its zip archive
(Keras' loader reads only the entries it knows); a SavedModel export carries
it beside `saved_model.pb`; a `.tflite` file carries the same JSON as a
flatbuffer metadata entry (`inference.tflite`). Tools that label outputs read
the class names from here, so a model trained on other classes is labelled
with its own.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from typing import Any

METADATA_FILE = "face_analysis.json"


def describe(task: str, class_names: Sequence[str]) -> dict[str, Any]:
  """The metadata of a model of `task` with outputs `class_names`."""
  return {"task": task, "class_names": list(class_names)}


def add_to_keras_archive(path: str, metadata: dict[str, Any]) -> None:
  """Adds `metadata` to the `.keras` zip at `path` (before it is renamed into place)."""
  with zipfile.ZipFile(path, "a") as archive:
    archive.writestr(METADATA_FILE, json.dumps(metadata, indent=2) + "\n")


def write_to_directory(directory: str, metadata: dict[str, Any]) -> None:
  """Writes `metadata` into a SavedModel directory (before it is renamed into place)."""
  with open(os.path.join(directory, METADATA_FILE), "w") as file:
    file.write(json.dumps(metadata, indent=2) + "\n")


def read(path: str) -> dict[str, Any] | None:
  """The metadata of a `.keras` file or a SavedModel directory; None if it has none
  (written before class names were stored, or another format)."""
  try:
    if os.path.isdir(path):
      with open(os.path.join(path, METADATA_FILE)) as file:
        return json.load(file)
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as archive:
        if METADATA_FILE in archive.namelist():
          return json.loads(archive.read(METADATA_FILE))
  except (OSError, ValueError):
    return None
  return None


def class_names(path: str, default: Sequence[str] | None = None) -> list[str] | None:
  """The class names stored with the model at `path`, else `default`."""
  metadata = read(path)
  if metadata and metadata.get("class_names"):
    return list(metadata["class_names"])
  return list(default) if default is not None else None
