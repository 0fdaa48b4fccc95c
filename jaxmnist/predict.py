"""`jaxmnist predict RUN_DIR IMAGE...`: the digit in each of your own images, with the top-3 probabilities.

Synopsis:
  jaxmnist predict runs/cnn-20261127-120000 my_three.png photo.jpg
  jaxmnist predict runs/cnn-20261127-120000 my_three.png --json

Each image goes through `preprocess.to_mnist` (MNIST's own preprocessing), then all of them through the run's newest
checkpoint in eval mode, in one call. An ensemble answers with its members' mean probabilities, and how many agree.

Restoring a checkpoint imports flax, optax and orbax, which takes longer than the rest of the answer. So
the first predict of a checkpoint also writes RUN_DIR/inference.cache, its forward pass as a `jax.export`
artifact, and later ones run that with jax alone. The cache's header names what it was built from (see
checkpoint_key); where any of it differs, or the payload's sha256 does not match, it is not used.
"""

import argparse
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import numpy as np
from jax import export

from jaxmnist import configs, datasets, ensemble, interpret, preprocess, process, report, runs
from jaxmnist.checkpoint import CHECKPOINT_DIR
from jaxmnist.configs import IMAGE_SHAPE

TOP_K = 3
INFERENCE_CACHE = "inference.cache"
CACHE_FORMAT = 1

# images uint8 [N, H, W, C] -> (softmax probabilities [N, C], members agreeing [N] or None)
Outputs = Callable[[np.ndarray], tuple]


class Cached(NamedTuple):
  epoch: int  # the epoch of the checkpoint the outputs come from
  outputs: Outputs


