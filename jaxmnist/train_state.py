"""The train state: built from the seed, or restored from a run's checkpoint (to resume, or to use the model).

Synopsis:
  from jaxmnist import train_state
  state = train_state.init_train_state(config, model, optimizer, mesh, image_shape)
  restored = train_state.restore_train_state(config, model, optimizer, mesh, workdir)   # --resume
  trained = train_state.load_trained("runs/cnn-20261127-120000")
  logits = trained.apply(trained.variables, inputs, train=False)   # an ensemble's: the members' combined

`jaxmnist evaluate`, `predict`, `export` and `serve` use the model `load_trained` restores; a
checkpoint carries no device layout, so it restores onto any mesh (jaxmnist.checkpoint).
"""

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxmnist import checkpoint, ensemble, models, parallel, runs, steps
from jaxmnist.configs import Config
from jaxmnist.optimizer import make_optimizer
from jaxmnist.errors import UserError

IMAGE_SHAPE = (28, 28, 1)


def _init_fn(model, optimizer, image_shape):
  def init(key):
    return steps.create_train_state(model.init(key, jnp.zeros((1, *image_shape), jnp.float32)), optimizer)
  return init


def _seeded_init_fn(config: Config, model, optimizer, image_shape):
  """`init(keys)`: one state from its key, or an ensemble's states stacked, each from its own key exactly
  as alone (jax.random draws the same numbers under vmap)."""
  init = _init_fn(model, optimizer, image_shape)
  return jax.vmap(init) if config.seeds else init


def _init_keys(config: Config) -> jax.Array:
  if not config.seeds:
    return steps.init_key(config.seed)
  return jnp.stack([steps.init_key(seed) for seed in config.seeds])


def init_train_state(config: Config, model, optimizer, mesh: Mesh, image_shape) -> steps.TrainState:
  """Parameters and optimizer state, created on the mesh in one jit: replicated on every device, or an
  ensemble's members spread over them (parallel.state_sharding).

  (Eager init would compile every initialiser op separately: ~0.8 s of start-up.)
  """
  init = _seeded_init_fn(config, model, optimizer, image_shape)
  return jax.jit(init, out_shardings=parallel.state_sharding(config, mesh),
                 compiler_options=run_once_compiler_options())(_init_keys(config))


def run_once_compiler_options() -> dict | None:
  """XLA options for a program that runs once: on the CPU, LLVM's lighter optimisation (level 1 of 3).

  The initialisers' random-number code is long, and LLVM spent 1.9 s of a 16 s `jaxmnist train
  --model=cnn_fast` optimising it (0.7 s at level 1) for a program that then runs for 4 ms. Level 1
  gave bit-identical parameters for cnn_fast, cnn_995, cnn_wide and mlp3 (level 0 did not);
  experiments/bench_speed.py measures the first run. Other backends keep their defaults.
  """
  return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


def abstract_train_state(config: Config, model, optimizer, mesh: Mesh, image_shape):
  """The TrainState's shapes and dtypes, placed as training places them: the target a checkpoint restores onto."""
  shapes = jax.eval_shape(_seeded_init_fn(config, model, optimizer, image_shape), _init_keys(config))
  return checkpoint.abstract_like(shapes, parallel.state_sharding(config, mesh))


def restore_train_state(config: Config, model, optimizer, mesh, workdir: Path,
                        image_shape=IMAGE_SHAPE) -> checkpoint.Restored:
  """The newest intact checkpoint of the run in `workdir`, placed on `mesh` (replicated)."""
  abstract = abstract_train_state(config, model, optimizer, mesh, image_shape)
  return checkpoint.restore_latest(Path(workdir) / checkpoint.CHECKPOINT_DIR, abstract)


def check_resumable(run_dir) -> None:
  """UserError unless the run is unfinished and has a checkpoint to continue from."""
  run_dir = Path(run_dir)
  summary = runs.read_summary(run_dir)
  if summary and summary.get("status") == "finished":
    raise UserError(f"{run_dir} already finished all {summary['epochs_completed']} epochs; there is nothing to "
                    f"resume. Evaluate it with `jaxmnist evaluate {run_dir}`, or start a new run.")
  if not checkpoint.saved_epochs(run_dir / checkpoint.CHECKPOINT_DIR):
    raise UserError(f"{run_dir} has no complete checkpoint to resume from (it stopped before its first save). "
                    f"Start it again without --resume, in a new --workdir.")


@dataclasses.dataclass(frozen=True)
class Trained:
  run_dir: Path
  config: Config
  model: Any  # a flax module; apply(variables, inputs_BxHxWxC, train=False) -> logits
  variables: dict  # {"params": ..., "batch_stats": ...} for model.apply, in eval mode
  epoch: int  # the epoch of the checkpoint
  checkpoint_line: str  # which checkpoint, and any damaged one passed over
  data: dict  # what the run trained on: {"source": ..., "sha256": ...}

  @property
  def seeds(self) -> tuple[int, ...]:
    """An ensemble's member seeds (its variables are stacked along a leading axis); () for one model."""
    return self.config.seeds

  @property
  def apply(self):
    """`apply(variables, inputs, train=False) -> logits`: the model's, or for an ensemble the members'
    combined (jaxmnist.ensemble). Every use of a trained run (evaluate, predict, serve, export) calls this."""
    return ensemble.ensemble_apply(self.model.apply) if self.seeds else self.model.apply


def load_trained(run_dir, mesh=None) -> Trained:
  """Restores the newest intact checkpoint of a run onto `mesh` (default: all local devices)."""
  run_dir = Path(run_dir)
  config = runs.read_config(run_dir)
  mesh = mesh or parallel.make_mesh()
  model = models.build_model(config.model, config.init)
  optimizer = make_optimizer(config, steps_per_epoch_=1)  # the state's structure, not its schedule
  restored = restore_train_state(config, model, optimizer, mesh, run_dir)
  return Trained(run_dir=run_dir, config=config, model=model, variables=steps.eval_variables(restored.state),
                 epoch=restored.epoch, checkpoint_line=checkpoint.describe(restored), data=restored.data)
