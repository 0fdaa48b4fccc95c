"""The IDX reader and the canonical checksum check."""

import gzip
import hashlib

import numpy as np
import pytest

from jaxmnist import idx, sources
from jaxmnist.errors import DataError


def test_round_trip_images_and_labels():
  images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
  labels = np.array([7, 0, 9], np.uint8)
  np.testing.assert_array_equal(idx.decode_idx(idx.encode_idx(images)), images)
  np.testing.assert_array_equal(idx.decode_idx(idx.encode_idx(labels)), labels)


def test_header_is_big_endian_idx():
  raw = idx.encode_idx(np.zeros((2, 28, 28), np.uint8))
  assert raw[:16] == bytes.fromhex("00000803" "00000002" "0000001c" "0000001c")
  assert len(raw) == 16 + 2 * 28 * 28


def test_truncated_file_is_rejected_with_its_sizes():
  raw = idx.encode_idx(np.zeros((5, 28, 28), np.uint8))
  with pytest.raises(DataError, match=r"truncated or padded.*\(5, 28, 28\)"):
    idx.decode_idx(raw[:-10], "train-images-idx3-ubyte")


def test_truncated_header_and_wrong_magic_are_rejected():
  with pytest.raises(DataError, match="only 3 bytes"):
    idx.decode_idx(b"\x00\x00\x08", "x")
  with pytest.raises(DataError, match="magic number"):
    idx.decode_idx(b"\x1f\x8b" + bytes(30), "x")  # a gzip file passed as IDX
  with pytest.raises(DataError, match="header"):
    idx.decode_idx(bytes.fromhex("00000803") + bytes(6), "x")


def test_checksum_mismatch_is_rejected():
  expected = idx.CANONICAL_FILES["t10k-labels-idx1-ubyte"]
  wrong = idx.encode_idx(np.zeros(10000, np.uint8))  # right size, wrong content
  assert len(wrong) == expected.num_bytes
  with pytest.raises(DataError, match="fails its checksum"):
    idx.verify_canonical("t10k-labels-idx1-ubyte", wrong, "a test")
  with pytest.raises(DataError, match="has 10 bytes"):
    idx.verify_canonical("t10k-labels-idx1-ubyte", bytes(10), "a test")


# The original files' sizes and md5s as published with them (the project's data notes, "The canonical
# files"; the md5s are those that MNIST loaders have long pinned), copied here as the source that
# jaxmnist's own pins are checked against. jaxmnist itself never checks an md5.
PUBLISHED_MNIST = {
    "train-images-idx3-ubyte": (47040016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7840016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10008, "27ae3e4e09519cfbb04c329615203637"),
}


def _digests(raw: bytes) -> tuple[int, str, str]:
  return len(raw), hashlib.md5(raw).hexdigest(), hashlib.sha256(raw).hexdigest()


def _pinned(pin: idx.CanonicalFile) -> tuple[int, str, str]:
  return pin.num_bytes, pin.md5, pin.sha256


def test_mnist_pins_are_the_published_sizes_and_md5s():
  assert {name: (f.num_bytes, f.md5) for name, f in idx.CANONICAL_FILES.items()} == PUBLISHED_MNIST


def test_mnist_pins_are_the_digests_of_the_real_files(real_cache_dir):
  folder = real_cache_dir / sources.CACHE_SUBDIR  # the PyPI copy, rebuilt as the four IDX files
  for name, pin in idx.CANONICAL_FILES.items():
    raw = (folder / name).read_bytes()
    assert _digests(raw)[:2] == PUBLISHED_MNIST[name], f"{name} is not the published file"
    assert _digests(raw) == _pinned(pin), name


def test_fashion_pins_are_the_digests_of_the_real_files():
  if not sources.DEBIAN_FASHION_DIR.is_dir():
    pytest.skip(f"Debian's Fashion-MNIST is not installed: sudo apt-get install {sources.DEBIAN_FASHION_PACKAGE}")
  for name, pin in idx.FASHION_MNIST_FILES.items():
    raw = gzip.decompress((sources.DEBIAN_FASHION_DIR / f"{name}.gz").read_bytes())
    assert _digests(raw) == _pinned(pin), name
