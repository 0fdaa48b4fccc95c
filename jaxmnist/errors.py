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
  """A run's files could not be written (a full disk, a read-only folder, a quota); exit code 4.

  The message says what was written, what is kept and how to continue.
  """

  exit_code = 4


def why_not_written(error: BaseException) -> str:
  """A person's words for why a write failed: the OS's reason and the file, or the first line of orbax's."""
  if isinstance(error, OSError) and error.strerror:
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror}{where}"
  cause = error.__cause__ if error.__cause__ is not None else error
  first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
  # tensorstore (under orbax) names the OS's error code: "... File too large [os_error_code='27']".
  code = re.search(r"os_error_code='(\d+)'", first_line)
  if code:
    return f"{os.strerror(int(code.group(1)))} (while writing {error})"
  if "RESOURCE_EXHAUSTED" in first_line:  # what tensorstore says for a full disk or a quota
    return f"the disk or the quota is full (while writing {error})"
  return first_line[:240]


def exit_with_message(command) -> None:
  """Runs a command; a user's mistake, a divergence, an interrupt or a failed write becomes one paragraph and an
  exit code."""
  try:
    command()
  except (UserError, TrainingDiverged, Interrupted, WriteFailed) as e:
    print(f"error: {e}" if not isinstance(e, Interrupted) else str(e), file=sys.stderr)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:
    print("interrupted: the metrics of the finished epochs and the last checkpoint are in the run directory.",
          file=sys.stderr)
    sys.exit(130)