def checkpoint_key(run_dir, member: int | None = None) -> dict | None:
  """What a cache must have been built from to answer for the run (or its `member`) now; None: no checkpoint."""
  run_dir = Path(run_dir)
  try:
    # orbax names a checkpoint by its epoch once it is whole (one being written has a temporary name).
    newest = max((p for p in (run_dir / CHECKPOINT_DIR).iterdir() if p.name.isdigit() and p.is_dir()),
                 key=lambda p: int(p.name))
    # Each file's name, size and modification time: a file changed in place (a truncated array, a restored
    # backup) changes the key; reading a checkpoint changes nothing.
    stats = [(path.relative_to(newest), path.stat()) for path in sorted(newest.rglob("*"))]
    files = "".join(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n" for name, stat in stats)
    folder, config = newest.stat(), (run_dir / "config.json").read_bytes()
  except (OSError, ValueError):  # no checkpoint, or it vanished meanwhile (rotated out), or cannot be read
    return None
  return {"format": CACHE_FORMAT, "epoch": int(newest.name), "checkpoint": [folder.st_ino, folder.st_ctime_ns],
          "checkpoint_files": hashlib.sha256(files.encode()).hexdigest(),
          "config_sha256": hashlib.sha256(config).hexdigest(), "member": member, "jax": jax.__version__,
          "platform": export.default_export_platform()}


def read_cache(run_dir, member: int | None = None) -> Cached | None:
  """The cached outputs of the run's newest checkpoint; None when there is no cache that fits it intact."""
  key = checkpoint_key(run_dir, member)
  try:
    header_line, _, payload = (Path(run_dir) / INFERENCE_CACHE).read_bytes().partition(b"\n")
    header = json.loads(header_line)
    if key is None or header["key"] != key or header["sha256"] != hashlib.sha256(payload).hexdigest():
      return None
    exported, epoch = export.deserialize(bytearray(payload)), int(header["epoch"])
  except (OSError, ValueError, KeyError, TypeError, ImportError):  # none, damaged, other format, no flatbuffers
    return None
  return Cached(epoch, lambda images: jax.device_get(exported.call(np.asarray(images, np.uint8))))


def write_cache(run_dir, key: dict | None, outputs_of: Outputs, epoch: int) -> bool:
  """Exports `outputs_of` (the variables of `epoch`'s checkpoint closed over as host arrays) and writes the
  cache under `key`, atomically; False where it cannot (a read-only run, a full disk, no flatbuffers)."""
  if key is None:
    return False
  images_spec = jax.ShapeDtypeStruct((*export.symbolic_shape("b"), *IMAGE_SHAPE), np.uint8)
  try:
    payload = bytes(export.export(jax.jit(outputs_of), platforms=(key["platform"],))(images_spec).serialize())
  except Exception:  # pylint: disable=broad-except
    # No flatbuffers, or an experiment's model that a symbolic batch cannot lower: answered anyway, not cached.
    return False
  header = json.dumps({"key": key, "epoch": epoch, "sha256": hashlib.sha256(payload).hexdigest()}).encode() + b"\n"
  try:  # a partial file of this process's own: two predicts at once must not write into one
    report.write_replacing(Path(run_dir) / INFERENCE_CACHE, lambda partial: partial.write_bytes(header + payload),
                           suffix=f".{os.getpid()}")
  except OSError:
    return False
  return True


def _outputs_of(trained):
  """`(variables, images) -> (probabilities, members agreeing or None)`: what outputs_fn jits and the cache exports."""
  from jaxmnist import steps  # pylint: disable=g-import-not-at-top  (optax: only where a checkpoint is restored)

  def outputs_of(variables, images):
    inputs = steps.images_to_inputs(images)
    if not trained.num_members:
      return jax.nn.softmax(trained.apply(variables, inputs, train=False)), None
    member_logits = ensemble.member_logits(trained.model.apply, variables, inputs)
    logits = ensemble.combine(member_logits)  # = trained.apply(variables, inputs), members computed once
    return jax.nn.softmax(logits), ensemble.members_agreeing(member_logits, logits)
  return outputs_of


def outputs_fn(trained):
  """`Outputs` in eval mode, jitted once, so that only a new batch shape compiles again. For an ensemble the
  probabilities are the members' mean, and the second output counts the members whose top class is the ensemble's."""
  jitted = jax.jit(_outputs_of(trained))
  return lambda images_NxHxWxC: jax.device_get(jitted(trained.variables, images_NxHxWxC))


def newest_outputs(run_dir: Path, member: int | None = None) -> Cached:
  """The outputs of the run's newest intact checkpoint (of its `member`, runs.chosen_member): from the cache when
  it fits that checkpoint, else restored and then cached for the next call."""
  if (cached := read_cache(run_dir, member)) is not None:
    return cached
  from jaxmnist import train_state  # pylint: disable=g-import-not-at-top  (flax, optax, orbax: 1-2 s of imports)

  # The key before the restore: a checkpoint that lands meanwhile makes the cache stale, never wrong.
  key = checkpoint_key(run_dir, member)
  trained = train_state.load_trained(run_dir, member=member)
  host_variables = jax.device_get(trained.variables)  # baked in as constants, tied to no device
  write_cache(run_dir, key, functools.partial(_outputs_of(trained), host_variables), trained.epoch)
  return Cached(trained.epoch, outputs_fn(trained))


def describe(path: str, probabilities_C: np.ndarray, class_names=interpret.DIGITS, agreeing=None, members=0) -> dict:
  """One image's answer; an ensemble's also says how many of its members pick the same class."""
  top = np.argsort(-probabilities_C, kind="stable")[:TOP_K]
  agreement = {"members": members, "members_agreeing": int(agreeing)} if members else {}
  return {"image": path, "prediction": class_names[int(top[0])], "class_index": int(top[0]),
          "top": [{"class": class_names[int(i)], "probability": round(float(probabilities_C[i]), 6)} for i in top],
          "probabilities": [round(float(p), 6) for p in probabilities_C], **agreement}


def line(result: dict) -> str:
  top = ", ".join(f"{t['class']}: {t['probability']:.3f}" for t in result["top"])
  agree = f"; {result['members_agreeing']} of {result['members']} members agree" if "members" in result else ""
  return f"{result['image']}: {result['prediction']}   ({top}{agree})"


def main(args: argparse.Namespace) -> None:
  images = preprocess.to_mnist_batch(args.images)  # every bad image is named before the model loads
  process.open_caches()
  config = runs.read_config(args.run_dir)
  member = runs.chosen_member(args.run_dir, config, args.member)
  newest = newest_outputs(Path(args.run_dir), member)
  members = 0 if member is not None else configs.num_members(config)
  names = datasets.get(config.dataset).class_names
  probabilities_NxC, agreeing_N = newest.outputs(images)
  agreeing_N = [None] * len(images) if agreeing_N is None else agreeing_N
  results = [describe(path, p, names, agree, members)
             for path, p, agree in zip(args.images, probabilities_NxC, agreeing_N)]
  if args.json:
    print(json.dumps({"run_dir": str(args.run_dir), "model": config.model, "members": members, "member": member,
                      "dataset": config.dataset, "class_names": list(names),
                      "checkpoint_epoch": newest.epoch, "predictions": results}, indent=1))
  else:
    print("\n".join(line(r) for r in results))
