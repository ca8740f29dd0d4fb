"""The error contract of every command: bad input is one line and exit status 2.

A user's mistake (a config value, a flag, a file, a workdir) raises a
`UserError`; every entry point (`train_main.py`, `tools/*.py`) starts through
`run(main)`, which prints such an error as ONE line naming the file, field or
value, what was expected and how to fix it, and exits with status 2, with no
traceback. Any other exception is a bug and raises as usual. absl's
`--verbosity=1` (or `-v=1`) shows the traceback of a user error too.

Nothing here imports TensorFlow: configs and the flag parsers use it before
TensorFlow loads.
"""

from __future__ import annotations

import errno
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

# The exit status of every input, config or environment error.
EXIT_USER_ERROR = 2


class UserError(Exception):
  """Bad input: the message says where, what was expected and how to fix it."""


class DataError(UserError, ValueError):
  """Input data is missing or malformed; the message says where and why."""


class ConfigError(UserError, ValueError):
  """A config value, flag value or relation between them is out of range."""


class OutputError(UserError):
  """An output cannot be written or replaced safely (it holds something else)."""


class OutputExistsError(OutputError, FileExistsError):
  """The output exists (a previous output of the same command) and --overwrite was not given."""


class ResumeError(UserError, ValueError):
  """The workdir holds a run that this command cannot resume as asked."""


# OSErrors that mean the environment refused (disk full, read-only, a file in
# the way), not a bug: reported as one line too.
_ENVIRONMENT_ERRNOS = {
  errno.ENOSPC: "the disk is full; free space or write elsewhere",
  errno.EDQUOT: "the disk quota is exceeded; free space or write elsewhere",
  errno.EACCES: "permission denied; make it writable or choose another path",
  errno.EPERM: "operation not permitted; make it writable or choose another path",
  errno.EROFS: "the file system is read-only; choose another path",
  errno.ENOTDIR: "a file stands where a folder is expected; choose another path",
  errno.EISDIR: "a folder stands where a file is expected; choose another path",
  errno.ENOENT: "no such file or folder; check the path",
  errno.EEXIST: "it already exists; choose another path",
}


def one_line(error: BaseException) -> str:
  """The message of `error` on one line (newlines and runs of spaces folded)."""
  if isinstance(error, OSError) and not isinstance(error, UserError) and error.errno:
    where = f" {error.filename!r}" if error.filename else ""
    hint = _ENVIRONMENT_ERRNOS.get(error.errno, "")
    text = f"{error.strerror or error}:{where}" + (f" ({hint})." if hint else ".")
    if not error.filename:  # e.g. FileExistsError('--output=... already exists').
      text = str(error)
  else:
    text = str(error)
    if isinstance(error, KeyError | AttributeError) and text.startswith(("'", '"')):
      text = text.strip("'\"").replace("\\'", "'").replace("\\n", " ")
  return " ".join(text.split())


# ml_collections defers a config file that cannot be loaded to the first use
# of the flag's value, as an OSError with this text.
_CONFIG_LOAD_FAILURE = "Configuration is not available because of an earlier failure to load"


def is_user_error(error: BaseException) -> bool:
  """Whether `error` is the user's (input, config, environment) rather than a bug."""
  from absl import app

  if isinstance(error, UserError | app.UsageError):
    return True
  if isinstance(error, OSError) and _CONFIG_LOAD_FAILURE in str(error):
    return True
  if isinstance(error, FileNotFoundError | FileExistsError | NotADirectoryError | PermissionError):
    return True  # A path the user gave (the project raises these naming the flag).
  return isinstance(error, OSError) and error.errno in _ENVIRONMENT_ERRNOS


def _config_load_message(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  files = [line for line in lines if line.endswith(".py") or ".py:" in line]
  return (
    f"--config: cannot load the config file {files[0] if files else ''} ({lines[-1]}); "
    "give an existing file, e.g. --config=configs/emotion.py:quick."
  )


def _debug_requested(argv: Sequence[str]) -> bool:
  """absl's --verbosity=N / -v=N with N >= 1, read from argv (flags may not be parsed)."""
  for arg in argv:
    match = re.fullmatch(r"--?(?:verbosity|v)=(-?\d+)", arg)
    if match and int(match.group(1)) >= 1:
      return True
  return False


def fail(message: str) -> NoReturn:
  """Prints `ERROR: message` as one line on stderr and exits with status 2.

  Written to stderr directly, as absl's own flag errors are: the failure may
  come before absl logging is set up, and a log prefix would hide the line.
  """
  sys.stderr.write(f"ERROR: {' '.join(message.split())}\n")
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


def _config_field_hint(error: BaseException, argv: Sequence[str]) -> str:
  """Names the override that holds an unknown config field, e.g. `--config.model.widht=3`."""
  match = re.search(r"'([A-Za-z_][\w]*)'", one_line(error))
  if not match:
    return ""
  for arg in argv:
    name = arg.split("=", 1)[0]
    if name.startswith("--") and "." in name and match.group(1) in name.split(".")[1:]:
      return f"{arg}: no such config field {match.group(1)!r}"
  return ""


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with every flag or config-file error as one line, exit 2.

  A misspelt `--config.FIELD` raises an AttributeError inside ml_collections,
  and a config file's own error (an unknown variant) a ValueError; both are
  the user's input, so they are reported like absl's flag errors.
  """
  from absl import flags

  try:
    return flags.FLAGS(list(argv))
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as error:
    if _debug_requested(argv):
      raise
    text = str(error)
    if "Traceback (most recent call last)" in text:  # A config file's own error, wrapped.
      head = text.split("Traceback (most recent call last)")[0]
      text = head + [line for line in text.splitlines() if line.strip()][-1].strip()
    text = (
      one_line(type(error)(text))
      if not isinstance(error, flags.Error)
      else one_line(Exception(text))
    )
    text = text.replace(" Pass --helpshort or --helpfull to see help on flags.", "")
    if not isinstance(error, flags.Error):
      hint = _config_field_hint(error, argv)
      text = re.sub(r"^'\w+' ", "", text)
      text = f"{hint}; {text}" if hint else text
    fail(
      f"Flags parsing error: {text} "
      "(--helpfull lists the flags; --verbosity=1 shows the traceback)."
    )


def guard(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
  """`main` with user errors printed as one line and exit status 2 (traceback with -v=1)."""

  def guarded(argv: list[str]) -> Any:
    try:
      return main(argv)
    except Exception as error:  # noqa: BLE001 - re-raised unless it is the user's.
      if not is_user_error(error) or _debug_requested(sys.argv):
        raise
      from absl import flags

      if flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].value >= 1:
        raise
      if _CONFIG_LOAD_FAILURE in str(error):
        fail(_config_load_message(error))
      fail(one_line(error))

  return guarded


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)` under the error contract; every entry point starts here."""
  from absl import app

  app.run(guard(main), flags_parser=parse_flags)
