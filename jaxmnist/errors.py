"""Errors a user can act on; the CLI prints them as one paragraph, without a traceback (exit_with_message)."""

import os
import re
import sys


class UserError(Exception):
  """Bad input (a flag, a path, a file): the CLI prints the message and exits with code 2."""

  exit_code = 2


class DataError(UserError):
  """MNIST could not be read or failed verification."""


class TrainingDiverged(Exception):
  """The loss became NaN or inf; the CLI prints the message and exits with code 3."""

  exit_code = 3


class Interrupted(Exception):
  """Ctrl-C stopped training after a checkpoint was saved; the CLI exits with code 130 (as SIGINT)."""

  exit_code = 130


class WriteFailed(Exception):
  """A run's files could not be written (full disk, read-only folder, quota); its message says what is kept."""

  exit_code = 4


def first_line(error: BaseException, limit: int | None = None) -> str:
  """The first line of an error's message (tfds's and orbax's can run to pages), else the error's type."""
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


def why_not_written(error: BaseException) -> str:
  """A person's words for why a write failed: the OS's reason and the file, or the first line of orbax's."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror + (f" ({error.filename})" if error.filename else "")
  line = first_line(error.__cause__ if error.__cause__ is not None else error)
  # tensorstore (under orbax) names the OS's error code: "... File too large [os_error_code='27']".
  if code := re.search(r"os_error_code='(\d+)'", line):
    return f"{os.strerror(int(code.group(1)))} (while writing {error})"
  if "RESOURCE_EXHAUSTED" in line:  # what tensorstore says for a full disk or a quota
    return f"the disk or the quota is full (while writing {error})"
  return line[:240]


def exit_with_message(command) -> None:
  """Runs a command; a user's mistake, a divergence, an interrupt or a failed write: one paragraph, an exit code."""
  try:
    command()
  except (UserError, TrainingDiverged, Interrupted, WriteFailed) as e:
    print(f"error: {e}" if not isinstance(e, Interrupted) else str(e), file=sys.stderr)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:
    print("interrupted: the metrics of the finished epochs and the last checkpoint are in the run directory.",
          file=sys.stderr)
    sys.exit(130)
