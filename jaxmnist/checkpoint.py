"""Checkpoints of a run: the whole TrainState, the epoch and the metrics so far, saved with orbax.

Synopsis:
  saver = checkpoint.Saver(workdir / checkpoint.CHECKPOINT_DIR, keep=3)
  saver.save(epoch, state, rows)   # returns once the state is copied to the host; orbax writes it behind
  saver.close()                    # waits for the last write
  restored = checkpoint.restore_latest(workdir / checkpoint.CHECKPOINT_DIR, abstract_state)

What is saved is a host copy of the replicated state, so a checkpoint carries no device layout: it
restores onto any number of devices, on any backend, against an abstract target that carries the
current mesh's sharding (orbax's own advice; restoring a GPU layout on a CPU is the classic pitfall).
Each checkpoint also stores a sha256 of its arrays, so a damaged one is found on restore and the
previous one is used instead. Orbax writes each checkpoint into a temporary folder and renames it
when complete, so a process killed mid-save leaves the earlier checkpoints intact.
orbax is imported lazily: its import alone takes over half a second.
"""

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxmnist.errors import UserError

CHECKPOINT_DIR = "checkpoints"
# orbax writes each checkpoint under a name with this in it (then renames it): `2.orbax-checkpoint-tmp`, or
# `2.orbax-checkpoint-tmp-<n>` before orbax-checkpoint 0.11.20 dropped the number.
TMP_SUFFIX = ".orbax-checkpoint-tmp"
FORMAT_VERSION = 1


class SaveFailed(Exception):
  """A checkpoint could not be written (a full disk, a read-only folder, a quota); orbax's error is the cause."""


@dataclasses.dataclass(frozen=True)
class Restored:
  epoch: int  # the last finished epoch that the checkpoint holds
  state: Any  # a steps.TrainState, placed as the abstract target said
  rows: list  # metrics.csv rows of epochs 1..epoch
  data: dict  # what the run trained on: {"source": ..., "sha256": ...} (data.describe)
  skipped: tuple = ()  # "epoch N: why" for each newer checkpoint that was damaged and passed over


def _host_array(x) -> np.ndarray:
  if not isinstance(x, jax.Array):
    return np.asarray(x)
  if x.is_fully_replicated:  # one replica, from this process's devices: no transfer between hosts
    return np.asarray(x.addressable_shards[0].data)
  if x.is_fully_addressable:  # an ensemble's members spread over this host's devices
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))  # ... over several hosts' devices


def host_copy(state):
  """A numpy copy of the whole state, in every process: one replica of each replicated array, and every
  member of an ensemble whose members are spread over the devices."""
  return jax.tree.map(_host_array, state)


