"""The functional core: loss, accuracy counting, padding, learning, and compiling once."""

import math
from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmnist import models, programs, steps
from tests import training_outcomes
from tests.conftest import make_separable


def test_loss_matches_hand_computed_value():
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  labels = jnp.array([0, 2], jnp.int32)
  # -log softmax: example 0 -> -log(e^2/(e^2+2)); example 1 -> -log(1/(e+2)).
  expected = (-math.log(math.e**2 / (math.e**2 + 2)) - math.log(1 / (math.e + 2))) / 2
  loss = steps.cross_entropy_loss(logits, labels, jnp.ones(2))
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_loss_ignores_padding():
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  labels = jnp.array([0, 2], jnp.int32)
  only_first = steps.cross_entropy_loss(logits, labels, jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(only_first, -math.log(math.e**2 / (math.e**2 + 2)), rtol=1e-6)


def test_accuracy_counts_examples():
  logits = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
  labels = jnp.array([1, 1, 1], jnp.int32)
  np.testing.assert_array_equal(steps.batch_is_correct(logits, labels), [True, False, True])


def test_counts_are_of_examples_not_averages_of_batch_means():
  # 5 examples in batches of 2: averaging batch means would give (1 + 0.5 + 0)/3, not 3/5.
  model = models.build_model("linear")
  params = {"dense0": {"kernel": jnp.zeros((784, 10)), "bias": jnp.arange(10.0)}}  # always predicts 9
  images = jnp.zeros((5, 28, 28, 1), jnp.uint8)
  labels = np.array([9, 9, 9, 0, 1], np.int32)
  logits = jax.jit(partial(steps.eval_logits, batch_size=2, apply_fn=model.apply))(
      {"params": params}, images, jnp.arange(5, dtype=jnp.int32))
  assert logits.shape == (5, 10)  # the padding of the last batch is cut off
  assert int(programs.correct_counts(np.asarray(logits), labels)) == 3


def test_padded_batches_keep_shape_and_mark_padding():
  indices, weights = steps.padded_batches(jnp.arange(5, dtype=jnp.int32), 2)
  assert indices.shape == weights.shape == (3, 2)
  np.testing.assert_array_equal(weights, [[1, 1], [1, 1], [1, 0]])
  np.testing.assert_array_equal(indices[:2], [[0, 1], [2, 3]])


# Jitted, as the trainer runs them: eager, every op compiles on its own. The init at the trainer's options (the
# default level spends a second on its random-number code).
def _setup(name="mlp3", lr=0.1, key=jax.random.key(0)):
  model = models.build_model(name)
  optimizer = optax.sgd(lr)
  params = jax.jit(model.init, compiler_options=programs.CPU_INIT_COMPILER_OPTIONS)(key, jnp.zeros((1, 28, 28, 1)))
  params = params["params"]
  return model, optimizer, steps.create_train_state(params, optimizer)


def test_train_step_learns_separable_toy_set_to_100_percent():
  measured = training_outcomes.toy_steps()
  assert measured["steps"] == 100
  training_outcomes.assert_clears("toy_steps", measured)  # 100% correct, final loss <= 0.05


def test_train_step_rejects_column_labels():
  images, labels = make_separable(8)
  model, optimizer, state = _setup()
  try:
    steps.train_step(state, images[..., None], labels[:, None], jnp.ones(8), apply_fn=model.apply,
                     optimizer=optimizer)
  except AssertionError as e:
    assert "shape" in str(e)
  else:
    raise AssertionError("labels of shape [B, 1] must be rejected: they must be flat [B]")


def test_epochs_compile_once():
  images, labels = make_separable(100)
  model, optimizer, state = _setup("mlp2")
  traced_epoch = chex.assert_max_traces(n=1)(
      lambda state, key: steps.train_epoch(state, jnp.asarray(images[..., None]), jnp.asarray(labels),
                                           jnp.arange(90, dtype=jnp.int32), key, batch_size=32,
                                           apply_fn=model.apply, optimizer=optimizer))
  epoch = jax.jit(traced_epoch, donate_argnums=0)
  for i in range(3):  # 90 examples in batches of 32: a short last batch every epoch
    state, sums = epoch(state, jax.random.fold_in(jax.random.key(1), i))
    assert float(sums["count"]) == 90.0
  assert int(state.step) == 9


def test_epoch_visits_every_training_example_once():
  images, labels = make_separable(50)
  model, optimizer, state = _setup("linear", lr=0.0)  # lr 0: the model does not change within the epoch
  train_indices = jnp.arange(0, 50, 2, dtype=jnp.int32)  # 25 examples, batches of 8
  _, sums = jax.jit(partial(steps.train_epoch, batch_size=8, apply_fn=model.apply, optimizer=optimizer))(
      state, jnp.asarray(images[..., None]), jnp.asarray(labels), train_indices, jax.random.key(3))
  logits = jax.jit(partial(steps.eval_logits, batch_size=8, apply_fn=model.apply))(
      steps.eval_variables(state), jnp.asarray(images[..., None]), train_indices)
  correct = programs.correct_counts(np.asarray(logits), labels[np.asarray(train_indices)])
  assert float(sums["count"]) == 25.0
  assert float(sums["correct"]) == float(correct)


def test_golden_first_step():
  """Pins one SGD step of mlp2 with the torch init on fixed data.

  If this fails after a change that was meant to alter initialisation, the loss or the update,
  update the numbers below; if the change was not meant to, it is a regression.
  """
  images, labels = make_separable(16)
  model, optimizer, state = _setup("mlp2", lr=0.01)
  state, metrics = jax.jit(partial(steps.train_step, apply_fn=model.apply, optimizer=optimizer))(
      state, jnp.asarray(images[..., None]), jnp.asarray(labels), jnp.ones(16))
  loss = float(metrics["loss_sum"]) / 16
  kernel_sum = float(jnp.sum(state.params["dense1"]["kernel"]))
  print(f"golden values: loss={loss:.6f} kernel_sum={kernel_sum:.6f}")
  np.testing.assert_allclose(loss, GOLDEN_LOSS, rtol=1e-5)
  np.testing.assert_allclose(kernel_sum, GOLDEN_KERNEL_SUM, rtol=1e-5, atol=1e-6)


GOLDEN_LOSS = 2.324981
GOLDEN_KERNEL_SUM = 4.639993
