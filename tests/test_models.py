"""Model shapes, parameter counts and initialisation."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmnist import models

# Jitted at XLA's lowest backend optimisation: eager init and apply compile every op of a CNN on its own, and
# the default level spends most of a CNN's compile optimising code that runs once (cnn_wide's init and apply,
# under load on 2 cores: eager 41 s, jit 24 s, this 6 s). These tests check shapes, counts and behaviour.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# 784*10+10; 784*30+30 + 30*10+10; 784*300+300 + 300*50+50 + 50*10+10
PARAM_COUNTS = {
    "linear": 7850, "mlp2": 23860, "mlp3": 251060,
    # convs 9*(1*16 + 16*32), BatchNorm 2*(16+32), dense 1568*128+128, 128*10+10
    "cnn": 4_752 + 96 + 200_832 + 1_290,
    # convs 9*(1*32 + 32*32 + 32*64 + 64*64), BatchNorm 2*(32+32+64+64), dense 3136*256+256, 256*10+10
    "cnn_wide": 64_800 + 384 + 803_072 + 2_570,
    "resnet": 64_800 + 384 + 401_536 + 1_290 + 1 * 32 + 32 * 64,  # plus the 1x1 skip projections
    # convs 9*(1*24 + 24*24 + 24*48 + 48*48), BatchNorm 2*(24+24+48+48), dense 2352*256+256, 256*10+10
    "cnn_mid": 36_504 + 288 + 602_368 + 2_570,
    # conv 5x5 1->24 and 3x3 24->32 with biases, dense 800*256+256, 256*10+10
    "cnn_fast": 25 * 24 + 24 + 216 * 32 + 32 + 205_056 + 2_570,
}


@functools.cache  # a CNN's init compiles for ~0.5 s: the tests share it, and never change its variables
def _init_variables(name, init_scheme="torch"):
  model = models.build_model(name, init_scheme)
  return model, _jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def _init(name, init_scheme="torch"):
  model, variables = _init_variables(name, init_scheme)
  return model, variables["params"]


def _uniform(shape, seed=0):
  # Test inputs from numpy: jax.random compiles its sampler for every shape at the default level (0.3-1.4 s each).
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_output_shape_and_finite(name):
  model, variables = _init_variables(name)
  logits = np.asarray(_jit(model.apply)(variables, _uniform((7, 28, 28, 1))))
  assert logits.shape == (7, 10)
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", list(models.MODELS))
def test_parameter_count(name):
  # The shapes init gives, traced without compiling or running anything.
  params = jax.eval_shape(models.build_model(name).init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  assert sum(p.size for p in jax.tree.leaves(params)) == PARAM_COUNTS[name]


def test_parameter_names_are_those_of_checkpoints_written_before():
  names = {name: sorted(jax.eval_shape(models.build_model(name).init, jax.random.key(0),
                                       jnp.zeros((1, 28, 28, 1)))["params"]) for name in ("cnn", "cnn_fast")}
  assert names == {"cnn": ["BatchNorm_0", "BatchNorm_1", "Conv3x3_0", "Conv3x3_1", "Dense_0", "Dense_1"],
                   "cnn_fast": ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]}


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
  x = _uniform((3, 28, 28, 1), seed=1)
  expected = x.reshape(3, -1) @ params["dense0"]["kernel"] + params["dense0"]["bias"][None, :]
  np.testing.assert_allclose(model.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["cnn_wide", "resnet"])
def test_train_mode_updates_batch_stats_and_eval_mode_uses_them(name, key):
  model, variables = _init_variables(name)
  images = _uniform((16, 28, 28, 1))
  assert "batch_stats" in variables
  train_apply = _jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}, mutable=["batch_stats"]))
  logits, updates = train_apply(variables, images, key)
  assert logits.shape == (16, 10)
  old_mean = np.asarray(variables["batch_stats"]["BatchNorm_0"]["mean"])  # numpy: eager jnp ops compile each
  new_mean = np.asarray(updates["batch_stats"]["BatchNorm_0"]["mean"])
  assert float(np.abs(new_mean - old_mean).max()) > 0  # running statistics moved
  # Eval mode needs no dropout key and uses the running statistics, not the batch's: after train mode
  # moved them, eval mode of the new statistics answers otherwise than of the old.
  eval_apply = _jit(lambda v, x: model.apply(v, x, train=False))
  eval_logits = np.asarray(eval_apply(variables, images))
  assert float(np.abs(np.asarray(eval_apply({**variables, **updates}, images)) - eval_logits).max()) > 0
  other, _ = train_apply(variables, images, jax.random.key(9))
  assert float(np.abs(np.asarray(other) - np.asarray(logits)).max()) > 0  # train mode's dropout is random


@pytest.mark.parametrize("size,padding,channels", [(3, "SAME", 5), (5, "VALID", 1), (3, "VALID", 24), (4, "SAME", 2)])
def test_im2col_convolution_equals_xla_convolution(size, padding, channels):
  rng = np.random.default_rng(0)  # numpy's normal: jax.random's compiles for each shape (0.5-1.4 s each)
  x = rng.standard_normal((3, 12, 12, channels), np.float32)
  kernel = rng.standard_normal((size, size, channels, 7), np.float32)
  # Each jitted: eager, im2col's K*K slices and concatenation compile one by one.
  xla = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), padding,
                                                          dimension_numbers=("NHWC", "HWIO", "NHWC")))
  im2col = jax.jit(lambda x, k: models.conv_im2col(x, k, padding))
  np.testing.assert_allclose(im2col(x, kernel), xla(x, kernel), rtol=1e-4, atol=1e-4)


def test_fast_cnn_gives_the_same_logits_with_either_convolution():
  model, variables = _init_variables("cnn_fast")
  images = _uniform((4, 28, 28, 1))
  np.testing.assert_allclose(_jit(model.clone(conv_impl="im2col").apply)(variables, images),
                             _jit(model.clone(conv_impl="xla").apply)(variables, images), rtol=1e-4, atol=1e-4)
