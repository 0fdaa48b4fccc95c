"""The IDX file format of the original MNIST files, and the canonical checksums of MNIST and Fashion-MNIST: every
source ends as the four uncompressed IDX files, so one table per dataset decides whether data is the real thing.
"""

import dataclasses
import hashlib

import numpy as np

from jaxmnist.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


@dataclasses.dataclass(frozen=True)
class CanonicalFile:
  """Size and digests of one original, uncompressed IDX file."""

  name: str
  num_bytes: int
  md5: str
  sha256: str


def _by_name(*files: CanonicalFile) -> dict[str, CanonicalFile]:
  return {f.name: f for f in files}


CANONICAL_FILES = _by_name(
    CanonicalFile("train-images-idx3-ubyte", 47040016, "6bbc9ace898e44ae57da46a324031adb",
                  "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    CanonicalFile("train-labels-idx1-ubyte", 60008, "a25bea736e30d166cdddb491f175f624",
                  "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    CanonicalFile("t10k-images-idx3-ubyte", 7840016, "2646ac647ad5339dbf082846283269ea",
                  "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    CanonicalFile("t10k-labels-idx1-ubyte", 10008, "27ae3e4e09519cfbb04c329615203637",
                  "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"))
# Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): the same file names, sizes and IDX headers. Upstream publishes
# only its .gz md5s, and Debian recompressed them, so these pins are of the uncompressed files, as MNIST's are:
# computed on 2026-11-27 from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (bookworm). Cross-checked
# offline: sizes and headers as upstream's; the md5s equal the uncompressed ones public loaders pin beside
# upstream's .gz md5s (8d4fb7e6c68d591d4c3dfef9ec88bf0d: training images), the sha256s those of loaders of the .gz;
# 6,000 training and 1,000 test examples per class (arXiv:1708.07747); first training labels 9 0 0, last 3 0 5; a
# mean training pixel of 72.94035223214286, as printed for Keras's fashion_mnist.load_data(). tfds's copy: unchecked.
FASHION_MNIST_FILES = _by_name(
    CanonicalFile("train-images-idx3-ubyte", 47040016, "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                  "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    CanonicalFile("train-labels-idx1-ubyte", 60008, "9018921c3c673c538a1fc5bad174d6f9",
                  "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    CanonicalFile("t10k-images-idx3-ubyte", 7840016, "8181f5470baa50b63fa0f6fddb340f0a",
                  "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    CanonicalFile("t10k-labels-idx1-ubyte", 10008, "15d484375f8d13e6eb1aabb0c3f46965",
                  "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"))
SPLIT_FILES = {  # (images file, labels file) per split
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


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
    raise DataError(f"{name} is not an MNIST IDX file: its magic number is {magic}, expected {IMAGES_MAGIC} "
                    f"(images) or {LABELS_MAGIC} (labels). Check that the file is unzipped or gzipped IDX.")
  ndim = 1 if magic == LABELS_MAGIC else 3
  header_bytes = 4 + 4 * ndim
  if len(raw) < header_bytes:
    raise DataError(f"{name} is truncated: its header needs {header_bytes} bytes.")
  shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
  expected = header_bytes + int(np.prod(shape))
  if len(raw) != expected:
    raise DataError(f"{name} is truncated or padded: its header promises shape {shape} ({expected} bytes) but "
                    f"the file has {len(raw)} bytes. Download it again.")
  return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape)


def verify_canonical(name: str, raw: bytes, source: str, canonical: dict = CANONICAL_FILES,
                     title: str = "MNIST") -> None:
  """Raises DataError unless `raw` is exactly the original file `name` of `canonical` (MNIST's by default)."""
  expected = canonical[name]
  if len(raw) != expected.num_bytes:
    raise DataError(f"{name} from {source} has {len(raw)} bytes, but the original {title} file has "
                    f"{expected.num_bytes}; it is not {title} or it is damaged.")
  digest = hashlib.sha256(raw).hexdigest()
  if digest != expected.sha256:
    raise DataError(f"{name} from {source} fails its checksum (sha256 {digest[:16]}..., expected "
                    f"{expected.sha256[:16]}...): it is not the original {title} file, or it is damaged.")


def is_canonical(files: dict[str, bytes], canonical: dict) -> bool:
  """Whether `files` (name -> uncompressed bytes) are exactly the four files of `canonical`."""
  if set(files) != set(canonical) or any(len(files[name]) != f.num_bytes for name, f in canonical.items()):
    return False
  # Smallest first: another dataset's labels already differ, before 47 MB of images are hashed.
  return all(hashlib.sha256(raw).hexdigest() == canonical[name].sha256
             for name, raw in sorted(files.items(), key=lambda item: len(item[1])))
