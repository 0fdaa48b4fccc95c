"""A run directory after training: its config, its summary, and the model its newest checkpoint holds.

Synopsis:
  from jaxmnist import runs
  trained = runs.load_trained("runs/cnn-20261127-120000")
  logits = trained.model.apply(trained.variables, inputs, train=False)

`jaxmnist evaluate`, `predict`, `export` (and `train --resume`) all start here, so a directory that
is not a run, or a run without a checkpoint, gets the same one-paragraph error everywhere.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxmnist import checkpoint, datasets
from jaxmnist.configs import Config
from jaxmnist.errors import UserError

IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class Trained:
  run_dir: Path
  config: Config
  model: Any  # a flax module; apply(variables, inputs_BxHxWxC, train=False) -> logits
  variables: dict  # {"params": ..., "batch_stats": ...} for model.apply, in eval mode
  epoch: int  # the epoch of the checkpoint
  checkpoint_line: str  # which checkpoint, and any damaged one passed over
  data: dict  # what the run trained on: {"source": ..., "sha256": ...}


def read_config(run_dir) -> Config:
  """The Config in run_dir/config.json; UserError if run_dir is not a jaxmnist run."""
  run_dir = Path(run_dir)
  path = run_dir / "config.json"
  if not run_dir.is_dir():
    raise UserError(f"{run_dir} is not a directory. Give the run directory that `jaxmnist train` printed "
                    f"(runs/MODEL-DATE-TIME by default).")
  try:
    fields = json.loads(path.read_text())
    return Config(**fields)
  except FileNotFoundError:
    raise UserError(f"{run_dir} is not a jaxmnist run: it has no config.json. Give the run directory that "
                    f"`jaxmnist train` printed.") from None
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f"{path} is not a readable jaxmnist config ({e}). Give another run directory.") from e


def check_dataset_flag(run_dir, config: Config, flag: str | None) -> None:
  """UserError when --dataset (None: not given) names another dataset than the run was trained on."""
  if flag is None or flag == config.dataset:
    return
  asked, trained_on = datasets.get(flag), datasets.get(config.dataset)
  raise UserError(f"{run_dir} was trained on {trained_on.title} (dataset {trained_on.name}), but --dataset={flag} "
                  f"asks for {asked.title}. A run is evaluated on the dataset it was trained on: drop --dataset "
                  f"(its config.json says {trained_on.name}), or give a run trained on {asked.title}.")


def read_summary(run_dir) -> dict | None:
  try:
    return json.loads((Path(run_dir) / "summary.json").read_text())
  except (OSError, ValueError):
    return None


def check_resumable(run_dir) -> None:
  """UserError unless the run is unfinished and has a checkpoint to continue from."""
  run_dir = Path(run_dir)
  summary = read_summary(run_dir)
  if summary and summary.get("status") == "finished":
    raise UserError(f"{run_dir} already finished all {summary['epochs_completed']} epochs; there is nothing to "
                    f"resume. Evaluate it with `jaxmnist evaluate {run_dir}`, or start a new run.")
  if not checkpoint.saved_epochs(run_dir / checkpoint.CHECKPOINT_DIR):
    raise UserError(f"{run_dir} has no complete checkpoint to resume from (it stopped before its first save). "
                    f"Start it again without --resume, in a new --workdir.")


def load_trained(run_dir, mesh=None) -> Trained:
  """Restores the newest intact checkpoint of a run onto `mesh` (default: all local devices)."""
  from jaxmnist import models, parallel, steps, train  # pylint: disable=g-import-not-at-top

  run_dir = Path(run_dir)
  config = read_config(run_dir)
  mesh = mesh or parallel.make_mesh()
  model = models.build_model(config.model, config.init)
  optimizer = train.make_optimizer(config, steps_per_epoch_=1)  # the state's structure, not its schedule
  abstract = train.abstract_train_state(config, model, optimizer, mesh, IMAGE_SHAPE)
  restored = checkpoint.restore_latest(run_dir / checkpoint.CHECKPOINT_DIR, abstract)
  return Trained(run_dir=run_dir, config=config, model=model, variables=steps.eval_variables(restored.state),
                 epoch=restored.epoch, checkpoint_line=checkpoint.describe(restored), data=restored.data)
