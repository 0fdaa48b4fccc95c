"""The augmentations Fashion-MNIST adds (flips, random erasing), their composition with '+', and the config
strings that name them. Tiny arrays, no training."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmnist import augment, configs, models, steps
from jaxmnist.configs import PRESETS
from tests.conftest import make_separable

# Compiled once each and shared by the tests (a probability is traced, so it compiles nothing new): eager
# dispatch compiles every primitive on its own, and erase alone takes about a second to compile on the CPU.
_flip, _erase = jax.jit(augment.random_flip), jax.jit(augment.random_erase)
_JITTED = {name: jax.jit(fn) for name, fn in augment.AUGMENTATIONS.items() if fn is not None}


def _images(batch: int, seed: int = 0) -> jax.Array:
  # No image is its own mirror, so a flip always shows.
  return jax.random.uniform(jax.random.key(seed), (batch, 28, 28, 1))


def test_flip_mirrors_exactly_the_chosen_images_and_undoes_itself(key):
  images = _images(32)
  flipped = _flip(key, images)
  chosen = np.asarray(jax.random.bernoulli(key, 0.5, (32,)))  # the images the key picks
  assert 0 < chosen.sum() < 32
  np.testing.assert_array_equal(flipped[chosen], images[chosen][:, :, ::-1])
  np.testing.assert_array_equal(flipped[~chosen], images[~chosen])
  np.testing.assert_array_equal(_flip(key, flipped), images)  # the same key flips them back


def test_flip_with_probability_zero_or_one(key):
  images = _images(32)
  np.testing.assert_array_equal(_flip(key, images, prob=0.0), images)
  np.testing.assert_array_equal(_flip(key, images, prob=1.0), images[:, :, ::-1])


def test_erase_fills_one_rectangle_within_the_area_bounds_and_keeps_the_rest(key):
  images = jnp.full((64, 28, 28, 1), 2.0)  # outside the fill's [0, 1]: every erased pixel shows
  erased = np.asarray(_erase(key, images, prob=0.75))
  changed = erased[..., 0] != 2.0
  np.testing.assert_array_equal(erased[~changed], 2.0)  # the rest bit-identical
  assert np.all((erased[changed] >= 0) & (erased[changed] <= 1))
  areas = []
  for mask in changed[changed.any(axis=(1, 2))]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert box.all() and box.sum() == mask.sum()  # one filled rectangle
    areas.append(mask.sum() / (28 * 28))
  assert 0.02 <= min(areas) and max(areas) <= 0.4
  assert 32 <= len(areas) <= 60, len(areas)  # about 3/4 of the 64 images


def test_erase_with_probability_zero_is_the_identity(key):
  images = jnp.full((64, 28, 28, 1), 2.0)
  np.testing.assert_array_equal(_erase(key, images, prob=0.0), images)


def test_a_single_name_is_the_augmentation_itself():
  assert augment.build_augment("none") is None
  # The very function, called with the step's augment key as before composition existed: bit-identical.
  assert augment.build_augment("shift") is augment.random_shift
  assert augment.build_augment("affine") is augment.random_affine
  for name in ("flip", "erase"):
    assert augment.build_augment(name) is augment.AUGMENTATIONS[name]


def test_a_composition_applies_its_parts_in_order_each_with_its_own_key(key):
  # Flip and shift, as they compile in a fraction of a second; erase composes the same way (the training
  # runs of the Fashion-MNIST recipe jit flip+shift+erase).
  images = _images(32)
  first_key, second_key = jax.random.split(key)
  results = {}
  for spec, (first, second) in (("flip+shift", ("flip", "shift")), ("shift+flip", ("shift", "flip"))):
    expected = _JITTED[second](second_key, _JITTED[first](first_key, images))
    results[spec] = jax.jit(augment.build_augment(spec))(key, images)
    np.testing.assert_array_equal(results[spec], expected)
  assert not np.array_equal(results["flip+shift"], results["shift+flip"])


def test_config_problems_accept_joined_names_and_refuse_others():
  problems_of = lambda spec: configs.config_problems(dataclasses.replace(PRESETS["mlp3"], augment=spec))
  for spec in ("none", "flip", "flip+shift+erase", "erase+affine", "shift+affine+flip+erase"):
    assert problems_of(spec) == [], spec
  for spec, phrase in (("rotate", ("unknown augmentation 'rotate' (choose one of none, shift, affine, flip, erase, "
                                   "or several of shift, affine, flip, erase joined by '+', e.g. flip+shift+erase)")),
                       ("flip+", "unknown augmentation 'flip+'"), ("", "unknown augmentation ''"),
                       ("flip+none", "augmentation 'flip+none' joins none to others"),
                       ("flip+shift+flip", "augmentation 'flip+shift+flip' names flip more than once")):
    problems = problems_of(spec)
    assert len(problems) == 1 and problems[0].startswith(phrase), (spec, problems)


def test_cnn_fashions_training_step_learns_from_its_flipped_then_shifted_images(key):
  # The preset's composition as the compiled step applies it (programs.Programs builds it from the config):
  # one SGD step of `linear` with it equals the post's update on the images flipped, then shifted, by hand.
  spec = PRESETS["cnn_fashion"].augment
  assert spec == "flip+shift"
  model, optimizer = models.build_model("linear"), optax.sgd(0.1)
  images, labels = make_separable(16)
  params = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))["params"]
  step = jax.jit(functools.partial(steps.train_step, apply_fn=model.apply, optimizer=optimizer,
                                   augment=augment.build_augment(spec)))
  state, _ = step(steps.create_train_state(params, optimizer), images[..., None], labels, jnp.ones(16), key)

  flip_key, shift_key = jax.random.split(jax.random.split(key)[0])  # the step's augment key, split per part
  inputs = _JITTED["shift"](shift_key, _JITTED["flip"](flip_key, steps.images_to_inputs(jnp.asarray(images[..., None]))))
  assert not np.array_equal(inputs, steps.images_to_inputs(jnp.asarray(images[..., None])))
  loss = lambda p: steps.cross_entropy_loss(model.apply({"params": p}, inputs), labels, jnp.ones(16))
  expected = jax.tree.map(lambda w, g: w - 0.1 * g, params, jax.jit(jax.grad(loss))(params))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6), state.params, expected)
