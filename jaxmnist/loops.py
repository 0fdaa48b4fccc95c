"""An epoch of training steps, compiled for a config: one `lax.scan` (the default) or a Python loop.

Synopsis:
  epoch = loops.make_epoch_fn(config, model.apply, optimizer, mesh)
  state, sums = epoch(state, images, labels, train_indices, epoch_number)   # sums: loss, correct, count

Both loops run the same steps (jaxmnist.steps) on the same batches, split over the mesh's devices;
they differ only in how often the host dispatches work: once per epoch, or once per batch.
experiments/bench.py measures both.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxmnist import augment, parallel, steps
from jaxmnist.configs import Config


def step_options(config: Config) -> dict:
  return {"label_smoothing": config.label_smoothing, "augment": augment.build_augment(config.augment)}


def make_epoch_fn(config: Config, apply_fn, optimizer, mesh: Mesh):
  """A compiled `epoch(state, images, labels, train_indices, epoch) -> (state, sums)` for config.loop.

  `epoch(..., seed=s)` runs the same program for another seed (benchmarks over seeds compile once).

  Both loops run the same steps on the same batches, split over the mesh's devices; they differ
  only in how often the host dispatches work (once per epoch, or once per batch).
  """
  # One device needs no sharding constraints; the scan then gathers each batch inside its step.
  sharding = parallel.batch_sharding(mesh) if mesh.size > 1 else None
  # The seed is an argument, not a constant baked into the program: every seed of a config shares one
  # compiled epoch, and XLA's persistent cache serves it to the next process (the seed sweeps of
  # experiments/ compile once).
  seed = jnp.asarray(config.seed)
  options = step_options(config)
  if config.loop == "scan":
    train_epoch = partial(steps.train_epoch, batch_size=config.batch_size, apply_fn=apply_fn,
                          optimizer=optimizer, sharding=sharding, **options)
    jitted = jax.jit(lambda state, images, labels, indices, epoch, seed:
                     train_epoch(state, images, labels, indices, steps.epoch_key(seed, epoch)), donate_argnums=0)
    return lambda state, images, labels, indices, epoch, seed=seed: jitted(state, images, labels, indices, epoch,
                                                                          seed)
  cut = jax.jit(lambda images, labels, indices, epoch, seed: steps.epoch_batches(
      images, labels, indices, steps.epoch_key(seed, epoch), batch_size=config.batch_size, sharding=sharding))
  keys_for = jax.jit(lambda epoch, seed, num_steps: steps.step_keys(steps.epoch_key(seed, epoch), num_steps),
                     static_argnums=2)
  step = jax.jit(partial(steps.train_step_at, apply_fn=apply_fn, optimizer=optimizer, **options),
                 donate_argnums=(0, 1))

  def epoch_fn(state, images, labels, indices, epoch, seed=seed):
    batches = cut(images, labels, indices, epoch, seed)
    keys = keys_for(epoch, seed, batches[0].shape[0])
    sums = jax.device_put(steps.zero_sums(), parallel.replicated(mesh))
    for i in range(batches[0].shape[0]):
      state, sums = step(state, sums, batches, keys, i)
    return state, sums

  return epoch_fn
