"""The IDX reader and the canonical checksum check."""

import hashlib

import numpy as np
import pytest

from jaxmnist import idx
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


def test_canonical_table_is_consistent():
  for name, f in idx.CANONICAL_FILES.items():
    assert f.name == name and len(f.sha256) == 64 and len(f.md5) == 32
  assert hashlib.sha256(b"").hexdigest() not in {f.sha256 for f in idx.CANONICAL_FILES.values()}
