"""Data parallelism with jax.sharding: one `data` mesh axis over every device, on one host or many.

Synopsis:
  mesh = parallel.make_mesh()                       # all devices of all processes
  images = parallel.shard_dataset(mnist.train_images, mesh)
  batches = jax.lax.with_sharding_constraint(batches_SxB, parallel.batch_sharding(mesh))

The training set is split along its examples over the devices, each epoch's [steps, batch] array along its
batch axis, and the parameters replicated: each step is local but for XLA's gradient all-reduce, and a global
batch means the same on 1 and on D devices.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmnist.errors import UserError

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices of the job (default: all of them)."""
  devices = jax.devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise UserError(f"--num-devices={num_devices} is not available: this job sees {len(devices)} "
                      f"device(s) ({devices[0].platform}). Choose a number from 1 to {len(devices)}.")
    if jax.process_count() > 1 and num_devices != len(devices):
      raise UserError("--num-devices cannot be used with several processes; every device takes part.")
    devices = devices[:num_devices]
  return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """For [steps, batch, ...] arrays: each device holds its slice of every batch."""
  return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh, what: str = "batch size") -> None:
  devices = mesh.devices.size
  if batch_size % devices:
    lower, upper = batch_size // devices * devices, -(-batch_size // devices) * devices
    options = f"{lower} or {upper}" if lower else f"{upper}"
    raise UserError(f"The {what} {batch_size} does not split evenly over the {devices} devices of this "
                    f"job: each device must get the same share of every batch. Use a multiple of "
                    f"{devices} (e.g. {options}), or fewer devices with --num-devices.")


def _place(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  # From a callback, so that on several hosts each process supplies only its own devices' shards.
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def shard_dataset(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """A host array on the mesh, split along its first axis, padded to a multiple of the devices with rows that
  are never indexed (indices come from the real examples only)."""
  if pad := -len(array) % mesh.devices.size:
    array = np.concatenate([array, np.zeros((pad, *array.shape[1:]), array.dtype)])
  return _place(array, NamedSharding(mesh, PartitionSpec(DATA_AXIS)))


def replicate(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """A host array that every process holds identically, copied to every device of the mesh."""
  return _place(array, replicated(mesh))


def shard_members(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """A host array [M, ...] of an ensemble's members, each device given its members' rows."""
  return _place(array, member_sharding(mesh))


def is_main_process() -> bool:
  """Only process 0 writes files and prints progress; the others compute."""
  return jax.process_index() == 0


def member_sharding(mesh: Mesh) -> NamedSharding:
  """For arrays with a leading member axis: each device holds its members."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))