def state_digest(state) -> str:
  """sha256 over every array's dtype, shape and bytes, in tree order."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(state):
    leaf = np.ascontiguousarray(leaf)
    digest.update(f"{leaf.dtype}{leaf.shape}".encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()


def _not_from_orbax(record: logging.LogRecord) -> bool:
  return f"{os.sep}orbax{os.sep}" not in record.pathname


def _drop_abandoned_writes(default_hook):
  """An unraisable-exception hook that passes over one message: after a failed write (a full disk),
  tensorstore completes orbax's other pending writes into an asyncio loop that orbax has already closed,
  and Python would print each `RuntimeError: Event loop is closed` as a stray traceback."""
  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
      default_hook(unraisable)
  hook.jaxmnist_checkpoint = True
  return hook


def _ocp():
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  if not getattr(sys.unraisablehook, "jaxmnist_checkpoint", False):
    sys.unraisablehook = _drop_abandoned_writes(sys.unraisablehook)

  # orbax logs every save at INFO, and a failed write with its traceback at ERROR from its own thread;
  # jaxmnist reports each failure itself, once, as a paragraph (SaveFailed, or a checkpoint passed over).
  absl_logger = logging.getLogger("absl")
  if _not_from_orbax not in absl_logger.filters:
    absl_logger.addFilter(_not_from_orbax)
  return ocp


def _manager(directory: Path, keep: int | None = None, read_only: bool = False):
  ocp = _ocp()
  if not read_only:
    directory.mkdir(parents=True, exist_ok=True)  # orbax cannot create it with active_processes set
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=False, read_only=read_only, cleanup_tmp_directories=not read_only,
      # Only process 0 writes, from its host copy; the other processes of a multi-host job wait for nobody.
      multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}))
  return ocp.CheckpointManager(directory.absolute(), options=options)


class Saver:
  """Saves checkpoints in the background, keeping the newest `keep`; one per run, closed at its end.

  A write that fails, now or in the background, raises SaveFailed from the next call (save, wait or
  close); the checkpoints written before it stay complete.
  """

  def __init__(self, directory: Path, keep: int = 3):
    self._directory = Path(directory)
    self._writing = None  # the epoch whose checkpoint orbax may still be writing
    try:
      self._manager = _manager(self._directory, keep)
    except OSError as e:
      raise SaveFailed(f"cannot create {self._directory}") from e

  def save(self, epoch: int, state, rows: list[dict], data_info: dict) -> None:
    """Starts writing epoch `epoch`'s checkpoint; blocks only while the state is copied to the host."""
    ocp = _ocp()
    host_state = host_copy(state)
    # A copy: orbax serialises in the background, while training appends to `rows`.
    meta = {"format": FORMAT_VERSION, "epoch": epoch, "rows": list(rows), "data": dict(data_info),
            "state_sha256": state_digest(host_state)}
    self.wait()  # orbax waits for the previous write anyway; its failure is then named as its own
    with self._failures_raised(f"the checkpoint of epoch {epoch}"):
      self._manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                                        meta=ocp.args.JsonSave(meta)))
    self._writing = epoch

  def wait(self) -> None:
    """Returns once the checkpoint being written is complete."""
    with self._failures_raised(f"the checkpoint of epoch {self._writing}"):
      self._manager.wait_until_finished()

  def close(self) -> None:
    with self._failures_raised(f"the checkpoint of epoch {self._writing}"):
      try:
        self._manager.wait_until_finished()
      finally:
        self._manager.close()

  @contextlib.contextmanager
  def _failures_raised(self, what: str):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
      # A failed save leaves orbax's temporary folder half-written; the complete checkpoints stay.
      for unfinished in self._directory.glob(f"*{TMP_SUFFIX}*"):
        shutil.rmtree(unfinished, ignore_errors=True)
      raise SaveFailed(f"{what} in {self._directory}") from e


def saved_epochs(directory: Path) -> list[int]:
  """The epochs of complete checkpoints, oldest first (temporary folders of unfinished saves excluded)."""
  if not Path(directory).is_dir():
    return []
  manager = _manager(Path(directory), read_only=True)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def _restore_one(manager, epoch: int, abstract_state) -> Restored:
  ocp = _ocp()
  restored = manager.restore(epoch, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  meta, state = restored.meta, restored.state
  if meta.get("format") != FORMAT_VERSION or meta.get("epoch") != epoch or len(meta.get("rows", ())) != epoch:
    raise ValueError(f"its metadata is not a jaxmnist checkpoint of epoch {epoch}")
  if state_digest(host_copy(state)) != meta["state_sha256"]:
    raise ValueError("its arrays do not match the checksum saved with them")
  return Restored(epoch=epoch, state=state, rows=meta["rows"], data=meta["data"])


def restore_latest(directory: Path, abstract_state) -> Restored:
  """Restores the newest checkpoint that is intact, reporting the damaged ones it passes over.

  Args:
    directory: a run's checkpoint folder.
    abstract_state: a TrainState of jax.ShapeDtypeStruct, each with the sharding to restore onto.
  Raises:
    UserError: no checkpoint, or none intact.
  """
  directory = Path(directory)
  epochs = saved_epochs(directory)
  if not epochs:
    raise UserError(f"{directory} holds no complete checkpoint. A run saves one every "
                    f"--checkpoint-every epochs, at the end and on Ctrl-C; train again, or pick another run.")
  manager = _manager(directory, read_only=True)
  skipped = []
  try:
    for epoch in reversed(epochs):
      try:
        restored = _restore_one(manager, epoch, abstract_state)
      except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        skipped.append(f"epoch {epoch}: {first_line[:200]}")
        continue
      return dataclasses.replace(restored, skipped=tuple(skipped))
  finally:
    manager.close()
  raise UserError(f"every checkpoint in {directory} is damaged ({'; '.join(skipped)}). Train the run again.")


def describe(restored: Restored) -> str:
  """One line for the log: which checkpoint was used, and which damaged ones were passed over."""
  line = f"checkpoint of epoch {restored.epoch}"
  if restored.skipped:
    line += f" (passed over damaged newer checkpoints: {'; '.join(restored.skipped)})"
  return line
