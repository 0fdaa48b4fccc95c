"""Model shapes, parameter counts and initialisation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmnist import models

# 784*10+10; 784*30+30 + 30*10+10; 784*300+300 + 300*50+50 + 50*10+10
PARAM_COUNTS = {"linear": 7850, "mlp2": 23860, "mlp3": 251060}


def _init(name, init_scheme="torch", key=jax.random.key(0)):
  model = models.build_model(name, init_scheme)
  return model, model.init(key, jnp.zeros((1, 28, 28, 1)))["params"]


@pytest.mark.parametrize("name", list(models.MODELS))
def test_output_shape_and_finite(name, key):
  model, params = _init(name)
  images = jax.random.uniform(key, (7, 28, 28, 1))
  logits = model.apply({"params": params}, images)
  assert logits.shape == (7, 10)
  assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("name", list(models.MODELS))
def test_parameter_count(name):
  _, params = _init(name)
  assert sum(p.size for p in jax.tree.leaves(params)) == PARAM_COUNTS[name]


def test_torch_init_is_uniform_within_one_over_sqrt_fan_in():
  _, params = _init("mlp3")
  for layer, fan_in in (("dense0", 784), ("dense1", 300), ("dense2", 50)):
    bound = 1 / math.sqrt(fan_in)
    for leaf in (params[layer]["kernel"], params[layer]["bias"]):
      values = np.asarray(leaf)
      assert values.min() >= -bound and values.max() <= bound
      # Uniform on [-b, b] has std b/sqrt(3); the biases too are non-zero, as in PyTorch.
      assert abs(values.std() - bound / math.sqrt(3)) < 0.25 * bound


def test_flax_init_keeps_zero_biases():
  _, params = _init("mlp2", "flax")
  assert float(jnp.abs(params["dense0"]["bias"]).max()) == 0.0
  assert float(jnp.abs(params["dense0"]["kernel"]).max()) > 1 / math.sqrt(784)  # lecun_normal tails


def test_linear_is_one_dense_layer():
  model, params = _init("linear")
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  expected = x.reshape(3, -1) @ params["dense0"]["kernel"] + params["dense0"]["bias"][None, :]
  np.testing.assert_allclose(model.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)
