"""The post's models as Flax linen modules: linear (784->10), mlp2 (784->30->10), mlp3 (784->300->50->10).

Synopsis:
  model = models.build_model("mlp3")
  params = model.init(key, images_Bx28x28x1)["params"]
  logits_Bx10 = model.apply({"params": params}, images_Bx28x28x1)
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NUM_CLASSES = 10
# Hidden layer widths per model name.
MODELS = {
    "linear": (),
    "mlp2": (30,),
    "mlp3": (300, 50),
}
INIT_SCHEMES = ("torch", "flax")


def torch_uniform(fan_in: int):
  """PyTorch nn.Linear's default for weights and biases: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  (kaiming_uniform with a=sqrt(5) reduces to this bound.) Matching it makes learning curves
  comparable with the post's.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class MLP(nn.Module):
  """Flatten, then Dense layers with ReLU between them; no ReLU after the last (logits)."""

  hidden_sizes: Sequence[int]
  num_classes: int = NUM_CLASSES
  init_scheme: str = "torch"

  def _dense(self, features: int, fan_in: int, name: str) -> nn.Dense:
    if self.init_scheme == "torch":
      return nn.Dense(features, kernel_init=torch_uniform(fan_in), bias_init=torch_uniform(fan_in),
                      name=name)
    return nn.Dense(features, name=name)  # Flax's default: lecun_normal kernel, zero bias

  @nn.compact
  def __call__(self, images_BxHxWxC: jax.Array) -> jax.Array:
    x = images_BxHxWxC.reshape((images_BxHxWxC.shape[0], -1))
    widths = (*self.hidden_sizes, self.num_classes)
    for i, width in enumerate(widths):
      x = self._dense(width, x.shape[-1], name=f"dense{i}")(x)
      if i < len(widths) - 1:
        x = nn.relu(x)
    return x


def build_model(name: str, init_scheme: str = "torch") -> nn.Module:
  return MLP(hidden_sizes=MODELS[name], init_scheme=init_scheme)
