"""A run's train state restored from its checkpoint: to resume, or as the trained model to use.

Synopsis:
  from jaxmnist import train_state
  restored = train_state.restore_train_state(programs, workdir)   # --resume (a new state: programs.init())
  trained = train_state.load_trained("runs/cnn-20261127-120000")
  logits = trained.apply(trained.variables, inputs, train=False)   # an ensemble's: the members' combined

`jaxmnist evaluate`, `predict`, `export` and `serve` use the model `load_trained` restores; a
checkpoint carries no device layout, so it restores onto any mesh (jaxmnist.checkpoint).
"""

import dataclasses
from pathlib import Path
from typing import Any

from jaxmnist import checkpoint, configs, ensemble, models, parallel, runs, steps
from jaxmnist.configs import Config
from jaxmnist.errors import UserError
from jaxmnist.optimizer import make_optimizer
from jaxmnist.programs import Programs


def restore_train_state(programs: Programs, workdir: Path) -> checkpoint.Restored:
  """The newest intact checkpoint of the run in `workdir`, placed as `programs` places a new state."""
  return checkpoint.restore_latest(Path(workdir) / checkpoint.CHECKPOINT_DIR, programs.abstract_state())


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
  programs: Programs | None = None  # its compiled programs, placed as it is: evaluate's logits

  @property
  def num_members(self) -> int:
    """An ensemble's or a sweep's members (its variables are stacked along a leading axis); 0 for one model."""
    return configs.num_members(self.config)

  @property
  def apply(self):
    """`apply(variables, inputs, train=False) -> logits`: the model's, or for an ensemble the members'
    combined (jaxmnist.ensemble). Every use of a trained run (evaluate, predict, serve, export) calls this."""
    return ensemble.ensemble_apply(self.model.apply) if self.num_members else self.model.apply


def load_trained(run_dir, mesh=None, member: int | None = None) -> Trained:
  """Restores the newest intact checkpoint of a run onto `mesh` (default: all local devices); with `member`,
  that member alone (runs.chosen_member), as the model its single config trains."""
  run_dir = Path(run_dir)
  config = runs.read_config(run_dir)
  model = models.build_model(config.model, config.init)
  optimizer = make_optimizer(config, steps_per_epoch_=1)  # the state's structure, not its schedule
  programs = Programs(config, model, optimizer, mesh or parallel.make_mesh())
  restored = restore_train_state(programs, run_dir)
  variables, line = steps.eval_variables(restored.state), checkpoint.describe(restored)
  if member is not None:
    label = configs.member_labels(config)[member]
    variables, config, programs = ensemble.member(variables, member), configs.member_configs(config)[member], None
    line += f"; member {member}: {', '.join(f'{name} {value:g}' for name, value in label.items() if name != 'member')}"
  return Trained(run_dir=run_dir, config=config, model=model, variables=variables, epoch=restored.epoch,
                 checkpoint_line=line, data=restored.data, programs=programs)
