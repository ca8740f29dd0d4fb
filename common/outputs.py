"""Safe outputs: a command replaces only what it wrote itself, never its input.

Every command that writes a folder (or a file) checks it here before reading
any data: the output may not be an input, lie inside one or hold one
(`--output` set to the data folder or a folder above it would otherwise be
deleted by `--overwrite`), and an existing output is replaced only when it
carries the command's own marker file (`manifest.json` of
`tools.write_tfrecords`, `preparation.json` of `tools.prepare_faces`...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from common.errors import OutputError, OutputExistsError


def _real(path: str) -> str:
  return os.path.realpath(os.path.abspath(path))


def _contains(folder: str, path: str) -> bool:
  """Whether `path` is `folder` or lies inside it."""
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_not_input(output: str, inputs: Iterable[str], flag: str = "--output") -> None:
  """Refuses an `output` that is an input, lies inside an input folder, or holds an input."""
  target = _real(output)
  for given in inputs:
    if not given or not os.path.lexists(given):
      continue
    source = _real(given)
    if _contains(target, source):
      raise OutputError(
        f"{flag}={output!r} is or holds the input {given!r}; writing there could delete or "
        f"mix with the input. Choose a {flag} outside the input."
      )
    if os.path.isdir(source) and _contains(source, target):
      raise OutputError(
        f"{flag}={output!r} lies inside the input folder {given!r}; the output would mix "
        f"with the input. Choose a {flag} outside it."
      )


def check_replaceable(
  output: str,
  tool: str,
  is_own: Callable[[str], bool],
  marker: str,
  overwrite: bool | None,
  flag: str = "--output",
) -> None:
  """Refuses to write over an existing `output` that `tool` did not write, or without --overwrite.

  Args:
    output: the output folder (or file).
    tool: the command's name, for the message.
    is_own: whether an existing `output` is a previous output of `tool` (it
      reads the marker).
    marker: what `is_own` looks for, for the message.
    overwrite: the command's --overwrite; None for a command that adds to or
      resumes its own previous output instead of replacing it.
  """
  if not os.path.lexists(output):
    return
  empty = os.path.isdir(output) and not os.listdir(output)
  if empty:
    return
  if not is_own(output):
    raise OutputError(
      f"{flag}={output!r} already exists and is not an output of {tool} (no {marker}); "
      f"it is left as it was. Choose a new {flag}, or move its contents away."
    )
  if overwrite is False:
    raise OutputExistsError(
      f"{flag}={output!r} already exists; pass --overwrite to replace it (an output of "
      f"{tool}, kept until the new one is complete), or choose a new {flag}."
    )
