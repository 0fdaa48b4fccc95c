"""Flax linen models: the post's MLPs (linear, mlp2, mlp3) and convolutional nets (cnn, resnet).

Synopsis:
  model = models.build_model("mlp3")
  variables = model.init(key, images_Bx28x28x1)            # {"params"} or {"params", "batch_stats"}
  logits_Bx10 = model.apply(variables, images_Bx28x28x1, train=False)
"""

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NUM_CLASSES = 10
# The post's models: hidden layer widths.
MLP_HIDDEN_SIZES = {
    "linear": (),
    "mlp2": (30,),
    "mlp3": (300, 50),
}


def torch_uniform(fan_in: int):
  """PyTorch's default for nn.Linear and nn.Conv2d weights and biases, uniform(+-1/sqrt(fan_in)) (what
  kaiming_uniform with a=sqrt(5) reduces to): learning curves compare with the post's."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _initializers(init_scheme: str, fan_in: int) -> dict:
  # Else {}: Flax's defaults, lecun_normal kernels and zero biases.
  return {"kernel_init": torch_uniform(fan_in), "bias_init": torch_uniform(fan_in)} if init_scheme == "torch" else {}


class MLP(nn.Module):
  """Flatten, then Dense layers with ReLU between them; no ReLU after the last (logits)."""

  hidden_sizes: Sequence[int]
  num_classes: int = NUM_CLASSES
  init_scheme: str = "torch"

  @nn.compact
  def __call__(self, images_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout or normalisation: the post's models behave the same in both modes
    x = images_BxHxWxC.reshape((images_BxHxWxC.shape[0], -1))
    widths = (*self.hidden_sizes, self.num_classes)
    for i, width in enumerate(widths):
      x = nn.Dense(width, name=f"dense{i}", **_initializers(self.init_scheme, x.shape[-1]))(x)
      if i < len(widths) - 1:
        x = nn.relu(x)
    return x


def conv_im2col(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array, padding: str = "SAME") -> jax.Array:
  """A KxK convolution (stride 1, 'SAME' or 'VALID') as one matmul over the K*K shifted copies of the input:
  inside `lax.scan`, XLA's CPU backend runs it ~20x faster than its own convolution (experiments/cnn_cpu.py)."""
  size = kernel_KxKxCxF.shape[0]
  if padding == "SAME":
    low, high = (size - 1) // 2, size // 2
    x_BxHxWxC = jnp.pad(x_BxHxWxC, ((0, 0), (low, high), (low, high), (0, 0)))
  batch, height, width, channels = x_BxHxWxC.shape
  out_height, out_width = height - size + 1, width - size + 1
  # Column order (row offset, column offset, channel) is the kernel's [K, K, C] order, flattened.
  columns = jnp.concatenate([x_BxHxWxC[:, i:i + out_height, j:j + out_width, :]
                             for i in range(size) for j in range(size)], axis=-1)
  out = columns.reshape(-1, size * size * channels) @ kernel_KxKxCxF.reshape(size * size * channels, -1)
  return out.reshape(batch, out_height, out_width, -1)


