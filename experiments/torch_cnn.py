"""jaxmnist's `cnn` model in PyTorch, for the benchmark's CNN epoch comparison (same layers, same
batch, Adam; trained by torch_post.train_epoch_tuned). Used by experiments/bench.py."""

from torch import nn


def make_cnn() -> nn.Module:
  """conv3x3(16)-BN-ReLU-maxpool, conv3x3(32)-BN-ReLU-maxpool, dense 128, ReLU, dense 10."""
  return nn.Sequential(
      nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
