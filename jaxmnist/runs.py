"""A run directory: its rules (a run is never overwritten), its default name, and its files read back.

Synopsis:
  runs.prepare_workdir(Path("runs/cnn"))                   # UserError if it already holds a run
  config = runs.read_config("runs/cnn-20261127-120000")   # checked as the flags are
  summary = runs.read_summary("runs/cnn-20261127-120000")

Every command that takes a RUN_DIR starts here (free of jax): a folder that is not a run gets one paragraph.
"""

import datetime
import json
from pathlib import Path

from jaxmnist import configs, datasets, report
from jaxmnist.configs import Config
from jaxmnist.errors import UserError

RUN_FILES = ("config.json", "metrics.csv", "summary.json", "accuracy.png")


def default_workdir(config: Config) -> str:
  """runs/MODEL[-DATASET][-xMEMBERS]-DATE-TIME"""
  dataset = "" if config.dataset == datasets.DEFAULT else f"-{config.dataset}"
  members = f"-x{configs.num_members(config)}" if configs.num_members(config) else ""
  return f"runs/{config.model}{dataset}{members}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def prepare_workdir(workdir: Path) -> None:
  """Creates the run directory, refusing one that already holds a run (never overwrite results)."""
  if workdir.exists() and not workdir.is_dir():
    raise UserError(f"--workdir {workdir} is a file, not a directory. Choose another path.")
  existing = [name for name in RUN_FILES if (workdir / name).exists()]
  if existing:
    raise UserError(f"--workdir {workdir} already holds a run ({', '.join(existing)}); jaxmnist never "
                    f"overwrites results. Choose a new --workdir, or leave it out for a fresh one.")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create --workdir {workdir}: {e.strerror}. Choose a writable path.") from e


def read_config(run_dir) -> Config:
  """The Config in run_dir/config.json; UserError if run_dir is not a jaxmnist run."""
  run_dir = Path(run_dir)
  if not run_dir.is_dir():
    raise UserError(f"{run_dir} is not a directory. Give the run directory that `jaxmnist train` printed "
                    f"(runs/MODEL-DATE-TIME by default).")
  path = run_dir / "config.json"
  try:
    fields = json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f"{run_dir} is not a jaxmnist run: it has no config.json. Give the run directory that "
                    f"`jaxmnist train` printed.") from None
  except (OSError, ValueError) as e:
    raise UserError(f"{path} is not a readable jaxmnist config ({e}). Give another run directory.") from e
  return configs.config_from_dict(fields, str(path))


def check_dataset_flag(run_dir, config: Config, flag: str | None) -> None:
  """UserError when --dataset (None: not given) names another dataset than the run was trained on."""
  if flag is None or flag == config.dataset:
    return
  asked, trained_on = datasets.get(flag), datasets.get(config.dataset)
  raise UserError(f"{run_dir} was trained on {trained_on.title} (dataset {trained_on.name}), but --dataset={flag} "
                  f"asks for {asked.title}. A run is evaluated on the dataset it was trained on: drop --dataset "
                  f"(its config.json says {trained_on.name}), or give a run trained on {asked.title}.")


def chosen_member(run_dir, config: Config, flag: str | None) -> int | None:
  """Which member predict, serve and export use (--member=best|K): None for one model or a seeds-only ensemble;
  by default a sweep's best by validation (summary.json's), since members of other values are no ensemble."""
  members = configs.num_members(config)
  if flag is None and not config.sweep:
    return None
  if not members:
    raise UserError(f"--member={flag}: {run_dir} trained one model, not several. Drop --member.")
  if flag not in (None, "best"):
    if not flag.isdigit() or int(flag) >= members:
      raise UserError(f"--member={flag}: {run_dir} has members 0 to {members - 1}; give one of them, or best "
                      f"(the best by validation accuracy).")
    return int(flag)
  summary = read_summary(run_dir) or {}
  if "members" not in summary or summary["members"][0].get("valid_accuracy") is None:
    raise UserError(f"{run_dir} has no summary.json with its members' validation accuracies (it has not finished, "
                    f"or held out no validation split), so its best member is not known: give --member=K (0 to "
                    f"{members - 1}), or finish the run with `jaxmnist train --resume {run_dir}`.")
  return report.best_member(summary["members"])


def read_summary(run_dir) -> dict | None:
  try:
    return json.loads((Path(run_dir) / "summary.json").read_text())
  except (OSError, ValueError):
    return None
