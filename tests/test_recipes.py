"""Recipes beyond the post: optimizers, schedules, label smoothing, augmentation, and a CNN that learns."""

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmnist import augment, models, programs, steps
from jaxmnist.configs import PRESETS
from jaxmnist.optimizer import learning_rate_schedule, make_optimizer
from tests import training_outcomes
from tests.conftest import make_separable


@pytest.mark.parametrize("name", ["linear", "mlp2", "mlp3"])
def test_post_presets_train_with_plain_sgd(name):
  # Two training steps of the preset against the post's update done by hand: w -= lr * grad of the plain
  # cross-entropy of the un-augmented batch. Momentum would show in the second step, weight decay or a
  # schedule in either, label smoothing or augmentation in the gradient.
  config = PRESETS[name]
  model = models.build_model(config.model)
  images, labels = make_separable(16)
  images = jnp.asarray(images[..., None])
  # Jitted at the trainer's init options: eager, every op compiles on its own; at the default level, 1-1.7 s.
  init = jax.jit(model.init, compiler_options=programs.CPU_INIT_COMPILER_OPTIONS)
  params = init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  optimizer = make_optimizer(dataclasses.replace(config, epochs=1), 2)  # a whole run: a schedule would move
  step = jax.jit(partial(steps.train_step, apply_fn=model.apply, optimizer=optimizer,
                 label_smoothing=config.label_smoothing, augment=augment.build_augment(config.augment)))
  state = steps.create_train_state(params, optimizer)

  def post_loss(p):
    logits = model.apply({"params": p}, images.astype(jnp.float32) / 255.0, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  expected, post_grad = params, jax.jit(jax.grad(post_loss))
  for i in range(2):
    state, _ = step(state, images, labels, jnp.ones(len(labels)), jax.random.key(i + 1))
    # The update in numpy (float32): eager jax would compile each leaf's multiply and subtract.
    expected = jax.tree.map(lambda w, g: np.asarray(w) - np.float32(config.learning_rate) * np.asarray(g), expected,
                            post_grad(expected))
    jax.tree.map(partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7), state.params, expected)


def test_onecycle_warms_up_to_the_peak_then_anneals():
  config = dataclasses.replace(PRESETS["mlp3"], schedule="onecycle", learning_rate=0.1, epochs=4)
  schedule = learning_rate_schedule(config, total_steps=100)
  np.testing.assert_allclose(schedule(0), 0.1 / 25, rtol=1e-5)  # fastai: starts at lr / 25
  np.testing.assert_allclose(schedule(25), 0.1, rtol=1e-5)  # peak after 25% of the steps
  assert float(schedule(100)) < 1e-5  # ends near zero
  assert float(schedule(60)) < float(schedule(40))


def test_cosine_decays_from_the_rate_to_zero():
  config = dataclasses.replace(PRESETS["mlp3"], schedule="cosine", learning_rate=0.2)
  schedule = learning_rate_schedule(config, total_steps=10)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10)], [0.2, 0.1, 0.0], atol=1e-6)


@pytest.mark.parametrize("optimizer, momentum, decay", [("sgd", 0.9, 5e-4), ("adam", 0.0, 1e-4),
                                                        ("adamw", 0.0, 1e-2)])
def test_optimizers_take_finite_descending_steps(optimizer, momentum, decay):
  # A whole one-cycle run of 20 steps at lr 0.1 on |w|^2 from 5.0: it ended at 0.15 (sgd), 1.06 (adam) and 1.03
  # (adamw) on 2026-12-03; a step that did not descend, or a schedule that stayed near lr / 25, stays near 5.
  config = dataclasses.replace(PRESETS["mlp3"], optimizer=optimizer, momentum=momentum, nesterov=bool(momentum),
                               weight_decay=decay, schedule="onecycle", learning_rate=0.1, epochs=1)
  tx = make_optimizer(config, 20)
  params = {"w": jnp.array([1.0, -2.0])}
  loss = lambda p: jnp.sum(p["w"] ** 2)
  state = tx.init(params)
  for _ in range(20):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < 2.5 and bool(jnp.all(jnp.isfinite(params["w"])))


def test_label_smoothing_matches_hand_computed_value():
  logits = jnp.array([[2.0, 0.0]])
  labels = jnp.array([0], jnp.int32)
  a = 0.2  # targets: 1 - a + a/2 = 0.9 on the label, 0.1 on the other class
  log_p = [2 - math.log(math.e**2 + 1), -math.log(math.e**2 + 1)]
  expected = -(0.9 * log_p[0] + 0.1 * log_p[1])
  np.testing.assert_allclose(steps.cross_entropy_loss(logits, labels, jnp.ones(1), a), expected, rtol=1e-6)


# The augmentations jitted, as the training step runs them: eager, every op of them compiles on its own.
def test_random_shift_moves_images_without_changing_them():
  images = np.zeros((64, 28, 28, 1), np.float32)
  images[:, 10:14, 10:14, 0] = 1.0
  shifted = np.asarray(jax.jit(partial(augment.random_shift, max_shift=2))(jax.random.key(0), images))
  assert shifted.shape == images.shape
  np.testing.assert_allclose(shifted.sum(axis=(1, 2, 3)), 16.0)  # the square stays whole
  offsets = {tuple(np.argwhere(np.asarray(s[..., 0]))[0]) for s in shifted}
  assert len(offsets) > 5 and all(8 <= r <= 12 and 8 <= c <= 12 for r, c in offsets)


def test_random_affine_with_no_range_is_the_identity_and_otherwise_warps():
  images = np.random.default_rng(1).uniform(size=(4, 28, 28, 1)).astype(np.float32)
  no_range = partial(augment.random_affine, max_degrees=0.0, max_scale=0.0, max_shift=0.0)
  identity = jax.jit(no_range)(jax.random.key(2), images)
  np.testing.assert_allclose(identity, images, atol=1e-5)
  warped = np.asarray(jax.jit(augment.random_affine)(jax.random.key(2), images))
  assert warped.shape == images.shape and float(np.abs(warped - images).mean()) > 0.01


# Shifts of 2 px move one toy class onto the next, so augmentation is tested on the wider net only.
@pytest.mark.parametrize("scenario", ["cnn_tiny", "resnet_affine_tiny"])
def test_short_cnn_training_on_tiny_data_learns(tmp_path, scenario):
  summary = getattr(training_outcomes, scenario)(tmp_path / "run")
  training_outcomes.assert_clears(scenario, summary)
