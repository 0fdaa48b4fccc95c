"""The post's PyTorch program, written from the post, on jaxmnist's arrays and validation split.

Not part of the package (torch is an optional extra: `pip install -e '.[torch]'`). Used by
experiments/reproduce_post.py and experiments/bench.py. Two training loops:
- `train_epoch_post`: as the post wrote it: a DataLoader over a list of (x, y) pairs with a
  SubsetRandomSampler, nn.Linear layers, SGD, CrossEntropyLoss, and batch accuracy through sigmoid
  then argmax, averaged over batches (the post's `validate_epoch`).
- `train_epoch_tuned`: the same updates without per-sample collation: tensors indexed by a permutation.

Quick check (5 epochs of the linear model, a few seconds):
  python experiments/torch_post.py --model=linear --epochs=5
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, SubsetRandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jaxmnist import data  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.configs import PRESETS  # noqa: E402  pylint: disable=g-import-not-at-top


def make_post_model(name: str) -> nn.Module:
  """The post's three models, layer for layer."""
  if name == "linear":
    return nn.Linear(28 * 28, 10)
  if name == "mlp2":
    return nn.Sequential(nn.Linear(28 * 28, 30), nn.ReLU(), nn.Linear(30, 10))
  if name == "mlp3":
    return nn.Sequential(nn.Linear(28 * 28, 300), nn.ReLU(), nn.Linear(300, 50), nn.ReLU(), nn.Linear(50, 10))
  raise ValueError(f"no PyTorch model {name!r}")


def to_tensors(images: np.ndarray, labels: np.ndarray):
  """The post's `torch.stack(...).float()/255` then `.view(-1, 28*28)`, and flat int64 labels."""
  x = torch.from_numpy(images.reshape(len(images), 28 * 28).astype(np.float32)) / 255
  return x, torch.from_numpy(labels.astype(np.int64))


def post_loaders(x, y, train_indices, valid_indices, test_x, test_y, batch_size=256):
  """Appendix A of the post: DataLoaders over lists of (x, y) pairs with SubsetRandomSamplers."""
  dataset = list(zip(x, y))
  train_loader = DataLoader(dataset, batch_size=batch_size, sampler=SubsetRandomSampler(train_indices))
  valid_loader = DataLoader(dataset, batch_size=batch_size, sampler=SubsetRandomSampler(valid_indices))
  test_loader = DataLoader(list(zip(test_x, test_y)), batch_size=batch_size)
  return train_loader, valid_loader, test_loader


def batch_accuracy(xb, yb):
  preds = xb.sigmoid()  # as in the post; monotonic, so argmax is unchanged
  _, indices = torch.max(preds, 1)
  return (indices == yb).float().mean()


def validate_epoch(model, loader) -> float:
  """The post's validate_epoch: the mean of per-batch accuracies (without its rounding)."""
  with torch.no_grad():
    accs = [batch_accuracy(model(xb), yb) for xb, yb in loader]
  return torch.stack(accs).mean().item()


def count_accuracy(model, x, y) -> float:
  """Correct examples over all examples: the measure jaxmnist reports."""
  with torch.no_grad():
    return (model(x).argmax(1) == y).float().mean().item()


def train_epoch_post(model, loader, optimizer, loss_func) -> None:
  for xb, yb in loader:
    loss_func(model(xb), yb).backward()
    optimizer.step()
    optimizer.zero_grad()


def train_epoch_tuned(model, x, y, train_indices, optimizer, loss_func, batch_size=256) -> None:
  order = train_indices[torch.randperm(len(train_indices))]
  for start in range(0, len(order), batch_size):
    batch = order[start:start + batch_size]
    loss_func(model(x[batch]), y[batch]).backward()
    optimizer.step()
    optimizer.zero_grad()


def train_post(name: str, mnist: data.Mnist, epochs: int, seed: int, loop: str = "post",
               learning_rate: float | None = None, on_epoch=None) -> dict:
  """Trains the post's model `name` with the post's hyperparameters; returns per-epoch accuracies."""
  torch.manual_seed(seed)
  config = PRESETS[name]
  train_indices, valid_indices = data.split_train_valid(len(mnist.train_labels), config.valid_fraction, seed)
  x, y = to_tensors(mnist.train_images, mnist.train_labels)
  test_x, test_y = to_tensors(mnist.test_images, mnist.test_labels)
  train_indices, valid_indices = torch.from_numpy(train_indices).long(), torch.from_numpy(valid_indices).long()
  train_loader, valid_loader, _ = post_loaders(x, y, train_indices, valid_indices, test_x, test_y,
                                               config.batch_size)
  model = make_post_model(name)
  optimizer = torch.optim.SGD(model.parameters(), learning_rate or config.learning_rate)
  loss_func = nn.CrossEntropyLoss()
  valid_curve, started = [], time.perf_counter()
  for epoch in range(1, epochs + 1):
    if loop == "post":
      train_epoch_post(model, train_loader, optimizer, loss_func)
    else:
      train_epoch_tuned(model, x, y, train_indices, optimizer, loss_func, config.batch_size)
    valid_curve.append(count_accuracy(model, x[valid_indices], y[valid_indices]))
    if on_epoch:
      on_epoch(epoch, valid_curve[-1])
  return {
      "valid_curve": valid_curve,
      "valid_accuracy": valid_curve[-1],
      "valid_accuracy_post_style": validate_epoch(model, valid_loader),
      "test_accuracy": count_accuracy(model, test_x, test_y),
      "seconds": time.perf_counter() - started,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="linear", choices=["linear", "mlp2", "mlp3"])
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--loop", default="post", choices=["post", "tuned"])
  args = parser.parse_args()
  result = train_post(args.model, data.load_mnist(), args.epochs, args.seed, args.loop,
                      on_epoch=lambda e, acc: print(f"epoch {e}: validation accuracy {acc:.4f}"))
  print(f"PyTorch {args.model}, {args.epochs} epochs, seed {args.seed}: validation "
        f"{result['valid_accuracy']:.4f}, test {result['test_accuracy']:.4f}, {result['seconds']:.1f} s")


if __name__ == "__main__":
  main()
