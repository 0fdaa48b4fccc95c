"""The fastest public MNIST recipe we know, in PyTorch as published (tuomaso/train_mnist_fast, its final
notebook: 99.04% +- 0.07 test over 30 seeds, one epoch, 0.76 s on a GTX 1660 Ti), on the CPU.

Kept as the original has it:
- the data preloaded once as normalised float tensors ((x/255 - 0.1307) / 0.3081), shuffled once, then
  read in order, 256 at a time (the last batch holds the remaining 96 of 60,000);
- Conv 1->24 5x5, max-pool 2, ReLU; Conv 24->32 3x3, max-pool 2, ReLU; Linear 800->256, ReLU, ->10;
  log-softmax and NLL loss; PyTorch's default initialisation;
- Adam(lr 0.01, betas (0.7, 0.9)) with OneCycleLR(max_lr 0.01, one epoch of steps, cycle_momentum=False);
- the test set in batches of 2,000.
What differs: the data comes from jaxmnist's verified cache (numpy only; jax is not imported), the
one shuffle is seeded, and `--valid-fraction` can hold out jaxmnist's seeded split instead of training
on all 60k.

The benchmark (experiments/bench_fast.py) runs this as a subprocess, so its whole-process time counts
the torch import too. Alone (a few seconds per seed):
  python experiments/torch_fast.py --seeds=0,1
Prints one JSON line per seed: test accuracy, training seconds, and the process's age at that moment.
"""

import time

PROCESS_START = time.perf_counter()  # as early as possible: whole-process time includes the imports

import argparse  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import json  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from pathlib import Path  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import torch.nn.functional as F  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from torch import nn  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from torch.optim.lr_scheduler import OneCycleLR  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jaxmnist import data  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

MEAN, STD = 0.1307, 0.3081


class Net(nn.Module):
  """The recipe's net, layer for layer."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 24, 5, 1)
    self.conv2 = nn.Conv2d(24, 32, 3, 1)
    self.fc1 = nn.Linear(800, 256)
    self.fc2 = nn.Linear(256, 10)

  def forward(self, x):
    x = F.relu(F.max_pool2d(self.conv1(x), 2))
    x = F.relu(F.max_pool2d(self.conv2(x), 2))
    x = F.relu(self.fc1(torch.flatten(x, 1)))
    return F.log_softmax(self.fc2(x), dim=1)


def to_inputs(images_NxHxWx1: np.ndarray) -> torch.Tensor:
  """uint8 [N, 28, 28, 1] to normalised float32 [N, 1, 28, 28], as torchvision's ToTensor and Normalize."""
  pixels = torch.from_numpy(images_NxHxWx1.reshape(-1, 1, 28, 28).astype(np.float32))
  return (pixels / 255.0 - MEAN) / STD


def train(model, images, labels, batch_size: int, lr: float) -> None:
  """One epoch, batches in order, as the original's `train`."""
  steps = (len(images) - 1) // batch_size + 1
  optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.7, 0.9))
  scheduler = OneCycleLR(optimizer, max_lr=lr, total_steps=steps, cycle_momentum=False)
  model.train()
  for i in range(steps):
    x, y = images[batch_size * i:batch_size * (i + 1)], labels[batch_size * i:batch_size * (i + 1)]
    optimizer.zero_grad()
    loss = F.nll_loss(model(x), y)
    loss.backward()
    optimizer.step()
    scheduler.step()


def test_accuracy(model, images, labels, batch_size: int = 2000) -> float:
  model.eval()
  correct = 0
  with torch.no_grad():
    for i in range(0, len(images), batch_size):
      correct += int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
  return correct / len(labels)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
  parser.add_argument("--valid-fraction", type=float, default=0.0,
                      help="0: all 60k, as the original; 0.2: jaxmnist's seeded 48k split")
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--lr", type=float, default=0.01)
  parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  mnist = data.load_mnist(source="cache")
  test_images, test_labels = to_inputs(mnist.test_images), torch.from_numpy(mnist.test_labels.astype(np.int64))
  for seed in (int(s) for s in args.seeds.split(",")):
    torch.manual_seed(seed)
    train_indices, _ = data.split_train_valid(len(mnist.train_labels), args.valid_fraction, seed)
    order = train_indices[torch.randperm(len(train_indices)).numpy()]  # the original's one shuffle
    images = to_inputs(mnist.train_images[order])
    labels = torch.from_numpy(mnist.train_labels[order].astype(np.int64))
    model = Net()
    start = time.perf_counter()
    train(model, images, labels, args.batch_size, args.lr)
    train_seconds = time.perf_counter() - start
    accuracy = test_accuracy(model, test_images, test_labels)
    print(json.dumps({"seed": seed, "test_accuracy": accuracy, "train_seconds": round(train_seconds, 3),
                      "process_seconds": round(time.perf_counter() - PROCESS_START, 3),
                      "num_train": len(order), "torch": torch.__version__, "threads": torch.get_num_threads()}),
          flush=True)


if __name__ == "__main__":
  main()