def max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, as a reshape and a max (fast everywhere; sizes must be even)."""
  batch, height, width, channels = x_BxHxWxC.shape
  return x_BxHxWxC.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


class Conv(nn.Module):
  """A KxK convolution, stride 1, its kernel laid out as nn.Conv's [K, K, C, F]; PyTorch's default init."""

  features: int
  kernel_size: int = 3
  padding: str = "SAME"
  use_bias: bool = True
  impl: str | None = None  # "xla": lax.conv_general_dilated; "im2col": conv_im2col; None: im2col on CPU
  init_scheme: str = "torch"

  @nn.compact
  def __call__(self, x):
    impl = self.impl or ("im2col" if jax.default_backend() == "cpu" else "xla")
    fan_in = self.kernel_size**2 * x.shape[-1]
    torch = self.init_scheme == "torch"
    kernel = self.param("kernel", torch_uniform(fan_in) if torch else nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
    y = (conv_im2col(x, kernel, self.padding) if impl == "im2col" else
         jax.lax.conv_general_dilated(x, kernel, (1, 1), self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")))
    if not self.use_bias:
      return y
    bias = self.param("bias", torch_uniform(fan_in) if torch else nn.initializers.zeros, (self.features,))
    return y + bias.reshape(1, 1, 1, -1)


class CNN(nn.Module):
  """A small VGG-style net for accuracy per second: per stage, `convs_per_stage` x [3x3 conv, BatchNorm, ReLU] then
  2x2 max pooling (28 -> 14 -> 7); dropout, a dense layer, dropout, logits. `residual` adds 1x1-projected skips."""

  widths: Sequence[int] = (32, 64)
  convs_per_stage: int = 1
  dense: int = 128
  dropout: float = 0.25
  residual: bool = False
  conv_impl: str | None = None  # None: im2col on CPU, XLA's convolution elsewhere
  num_classes: int = NUM_CLASSES
  init_scheme: str = "torch"

  @nn.compact
  def __call__(self, images_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
    x = images_BxHxWxC
    convs = 0
    for width in self.widths:
      y = x
      for _ in range(self.convs_per_stage):
        # The name of the class this layer had before it was Conv: checkpoints written then still load.
        y = Conv(width, use_bias=False, impl=self.conv_impl, init_scheme=self.init_scheme, name=f"Conv3x3_{convs}")(y)
        convs += 1
        y = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(y))
      if self.residual:
        y = y + nn.Dense(width, use_bias=False, name=f"skip{width}")(x)  # a 1x1 convolution
      x = max_pool_2x2(y)
    x = x.reshape((x.shape[0], -1))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(nn.Dense(self.dense, **_initializers(self.init_scheme, x.shape[-1]))(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, **_initializers(self.init_scheme, x.shape[-1]))(x)


# The MNIST training set's pixel mean and standard deviation (on [0, 1]), as torchvision's Normalize uses.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class FastCNN(nn.Module):
  """The net of the fastest public MNIST recipe we know (tuomaso/train_mnist_fast: 99.0% in one epoch): normalise;
  5x5 conv (valid), 2x2 max pool, ReLU (28 -> 24 -> 12); 3x3 conv (valid), pool, ReLU (12 -> 10 -> 5); a dense
  layer with ReLU; the logits. The normalisation is inside, so predict, serve and export feed it [0, 1] pixels."""

  widths: Sequence[int] = (24, 32)
  dense: int = 256
  conv_impl: str | None = None  # None: im2col on CPU, XLA's convolution elsewhere
  num_classes: int = NUM_CLASSES
  init_scheme: str = "torch"

  @nn.compact
  def __call__(self, images_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
    del train  # behaves the same in both modes
    x = (images_BxHxWxC - MNIST_MEAN) / MNIST_STD
    for width, size in zip(self.widths, (5, 3)):
      x = nn.relu(max_pool_2x2(Conv(width, size, "VALID", True, self.conv_impl, self.init_scheme)(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense, **_initializers(self.init_scheme, x.shape[-1]))(x))
    return nn.Dense(self.num_classes, **_initializers(self.init_scheme, x.shape[-1]))(x)


MODELS = {**{name: functools.partial(MLP, hidden_sizes=sizes) for name, sizes in MLP_HIDDEN_SIZES.items()},
    "cnn": functools.partial(CNN, widths=(16, 32), convs_per_stage=1, dense=128, dropout=0.0),
    "cnn_wide": functools.partial(CNN, widths=(32, 64), convs_per_stage=2, dense=256),
    "resnet": functools.partial(CNN, widths=(32, 64), convs_per_stage=2, residual=True),
    # cnn_wide at 3/4 of its width: cheaper epochs, for Fashion-MNIST on the CPU (the cnn_fashion preset)
    "cnn_mid": functools.partial(CNN, widths=(24, 48), convs_per_stage=2, dense=256), "cnn_fast": FastCNN}


def build_model(name: str, init_scheme: str = "torch", conv_impl: str | None = None) -> nn.Module:
  """`conv_impl` chooses the convolution of the convolutional nets ("xla" or "im2col"); None: at trace time."""
  model = MODELS[name](init_scheme=init_scheme)
  return model.clone(conv_impl=conv_impl) if conv_impl and isinstance(model, (CNN, FastCNN)) else model
