"""A run's newest checkpoint as a compiled-ready forward pass, cached beside the run and read with jax alone.

Synopsis:
  cached = inference.read(run_dir)        # None: no cache yet, or stale, or damaged
  probabilities_NxC, agreeing_N = cached.outputs(images_NxHxWxC)    # agreeing_N: None for one model
  key = inference.checkpoint_key(run_dir)  # taken before the checkpoint is restored (through flax)
  inference.write(run_dir, key, partial(outputs_of, host_variables), epoch)   # the next call is quick

`jaxmnist predict` restores a checkpoint through flax, optax and orbax, whose imports alone take longer
than the whole answer otherwise does. So the first predict of a checkpoint also writes RUN_DIR/INFERENCE_CACHE:
its eval-mode outputs function (the model's flax apply, the variables baked in, the batch size symbolic)
as a `jax.export` artifact, lowered for this machine's platform only, under a header that names the
checkpoint it came from. Later calls deserialize and run it with jax alone.

The header's key is the newest complete checkpoint (its epoch, its folder's inode and change time, which
orbax's rename into place sets, and the size and modification time of each of its files, so that a new,
rewritten or damaged checkpoint has another key), a digest of config.json, the jax version and the
platform. When any of them differs, or the payload's sha256 does not match, the cache
is not used, and predict restores the checkpoint again and writes a new one. Nothing here imports flax:
the cache is written from a function that the caller built.
"""

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from jax import export

from jaxmnist import report
from jaxmnist.checkpoint import CHECKPOINT_DIR

INFERENCE_CACHE = "inference.cache"
FORMAT = 1
IMAGE_SHAPE = (28, 28, 1)

# images uint8 [N, H, W, C] -> (softmax probabilities [N, C], members agreeing [N] or None)
Outputs = Callable[[np.ndarray], tuple]


@dataclasses.dataclass(frozen=True)
class Cached:
  epoch: int  # the epoch of the checkpoint the outputs come from
  outputs: Outputs


def _newest_checkpoint(run_dir: Path) -> Path | None:
  """The folder of the newest complete checkpoint: orbax names each by its epoch once it is whole (a
  checkpoint being written has a temporary name)."""
  try:
    folders = [p for p in (run_dir / CHECKPOINT_DIR).iterdir() if p.name.isdigit() and p.is_dir()]
  except OSError:
    return None
  return max(folders, key=lambda p: int(p.name), default=None)


def _files_digest(folder: Path) -> str:
  """sha256 over the name, size and modification time of every file in a checkpoint: a file changed in
  place (a truncated array, a restored backup) changes it; reading a checkpoint changes nothing."""
  digest = hashlib.sha256()
  for path in sorted(folder.rglob("*")):
    stat = path.stat()
    digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()


def checkpoint_key(run_dir) -> dict | None:
  """What a cache must have been built from to answer for the run now; None when it has no checkpoint."""
  run_dir = Path(run_dir)
  newest = _newest_checkpoint(run_dir)
  if newest is None:
    return None
  try:
    folder, files, config = newest.stat(), _files_digest(newest), (run_dir / "config.json").read_bytes()
  except OSError:  # it vanished meanwhile (an old checkpoint rotated out), or cannot be read
    return None
  return {"format": FORMAT, "epoch": int(newest.name), "checkpoint": [folder.st_ino, folder.st_ctime_ns],
          "checkpoint_files": files, "config_sha256": hashlib.sha256(config).hexdigest(),
          "jax": jax.__version__, "platform": export.default_export_platform()}


def read(run_dir) -> Cached | None:
  """The cached outputs of the run's newest checkpoint; None when there is no cache that fits it intact."""
  path = Path(run_dir) / INFERENCE_CACHE
  key = checkpoint_key(run_dir)
  try:
    blob = path.read_bytes()
  except OSError:
    return None
  header_line, _, payload = blob.partition(b"\n")
  try:
    header = json.loads(header_line)
    if key is None or header["key"] != key or header["sha256"] != hashlib.sha256(payload).hexdigest():
      return None
    exported = export.deserialize(bytearray(payload))
    epoch = int(header["epoch"])
  except (ValueError, KeyError, TypeError, ImportError):  # damaged, another format, or no flatbuffers
    return None
  return Cached(epoch=epoch, outputs=lambda images: jax.device_get(exported.call(np.asarray(images, np.uint8))))


def write(run_dir, key: dict | None, outputs_of: Outputs, epoch: int) -> bool:
  """Exports `outputs_of` (images -> outputs, the variables closed over as host arrays) and writes the
  cache under `key`, atomically; False where it cannot be written (a read-only run, a full disk, no
  flatbuffers), which only means that the next call restores the checkpoint again."""
  if key is None:
    return False
  batch, = export.symbolic_shape("b")
  images_spec = jax.ShapeDtypeStruct((batch, *IMAGE_SHAPE), np.uint8)
  try:
    exported = export.export(jax.jit(outputs_of), platforms=(key["platform"],))(images_spec)
    payload = bytes(exported.serialize())
  except Exception:  # pylint: disable=broad-except
    # No flatbuffers (jax.export serializes with it; jax does not install it), or a model an experiment
    # added that cannot be lowered with a symbolic batch (every built-in one can): the answer is computed
    # anyway, only not cached.
    return False
  header = {"key": key, "epoch": epoch, "sha256": hashlib.sha256(payload).hexdigest()}
  blob = json.dumps(header).encode() + b"\n" + payload
  try:
    # A name of this process's own for the partial file: two predicts at once must not write into one.
    report.write_replacing(Path(run_dir) / INFERENCE_CACHE, lambda partial: partial.write_bytes(blob),
                           suffix=f".{os.getpid()}")
  except OSError:
    return False
  return True
