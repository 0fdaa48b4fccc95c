"""Every compiled program of a run, and the layout decisions they share, made in one place.

Synopsis:
  layout = programs.Layout.of(config, mesh)            # needs no data: checks the batch before it is fetched
  run = programs.Programs(config, model, optimizer, mesh)
  arrays = programs.place_data(mnist, config, mesh)    # the images, labels and splits on the devices
  state = run.init()                                   # or checkpoint.restore_latest(..., run.abstract_state())
  state, sums = run.train_epoch(state, arrays["images"], arrays["labels"], arrays["train_indices"], epoch)
  logits = run.logits(variables, arrays["images"], arrays["valid_indices"])   # [M, C]; an ensemble's [K, M, C]

Three programs, each compiled once per shape: the init, the epoch (one `lax.scan` of steps.train_step)
and the eval-mode logits of a split. Counting correct answers is the argmax of those logits, on the host.
For many members (config.seeds, config.sweep) every array of the state and every split carries a leading member
axis, and each program is the one-model program mapped over the members (jaxmnist.ensemble.over_members).
`jaxmnist train` and `jaxmnist evaluate` build the same object, so they place and batch alike.
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxmnist import augment, configs, data, ensemble, optimizer as optimizers, parallel, steps
from jaxmnist.configs import IMAGE_SHAPE, Config


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a run's arrays live and how its programs map over members and devices."""

  mesh: Mesh
  num_members: int  # 0: one model
  # An ensemble's members spread over the devices, each device training whole members with no
  # communication: when the members divide evenly. Otherwise every batch is split over the devices.
  spreads_members: bool
  # How the members are mapped (ensemble.over_members): None, all at once (vmap), on GPUs and TPUs and when
  # spread; 1, one after another, on a CPU. On a 2-core CPU one cnn_fast epoch took 14.6 s per member alone,
  # 17.1, 18.9 and 18.7 s per member with 2, 5 and 10 vmapped (experiments/bench_ensemble.py).
  members_at_once: int | None
  # The evaluation batch of each member: vmapped members share config.eval_batch_size examples a step (one
  # model's memory), rounded up to split evenly over the devices. Accuracy does not depend on it.
  eval_batch_size: int

  @classmethod
  def of(cls, config: Config, mesh: Mesh) -> "Layout":
    members = configs.num_members(config)
    spreads = bool(members) and mesh.size > 1 and members % mesh.size == 0
    at_once = 1 if members and not spreads and jax.default_backend() == "cpu" else None
    per_member = -(-config.eval_batch_size // (members if members and at_once is None else 1))
    return cls(mesh=mesh, num_members=members, spreads_members=spreads, members_at_once=at_once,
               eval_batch_size=-(-per_member // mesh.size) * mesh.size)

  @property
  def splits_batches(self) -> bool:
    """Whether each batch is split over the devices (one device needs no sharding constraints)."""
    return self.mesh.size > 1 and not self.spreads_members

  @property
  def batch_sharding(self) -> NamedSharding | None:
    return parallel.batch_sharding(self.mesh) if self.splits_batches else None

  @property
  def state_sharding(self) -> NamedSharding:
    """The train state: replicated, or an ensemble's members spread over the devices."""
    return parallel.member_sharding(self.mesh) if self.spreads_members else parallel.replicated(self.mesh)

  def check_batch(self, batch_size: int) -> None:
    """UserError when every batch is split over the devices and `batch_size` does not split evenly."""
    if self.splits_batches:
      parallel.check_divisible(batch_size, self.mesh)

  def describe(self) -> str:
    """Which parallelism a run uses, for its log and summary.json."""
    members, devices = self.num_members, self.mesh.size
    if devices == 1:
      if not members:
        return "one model on one device"
      how = "vmapped" if self.members_at_once is None else "one after another (a CPU)"
      return f"{members} members on one device, {how}, in one compiled program"
    if self.spreads_members:
      return f"{members} members spread over {devices} devices ({members // devices} each, no communication)"
    whose = f"all {members} members" if members else "the model"
    why = f"; {members} members do not divide evenly over {devices} devices" if members else ""
    return f"data parallel: every batch of {whose} split over {devices} devices{why}"

  def machine(self) -> dict:
    """Where the run ran, for summary.json."""
    return {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
            "num_devices": int(self.mesh.size), "parallelism": self.describe(),
            "num_processes": jax.process_count(), "jax_version": jax.__version__}

  def members(self, fn, in_axes):
    """`fn` over an ensemble's members (the arguments whose in_axes entry is 0); one model's `fn` as it is."""
    return ensemble.over_members(fn, in_axes, self.members_at_once) if self.num_members else fn


# The init program runs once, for milliseconds, but its random-number code is long: on a 2-core CPU LLVM spent
# 1.9 s of a first `jaxmnist train --model=cnn_fast` optimising it at its default level 3 and 0.7 s at level 1,
# with bit-identical parameters (tests/test_programs.py; level 0 was not identical). Other backends: defaults.
CPU_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


class Programs:
  """The compiled programs of (config, model, optimizer, mesh): init, one epoch, the logits of a split."""

  def __init__(self, config: Config, model, optimizer, mesh: Mesh):
    self.config, self.model, self.optimizer = config, model, optimizer
    self.layout = layout = Layout.of(config, mesh)
    members = configs.member_configs(config) if layout.num_members else []
    # The seed is an argument, not a constant in the program: every seed of a config shares one compiled
    # epoch, and XLA's persistent cache serves it to the next process. So are a sweep's values, [K] each.
    self.seed = jnp.asarray([m.seed for m in members] or config.seed)
    self.values = {name: jnp.asarray([getattr(m, name) for m in members], jnp.float32) for name, _ in config.sweep}
    train_epoch = partial(steps.train_epoch, batch_size=config.batch_size, apply_fn=model.apply, optimizer=optimizer,
                          sharding=layout.batch_sharding, label_smoothing=config.label_smoothing,
                          augment=augment.build_augment(config.augment))

    def one_epoch(state, images, labels, indices, epoch, seed, values):
      smoothing = {"label_smoothing": values["label_smoothing"]} if "label_smoothing" in values else {}
      return train_epoch(state, images, labels, indices, steps.epoch_key(seed, epoch), **smoothing)
    self._epoch = jax.jit(layout.members(one_epoch, (0, None, None, 0, None, 0, 0)), donate_argnums=0)
    logits = partial(steps.eval_logits, batch_size=layout.eval_batch_size, apply_fn=model.apply,
                     sharding=layout.batch_sharding)
    # Replicated out: every process of a multi-host job reads the logits it counts.
    self._logits = jax.jit(layout.members(logits, (0, None, 0)), out_shardings=parallel.replicated(mesh))

  def _init_fn(self):
    """`init(keys, values)`: one state from its key, or the members' stacked, each exactly as alone (jax.random
    draws the same numbers under vmap), a sweep member's with its own values in the optimizer state."""
    def init(key, values):
      variables = self.model.init(key, jnp.zeros((1, *IMAGE_SHAPE), jnp.float32))
      state = steps.create_train_state(variables, self.optimizer)
      return state._replace(opt_state=optimizers.with_values(state.opt_state, values))
    return jax.vmap(init) if self.layout.num_members else init

  def _init_keys(self) -> jax.Array:
    keys = [steps.init_key(seed) for seed in np.atleast_1d(np.asarray(self.seed))]
    return jnp.stack(keys) if self.layout.num_members else keys[0]

  def init(self) -> steps.TrainState:
    """Parameters and optimizer state, created on the mesh in one jit (eager init would compile every
    initialiser op on its own: ~0.8 s of start-up)."""
    options = CPU_INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(self._init_fn(), out_shardings=self.layout.state_sharding,
                   compiler_options=options)(self._init_keys(), self.values)

  def abstract_state(self):
    """The TrainState's shapes and dtypes, placed as `init` places them: what a checkpoint restores onto."""
    shapes = jax.eval_shape(self._init_fn(), self._init_keys(), self.values)
    sharding = self.layout.state_sharding
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

  def train_epoch(self, state, images, labels, train_indices, epoch, seed=None):
    """One epoch: `(state, sums)`, sums of loss, correct and count ([K] each for an ensemble). The state is
    donated. `seed` runs the same program for another seed (benchmarks over seeds compile once)."""
    return self._epoch(state, images, labels, train_indices, epoch, self.seed if seed is None else seed, self.values)

  def logits(self, variables, images_NxHxWxC, indices_M) -> jax.Array:
    """Eval-mode logits [M, C] of the examples `indices_M`; an ensemble's [K, M, C] from indices [K, M]."""
    return self._logits(variables, images_NxHxWxC, indices_M)


def place_data(mnist: data.Mnist, config: Config, mesh: Mesh) -> dict:
  """The images and labels on the devices, split along the examples, and the splits' indices, as the
  programs of (config, mesh) read them; the validation labels on the host.

  An ensemble's indices are stacked [K, ...], each member's split from its own seed (the test split is
  every member's); with the members spread over the devices, every device holds all the images and its
  members' indices.
  """
  splits = [data.split_train_valid(len(mnist.train_labels), config.valid_fraction, member.seed)
            for member in configs.member_configs(config)]
  test_indices = np.arange(len(mnist.test_labels), dtype=np.int32)
  place_examples, place_indices = parallel.shard_dataset, parallel.replicate
  if not configs.num_members(config):
    (train_indices, valid_indices), = splits
  else:
    train_indices, valid_indices = (np.stack(indices) for indices in zip(*splits))
    test_indices = np.stack([test_indices] * len(splits))
    if Layout.of(config, mesh).spreads_members:
      place_examples, place_indices = parallel.replicate, parallel.shard_members
  return {"images": place_examples(mnist.train_images, mesh), "labels": place_examples(mnist.train_labels, mesh),
          "test_images": place_examples(mnist.test_images, mesh), "train_indices": place_indices(train_indices, mesh),
          "valid_indices": place_indices(valid_indices, mesh), "test_indices": place_indices(test_indices, mesh),
          "valid_labels": mnist.train_labels[valid_indices]}  # on the host, where the logits are counted


def correct_counts(logits, labels_M) -> int | np.ndarray:
  """How many examples the logits classify correctly: an int, or each member's [K] for logits [K, M, C]
  (labels_M: the examples' labels, [K, M] for members with their own splits)."""
  return np.sum(np.argmax(logits, -1) == labels_M, axis=-1)


def ensemble_correct(member_logits_KxMxC, labels_M) -> int:
  """How many examples the ensemble (the mean of the members' probabilities) classifies correctly."""
  return int(np.sum(np.argmax(np.asarray(ensemble.combine(member_logits_KxMxC)), -1) == labels_M))
