"""Checkpoints of a run: the whole TrainState, the epoch and the metrics so far, saved with orbax.

Synopsis:
  saver = checkpoint.Saver(workdir / checkpoint.CHECKPOINT_DIR, keep=3)
  saver.save(epoch, state, rows, data_info)  # returns once the state is copied to the host; orbax writes it
  saver.close()                              # waits for the last write
  restored = checkpoint.restore_latest(workdir / checkpoint.CHECKPOINT_DIR, abstract_state)

A host copy of the state is saved, so it restores onto any devices and backend (an abstract target carries the
mesh's sharding); a sha256 of its arrays finds a damaged one on restore (the previous one is used). orbax, imported
lazily (half a second), renames each from a temporary folder when complete: a killed save keeps the earlier ones.
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

from jaxmnist.errors import UserError, first_line

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
  """A numpy copy of the whole state in every process: one replica of each replicated array, every member."""
  return jax.tree.map(_host_array, state)


def state_digest(state) -> str:
  """sha256 over every array's dtype, shape and bytes, in tree order."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(state):
    leaf = np.ascontiguousarray(leaf)
    digest.update(f"{leaf.dtype}{leaf.shape}".encode() + leaf.tobytes())
  return digest.hexdigest()


def _shown(record: logging.LogRecord) -> bool:
  """Whether a record is shown while a Saver is open: not orbax's (a failed write's traceback), nor asyncio's."""
  return f"{os.sep}orbax{os.sep}" not in record.pathname and record.name != "asyncio"


def _ocp():
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


class Saver:
  """Saves checkpoints in the background, keeping the newest `keep`; one per run, closed at its end.

  A failed write, now or in the background, raises SaveFailed from the next save or close (the earlier ones stay
  complete), which says it once: orbax's own report is hidden while the Saver is open, and after a failure for good,
  as tensorstore then completes the other writes into orbax's closed asyncio loop, each printing
  `RuntimeError: Event loop is closed`.
  """

  def __init__(self, directory: Path, keep: int = 3):
    self._directory = Path(directory)
    self._writing = None  # the epoch whose checkpoint orbax may still be writing
    ocp = _ocp()  # first: absl makes its "absl" logger when imported, and names the caller in its records
    self._default_hook = sys.unraisablehook
    sys.unraisablehook = self._drop_abandoned_writes
    for name in ("absl", "asyncio"):
      logging.getLogger(name).addFilter(_shown)
    try:
      self._directory.mkdir(parents=True, exist_ok=True)  # orbax cannot create it with active_processes set
    except OSError as e:
      raise SaveFailed(f"cannot create {self._directory}") from e
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=False, cleanup_tmp_directories=True,
        # Only process 0 writes, from its host copy; the other processes of a multi-host job wait for nobody.
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}))
    self._manager = ocp.CheckpointManager(self._directory.absolute(), options=options)

  def _drop_abandoned_writes(self, unraisable) -> None:
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      self._default_hook(unraisable)

  def _quiet_off(self) -> None:
    if sys.unraisablehook == self._drop_abandoned_writes:
      sys.unraisablehook = self._default_hook
    for name in ("absl", "asyncio"):
      logging.getLogger(name).removeFilter(_shown)

  def save(self, epoch: int, state, rows: list[dict], data_info: dict) -> None:
    """Starts writing epoch `epoch`'s checkpoint; blocks only while the state is copied to the host."""
    ocp = _ocp()
    host_state = host_copy(state)
    # A copy: orbax serialises in the background, while training appends to `rows`.
    meta = {"format": FORMAT_VERSION, "epoch": epoch, "rows": list(rows), "data": dict(data_info),
            "state_sha256": state_digest(host_state)}
    with self._failures_raised(f"the checkpoint of epoch {self._writing}"):  # orbax would wait for it anyway,
      self._manager.wait_until_finished()  # and its failure is then named as its own
    with self._failures_raised(f"the checkpoint of epoch {epoch}"):
      self._manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                                        meta=ocp.args.JsonSave(meta)))
    self._writing = epoch

  def close(self) -> None:
    with self._failures_raised(f"the checkpoint of epoch {self._writing}"):
      try:
        self._manager.wait_until_finished()
      finally:
        self._manager.close()
    self._quiet_off()  # only when every write succeeded

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
  return sorted(_ocp().utils.checkpoint_steps(directory)) if Path(directory).is_dir() else []


def _restore_one(directory: Path, epoch: int, abstract_state) -> Restored:
  # A Checkpointer, not a read-only CheckpointManager: that one warns on every use that it is read-only.
  ocp = _ocp()
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
    restored = checkpointer.restore(directory.absolute() / str(epoch), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  meta, state = restored.meta, restored.state
  if meta.get("format") != FORMAT_VERSION or meta.get("epoch") != epoch or len(meta.get("rows", ())) != epoch:
    raise ValueError(f"its metadata is not a jaxmnist checkpoint of epoch {epoch}")
  if state_digest(host_copy(state)) != meta["state_sha256"]:
    raise ValueError("its arrays do not match the checksum saved with them")
  return Restored(epoch=epoch, state=state, rows=meta["rows"], data=meta["data"])


def restore_latest(directory: Path, abstract_state) -> Restored:
  """Restores the newest intact checkpoint onto `abstract_state` (ShapeDtypeStructs with the shardings to restore
  onto), naming the damaged ones it passes over; UserError when none is intact."""
  directory = Path(directory)
  if not (epochs := saved_epochs(directory)):
    raise UserError(f"{directory} holds no complete checkpoint. A run saves one every "
                    f"--checkpoint-every epochs, at the end and on Ctrl-C; train again, or pick another run.")
  skipped = []
  for epoch in reversed(epochs):
    try:
      return dataclasses.replace(_restore_one(directory, epoch, abstract_state), skipped=tuple(skipped))
    except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
      skipped.append(f"epoch {epoch}: {first_line(e, 200)}")
  raise UserError(f"every checkpoint in {directory} is damaged ({'; '.join(skipped)}). Train the run again.")


def describe(restored: Restored) -> str:
  """One line for the log: which checkpoint was used, and which damaged ones were passed over."""
  passed_over = f" (passed over damaged newer checkpoints: {'; '.join(restored.skipped)})" if restored.skipped else ""
  return f"checkpoint of epoch {restored.epoch}{passed_over}"
