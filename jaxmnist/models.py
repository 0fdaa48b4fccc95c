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
INIT_SCHEMES = ("torch", "flax")


def torch_uniform(fan_in: int):
  """PyTorch's default for nn.Linear and nn.Conv2d weights and biases: uniform(+-1/sqrt(fan_in)).

  (kaiming_uniform with a=sqrt(5) reduces to this bound.) Matching it makes learning curves
  comparable with the post's.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _initializers(init_scheme: str, fan_in: int) -> dict:
  if init_scheme == "torch":
    return {"kernel_init": torch_uniform(fan_in), "bias_init": torch_uniform(fan_in)}
  return {}  # Flax's defaults: lecun_normal kernels, zero biases


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


def conv3x3_im2col(x_BxHxWxC: jax.Array, kernel_3x3xCxF: jax.Array) -> jax.Array:
  """A 3x3 'SAME' convolution as one matmul over the 9 shifted copies of the input.

  On XLA's CPU backend a convolution inside `lax.scan` runs ~20x slower than this matmul form
  (experiments/cnn_cpu.py measures it); on GPU and TPU the native convolution is used instead.
  """
  batch, height, width, channels = x_BxHxWxC.shape
  padded = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)))
  columns = jnp.concatenate([padded[:, i:i + height, j:j + width, :] for i in range(3) for j in range(3)],
                            axis=-1)
  out = columns.reshape(-1, 9 * channels) @ kernel_3x3xCxF.reshape(9 * channels, -1)
  return out.reshape(batch, height, width, -1)


def max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, as a reshape and a max (fast everywhere; sizes must be even)."""
  batch, height, width, channels = x_BxHxWxC.shape
  return x_BxHxWxC.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def default_conv_impl() -> str:
  return "im2col" if jax.default_backend() == "cpu" else "xla"


class Conv3x3(nn.Module):
  """3x3 'SAME' convolution without bias; the kernel is laid out as nn.Conv's, [3, 3, C, F]."""

  features: int
  impl: str = "xla"  # "xla": lax.conv_general_dilated; "im2col": conv3x3_im2col
  init_scheme: str = "torch"

  @nn.compact
  def __call__(self, x):
    fan_in = 9 * x.shape[-1]
    init = torch_uniform(fan_in) if self.init_scheme == "torch" else nn.initializers.lecun_normal()
    kernel = self.param("kernel", init, (3, 3, x.shape[-1], self.features))
    if self.impl == "im2col":
      return conv3x3_im2col(x, kernel)
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


class CNN(nn.Module):
  """A small VGG-style net for accuracy per second: per stage, `convs_per_stage` x
  [3x3 conv, BatchNorm, ReLU] then 2x2 max pooling (28 -> 14 -> 7); then dropout, a dense layer,
  dropout, and the logits. `residual` adds a 1x1-projected skip around each stage's convs."""

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
    impl = self.conv_impl or default_conv_impl()
    x = images_BxHxWxC
    for width in self.widths:
      y = x
      for _ in range(self.convs_per_stage):
        y = Conv3x3(width, impl, self.init_scheme)(y)
        y = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(y))
      if self.residual:
        y = y + nn.Dense(width, use_bias=False, name=f"skip{width}")(x)  # a 1x1 convolution
      x = max_pool_2x2(y)
    x = x.reshape((x.shape[0], -1))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(nn.Dense(self.dense, **_initializers(self.init_scheme, x.shape[-1]))(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, **_initializers(self.init_scheme, x.shape[-1]))(x)


MODELS = {
    **{name: functools.partial(MLP, hidden_sizes=sizes) for name, sizes in MLP_HIDDEN_SIZES.items()},
    "cnn": functools.partial(CNN, widths=(16, 32), convs_per_stage=1, dense=128, dropout=0.0),
    "cnn_wide": functools.partial(CNN, widths=(32, 64), convs_per_stage=2, dense=256),
    "resnet": functools.partial(CNN, widths=(32, 64), convs_per_stage=2, residual=True),
}


def build_model(name: str, init_scheme: str = "torch") -> nn.Module:
  return MODELS[name](init_scheme=init_scheme)
