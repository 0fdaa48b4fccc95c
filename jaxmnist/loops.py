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

from jaxmnist import augment, ensemble, parallel, steps
from jaxmnist.configs import Config


def step_options(config: Config) -> dict:
  return {"label_smoothing": config.label_smoothing, "augment": augment.build_augment(config.augment)}


def make_epoch_fn(config: Config, apply_fn, optimizer, mesh: Mesh):
  """A compiled `epoch(state, images, labels, train_indices, epoch) -> (state, sums)` for config.loop.

  `epoch(..., seed=s)` runs the same program for another seed (benchmarks over seeds compile once).
  For an ensemble (config.seeds) the state, the train indices, the seeds and the sums carry a leading
  member axis, and the one-model epoch is mapped over them (jaxmnist.ensemble.over_members): one program
  trains every member.

  Both loops run the same steps on the same batches, split over the mesh's devices; they differ
  only in how often the host dispatches work (once per epoch, or once per batch).
  """
  # One device needs no sharding constraints; the scan then gathers each batch inside its step. Nor do
  # members spread over the devices: each device trains its own members on whole batches.
  split_batches = mesh.size > 1 and not parallel.spreads_members(config, mesh)
  sharding = parallel.batch_sharding(mesh) if split_batches else None
  # The seed is an argument, not a constant baked into the program: every seed of a config shares one
  # compiled epoch, and XLA's persistent cache serves it to the next process (the seed sweeps of
  # experiments/ compile once).
  seed = jnp.asarray(config.seeds or config.seed)
  at_once = parallel.members_at_once(config, mesh)

  def members(fn, in_axes):
    """Over an ensemble's members: the state, the train indices and the seed (and the python loop's sums
    and batches); a single model's `fn` as it is."""
    return ensemble.over_members(fn, in_axes, at_once) if config.seeds else fn
  options = step_options(config)
  if config.loop == "scan":
    train_epoch = partial(steps.train_epoch, batch_size=config.batch_size, apply_fn=apply_fn,
                          optimizer=optimizer, sharding=sharding, **options)
    def one(state, images, labels, indices, epoch, seed):
      return train_epoch(state, images, labels, indices, steps.epoch_key(seed, epoch))
    jitted = jax.jit(members(one, (0, None, None, 0, None, 0)), donate_argnums=0)
    return lambda state, images, labels, indices, epoch, seed=seed: jitted(state, images, labels, indices, epoch,
                                                                          seed)
  cut = jax.jit(members(lambda images, labels, indices, epoch, seed: steps.epoch_batches(
      images, labels, indices, steps.epoch_key(seed, epoch), batch_size=config.batch_size, sharding=sharding),
      (None, None, 0, None, 0)))
  keys_for = jax.jit(lambda epoch, seed, num_steps: members(
      lambda seed: steps.step_keys(steps.epoch_key(seed, epoch), num_steps), 0)(seed), static_argnums=2)
  step = jax.jit(members(partial(steps.train_step_at, apply_fn=apply_fn, optimizer=optimizer, **options),
                         (0, 0, 0, 0, None)), donate_argnums=(0, 1))
  zero_sums = jax.jit(members(lambda _: steps.zero_sums(), 0), out_shardings=parallel.state_sharding(config, mesh))

  def epoch_fn(state, images, labels, indices, epoch, seed=seed):
    batches = cut(images, labels, indices, epoch, seed)
    num_steps = batches[0].shape[1 if config.seeds else 0]
    keys = keys_for(epoch, seed, num_steps)
    sums = zero_sums(seed)
    for i in range(num_steps):
      state, sums = step(state, sums, batches, keys, i)
    return state, sums

  return epoch_fn
