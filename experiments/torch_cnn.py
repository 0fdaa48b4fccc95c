"""jaxmnist's `cnn` model in PyTorch, for the benchmark's CNN epoch comparison (same layers, same
batch, Adam, a tuned loop of tensors indexed by a permutation). Used by experiments/bench.py."""

import torch
from torch import nn


def make_cnn() -> nn.Module:
  """conv3x3(16)-BN-ReLU-maxpool, conv3x3(32)-BN-ReLU-maxpool, dense 128, ReLU, dense 10."""
  return nn.Sequential(
      nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def train_epoch(model, x_Nx1x28x28, y_N, train_indices, optimizer, loss_func, batch_size=128) -> None:
  model.train()
  order = train_indices[torch.randperm(len(train_indices))]
  for start in range(0, len(order), batch_size):
    batch = order[start:start + batch_size]
    loss_func(model(x_Nx1x28x28[batch]), y_N[batch]).backward()
    optimizer.step()
    optimizer.zero_grad()
