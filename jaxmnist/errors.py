"""Errors a user can act on; the CLI prints them as one paragraph, without a traceback."""


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
