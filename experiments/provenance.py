"""Where a result was measured, for the results that experiments write and commit.

Synopsis (from a script that has the repository's root on sys.path):
  from experiments import provenance
  f"CPU {provenance.cpu_name()}"              # the processor's model name, for the hardware line
  provenance.portable(mnist.source)           # this machine's cache and home written as $JAXMNIST_CACHE_DIR and ~
"""

import os
import platform
from pathlib import Path


def portable(text: str) -> str:
  """`text` with this machine's cache and home folders written as $JAXMNIST_CACHE_DIR and ~, for results that
  are committed and read elsewhere."""
  cache = os.environ.get("JAXMNIST_CACHE_DIR")
  if cache:
    text = text.replace(str(Path(cache).expanduser()), "$JAXMNIST_CACHE_DIR")
  return text.replace(str(Path.home()), "~")


def cpu_name() -> str:
  """The processor's model name (Linux), else the machine type."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.machine()
