"""The IDX file format of the original MNIST files, and their canonical checksums.

Every MNIST source in jaxmnist ends as the four uncompressed IDX files, byte for byte, so one checksum
table decides whether data is real MNIST, wherever it came from.
"""

import dataclasses
import hashlib

import numpy as np

from jaxmnist.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


@dataclasses.dataclass(frozen=True)
class CanonicalFile:
  """Size and digests of one original, uncompressed MNIST file."""

  name: str
  num_bytes: int
  md5: str
  sha256: str


CANONICAL_FILES = {
    f.name: f
    for f in (
        CanonicalFile(
            "train-images-idx3-ubyte", 47040016, "6bbc9ace898e44ae57da46a324031adb",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        CanonicalFile(
            "train-labels-idx1-ubyte", 60008, "a25bea736e30d166cdddb491f175f624",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        CanonicalFile(
            "t10k-images-idx3-ubyte", 7840016, "2646ac647ad5339dbf082846283269ea",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        CanonicalFile(
            "t10k-labels-idx1-ubyte", 10008, "27ae3e4e09519cfbb04c329615203637",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    )
}
# (images file, labels file) per split.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def encode_idx(array: np.ndarray) -> bytes:
  """Serialises uint8 images [N,28,28] (or [N,28,28,1]) or labels [N] as IDX bytes."""
  array = np.asarray(array)
  if array.ndim == 4 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim not in (1, 3):
    raise ValueError(f"IDX holds labels [N] or images [N,H,W], got shape {array.shape}")
  magic = LABELS_MAGIC if array.ndim == 1 else IMAGES_MAGIC
  header = np.array([magic, *array.shape], dtype=">u4").tobytes()
  return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def decode_idx(raw: bytes, name: str = "IDX file") -> np.ndarray:
  """Parses IDX bytes into uint8 labels [N] or images [N,H,W], rejecting bad or truncated files."""
  if len(raw) < 8:
    raise DataError(f"{name} is not an IDX file: it has only {len(raw)} bytes.")
  magic = int.from_bytes(raw[:4], "big")
  if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
    raise DataError(
        f"{name} is not an MNIST IDX file: its magic number is {magic}, expected {IMAGES_MAGIC} "
        f"(images) or {LABELS_MAGIC} (labels). Check that the file is unzipped or gzipped IDX.")
  ndim = 1 if magic == LABELS_MAGIC else 3
  header_bytes = 4 + 4 * ndim
  if len(raw) < header_bytes:
    raise DataError(f"{name} is truncated: its header needs {header_bytes} bytes.")
  shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
  expected = header_bytes + int(np.prod(shape))
  if len(raw) != expected:
    raise DataError(
        f"{name} is truncated or padded: its header promises shape {shape} ({expected} bytes) but "
        f"the file has {len(raw)} bytes. Download it again.")
  return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape)


def verify_canonical(name: str, raw: bytes, source: str) -> None:
  """Raises DataError unless `raw` is exactly the original MNIST file `name`."""
  expected = CANONICAL_FILES[name]
  if len(raw) != expected.num_bytes:
    raise DataError(
        f"{name} from {source} has {len(raw)} bytes, but the original MNIST file has "
        f"{expected.num_bytes}; it is not MNIST or it is damaged.")
  digest = hashlib.sha256(raw).hexdigest()
  if digest != expected.sha256:
    raise DataError(
        f"{name} from {source} fails its checksum (sha256 {digest[:16]}..., expected "
        f"{expected.sha256[:16]}...): it is not the original MNIST file, or it is damaged.")
