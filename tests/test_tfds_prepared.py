"""load_mnist(source="tfds") on a genuine tfds-prepared copy of MNIST gives the canonical arrays.

Synopsis:
  python experiments/tfds_prepared_copy.py      # prepares a copy offline, then runs this test
  JAXMNIST_TFDS_DATA_DIR=DIR python -m pytest tests/test_tfds_prepared.py

Preparing a copy needs TensorFlow (a 1.8 GB venv and a few minutes), so this test runs only where
JAXMNIST_TFDS_DATA_DIR names a folder that holds one (tfds's data_dir, with mnist/3.0.1 inside).
"""

import hashlib
import os

import numpy as np
import pytest

from jaxmnist import data, idx
from jaxmnist.errors import DataError

PREPARED_ENV_VAR = "JAXMNIST_TFDS_DATA_DIR"


@pytest.fixture
def prepared_dir():
  folder = os.environ.get(PREPARED_ENV_VAR)
  if not folder:
    pytest.skip(f"{PREPARED_ENV_VAR} names no tfds-prepared MNIST; "
                f"`python experiments/tfds_prepared_copy.py` prepares one and runs this test")
  return folder


def _canonical():
  """The reference, from sources that do not involve tfds."""
  try:
    return data.load_mnist("cache")
  except DataError:
    return data.load_mnist("pypi")


def test_tfds_prepared_copy_reads_as_canonical_mnist(prepared_dir, monkeypatch, tmp_path):
  pytest.importorskip("array_record")
  want = _canonical()
  monkeypatch.setenv("TFDS_DATA_DIR", prepared_dir)
  got = data.load_mnist("tfds", cache_dir=tmp_path / "cache")
  assert got.source.startswith("tfds mnist") and got.verified
  for field in ("train_images", "train_labels", "test_images", "test_labels"):
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
  # Written back as IDX, the arrays are the published files bit for bit (load_mnist checked the
  # bytes it built; this checks the arrays it returned).
  for name, array in (("train-images-idx3-ubyte", got.train_images[..., 0]),
                      ("train-labels-idx1-ubyte", got.train_labels.astype(np.uint8)),
                      ("t10k-images-idx3-ubyte", got.test_images[..., 0]),
                      ("t10k-labels-idx1-ubyte", got.test_labels.astype(np.uint8))):
    assert hashlib.sha256(idx.encode_idx(array)).hexdigest() == idx.CANONICAL_FILES[name].sha256, name
