"""The process's set-up before any device work: the compiled-program cache, and joining a multi-host job.

Synopsis (every command that compiles calls the first; `jaxmnist train` the second, before it builds its mesh):
  cache_dir = process.open_caches(args.cache_dir)   # the data's cache folder, and compiled programs under it
  process.maybe_initialize_distributed(args.distributed)
"""

import contextlib
import os
import signal
import threading
from pathlib import Path

import jax

from jaxmnist import data
from jaxmnist.errors import UserError

# Environment variables that launchers of several processes set; any of them means "initialise".
_MULTIPROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES")


def maybe_initialize_distributed(force: bool = False) -> None:
  """Joins a multi-host job (--distributed, or a launcher's variables) before anything touches a device: jax
  finds the cluster on Cloud TPU, SLURM and Open MPI, elsewhere from the JAX_* variables (docs/hardware.md)."""
  if not (force or any(os.environ.get(name) for name in _MULTIPROCESS_ENV)):
    return
  kwargs = {}
  for env_name, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    if value := os.environ.get(env_name):
      if not value.isdigit():
        raise UserError(f"{env_name}={value!r} is not a non-negative integer. Set it to the number of "
                        f"processes (JAX_NUM_PROCESSES) or this process's rank (JAX_PROCESS_ID).")
      kwargs[arg] = int(value)
  jax.distributed.initialize(**kwargs)


XLA_CACHE_LIMIT_ENV_VAR = "JAXMNIST_XLA_CACHE_MB"
JAX_CACHE_ENV_VAR = "JAX_COMPILATION_CACHE_DIR"  # jax's own setting, read by jax at import too
DEFAULT_XLA_CACHE_MB = 256  # one run's programs take 0.3 MB (`tiny`) to a few MB


def xla_cache_limit_bytes() -> int:
  """The compiled-program cache's cap: $JAXMNIST_XLA_CACHE_MB megabytes, or DEFAULT_XLA_CACHE_MB."""
  raw = os.environ.get(XLA_CACHE_LIMIT_ENV_VAR, "").strip() or str(DEFAULT_XLA_CACHE_MB)
  try:
    megabytes = float(raw)
  except ValueError:
    megabytes = -1.0
  if not megabytes >= 0:  # nan too
    raise UserError(f"${XLA_CACHE_LIMIT_ENV_VAR}={raw!r} is not a size in megabytes. Set it to a number "
                    f">= 0 (0 turns the compiled-program cache off), or unset it for {DEFAULT_XLA_CACHE_MB}.")
  return int(megabytes * 2**20)


def enable_compilation_cache(cache_dir: Path, limit_bytes: int) -> None:
  """Reuses compiled XLA programs across runs, in cache_dir/xla or jax's own $JAX_COMPILATION_CACHE_DIR where a
  user set it (one cache for several projects, or for a test session's processes). Past the limit, jax's LRU
  cache (it needs `filelock`) evicts the least recently used programs, so the folder never grows unbounded."""
  if limit_bytes == 0:
    return
  jax.config.update("jax_compilation_cache_dir", os.environ.get(JAX_CACHE_ENV_VAR) or str(cache_dir / "xla"))
  jax.config.update("jax_compilation_cache_max_size", limit_bytes)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def open_caches(cache_dir_flag: str | None = None) -> Path:
  """The data cache folder (--cache-dir, else the default), with the compiled-program cache opened in it."""
  cache_dir = data.cache_dir_from_flag(cache_dir_flag)
  enable_compilation_cache(cache_dir, xla_cache_limit_bytes())
  return cache_dir


@contextlib.contextmanager
def stop_after_epoch_on_ctrl_c(say):
  """Yields a dict whose "requested" the first Ctrl-C turns True (stop after this epoch and save); a second
  stops at once. Only the main thread can handle signals: elsewhere Ctrl-C keeps its default behaviour."""
  flag = {"requested": False}
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handler(signum, frame):
    del signum, frame
    if flag["requested"]:
      raise KeyboardInterrupt
    flag["requested"] = True
    say("\nCtrl-C: stopping after this epoch to save a checkpoint (Ctrl-C again stops at once).")

  previous = signal.signal(signal.SIGINT, handler)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGINT, previous)
