"""Every flag of the `jaxmnist` command and of `python -m jaxmnist.train`, and the Config they describe.

Synopsis:
  args = flags.build_parser().parse_args(["train", "--model=cnn"])     # the `jaxmnist` command
  args = flags.parse_train_args(["--model=mlp3", "--epochs=20"])       # `python -m jaxmnist.train`
  config = flags.config_from_args(args)                                # the preset, changed by the flags

Free of jax, so `jaxmnist --help` and a mistyped flag answer at once.
"""

import argparse
import dataclasses
from pathlib import Path

from jaxmnist import configs, data, datasets, runs
from jaxmnist.configs import PRESETS, Config
from jaxmnist.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
  """Refuses abbreviated (`--data=idx`) and unknown flags with a UserError: a typo is one paragraph and exit 2."""

  def __init__(self, **kwargs):
    super().__init__(allow_abbrev=False, **kwargs)

  def error(self, message):
    if self.prog.endswith("train") and "," in message.partition(" value: '")[2]:  # "invalid int value: '10,20'"
      message += f": a list, and this setting cannot be swept ({ONLY_SWEEPS})"
    raise UserError(f"{message}. `{self.prog} --help` lists the flags; flags cannot be abbreviated.")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--dataset", help=f"{' or '.join(datasets.DATASETS)} (default {datasets.DEFAULT}; a run "
                      "that is resumed or evaluated uses the dataset it was trained on)")
  parser.add_argument("--source", default="auto", help="data source: auto, or for mnist one of "
                      f"{', '.join(datasets.MNIST.sources)}, for fashion_mnist one of "
                      f"{', '.join(datasets.FASHION_MNIST.sources)}")
  parser.add_argument("--data-dir", help="a directory with the dataset's four IDX files (gzipped or not); "
                      "when given, it is the source (unless --source says otherwise)")
  parser.add_argument("--unverified", action="store_true",
                      help="with --source=dir: accept IDX files that are not the canonical dataset")
  parser.add_argument("--cache-dir", help=f"where verified data is cached, a folder per dataset (default "
                      f"${data.CACHE_ENV_VAR} or ~/.cache/jaxmnist)")


def seeds_from_flag(text: str) -> tuple[int, ...]:
  """--seeds=3 -> (0, 1, 2); --seeds=3,7,11 -> (3, 7, 11)."""
  try:
    numbers = tuple(int(part) for part in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is neither a number of members (--seeds=5) nor a list of "
                                     f"seeds (--seeds=3,7,11)") from None
  if "," in text:
    return numbers
  if numbers[0] < 1:
    raise argparse.ArgumentTypeError(f"an ensemble needs at least one member, got {text!r}")
  return tuple(range(numbers[0]))


SWEEP_FLAGS = "--lr, --weight-decay, --momentum and --label-smoothing"
ONLY_SWEEPS = f"only {SWEEP_FLAGS} take comma lists (a sweep: one member per value), and --seeds a list of seeds"


def values_from_flag(text: str) -> float | tuple[float, ...]:
  """--lr=0.1 -> 0.1; --lr=0.05,0.1 -> (0.05, 0.1): a sweep, one member per value."""
  try:
    values = tuple(float(part) for part in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor a list of them, e.g. 0.05,0.1") from None
  return values if len(values) > 1 else values[0]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model", help=f"preset: {', '.join(PRESETS)} (default mlp3)")
  parser.add_argument("--epochs", type=int, help="override the preset's epochs (the post: 400)")
  parser.add_argument("--lr", "--learning-rate", dest="learning_rate", type=values_from_flag, metavar="LR[,LR...]",
                      help=f"learning rate (a schedule's peak); lists of {SWEEP_FLAGS} sweep: a member per value")
  parser.add_argument("--batch-size", type=int, help="training batch size (the post: 256)")
  parser.add_argument("--valid-fraction", type=float, help="share of the 60k held out (the post: 0.2)")
  parser.add_argument("--seed", type=int, help="seed of the split, the initialisation and the shuffling")
  parser.add_argument("--seeds", type=seeds_from_flag, metavar="N|S1,S2,...", help="an ensemble: N members "
                      "(seeds 0..N-1) or one per seed listed, trained together in one compiled program; member k "
                      "is the model --seed=k trains alone")
  parser.add_argument("--init", help="torch (PyTorch nn.Linear's default, the preset) or flax")
  parser.add_argument("--optimizer", help=f"one of {', '.join(configs.OPTIMIZERS)} (the post: sgd)")
  parser.add_argument("--momentum", type=values_from_flag, help="SGD momentum (the post: 0)")
  parser.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
  parser.add_argument("--schedule", help=f"learning-rate schedule: {', '.join(configs.SCHEDULES)} (the post: "
                      "constant)")
  parser.add_argument("--weight-decay", type=values_from_flag, help="weight decay (the post: 0)")
  parser.add_argument("--label-smoothing", type=values_from_flag, help="label smoothing (the post: 0)")
  parser.add_argument("--augment", help=f"on-device augmentation: {', '.join(configs.AUGMENTATIONS)}, or several "
                      "joined by '+', applied in that order (e.g. flip+shift+erase)")
  parser.add_argument("--checkpoint-every", type=int, help="save a checkpoint every N epochs (also at the end "
                      "and on Ctrl-C; default per preset; 0: never, so no resume and no evaluation)")
  parser.add_argument("--keep-checkpoints", type=int, help="how many of the newest checkpoints to keep (3)")
  parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest intact "
                      "checkpoint, with its own config; the result equals an uninterrupted run's")
  add_data_arguments(parser)
  parser.add_argument("--workdir", help="run directory (default runs/MODEL-DATE-TIME)")
  parser.add_argument("--num-devices", type=int, help="train on the first N devices (default: all, "
                      "data parallel; the global batch is split evenly over them)")
  parser.add_argument("--distributed", action="store_true", help="join a multi-host job first "
                      "(jax.distributed.initialize(); automatic when JAX_COORDINATOR_ADDRESS is set)")
  parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluation report after training")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _with_run_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory that `jaxmnist train` wrote")
  return parser


def _with_member(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  parser.add_argument("--member", metavar="best|K", help="one member of a sweep or an ensemble: best by validation "
                      "(a sweep's default) or its index K (an ensemble's default: all members)")
  return parser


def build_parser(prog: str = "jaxmnist") -> argparse.ArgumentParser:
  """The `jaxmnist` command's parser: one subcommand each for train, evaluate, predict, export and serve."""
  parser = ArgumentParser(prog=prog, description="Train, evaluate, use and export MNIST models.")
  commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
  commands.required = True

  add_train_arguments(commands.add_parser("train", help="train a model (or --resume a run)"))

  add_data_arguments(_with_run_dir(commands.add_parser("evaluate", help="write a run's evaluation report")))

  predict = _with_member(_with_run_dir(commands.add_parser("predict", help="classify images of your own (PNG, JPEG)")))
  predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files, one digit each")
  predict.add_argument("--json", action="store_true", help="print machine-readable JSON")

  export = _with_member(_with_run_dir(commands.add_parser("export", help="write the model as a jax.export artifact")))
  export.add_argument("--out", help="where to write it (default RUN_DIR/model.jaxexport)")
  export.add_argument("--onnx", action="store_true", help="also write an ONNX model beside it (needs "
                      "pip install 'jaxmnist[onnx]')")

  serve = _with_member(_with_run_dir(commands.add_parser(
      "serve", help="a page to draw digits on, and the model reading them (needs pip install 'jaxmnist[serve]')")))
  serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this "
                     "machine only; 0.0.0.0 lets others on the network in)")
  serve.add_argument("--port", type=int, default=8000, help="the port (default 8000; 0: any free port)")
  return parser


def parse_train_args(argv, prog: str = "python -m jaxmnist.train") -> argparse.Namespace:
  parser = ArgumentParser(
      prog=prog, description="Train one of the post's MNIST models (or any preset, on MNIST or Fashion-MNIST). "
      "Defaults reproduce the post's setup.")
  add_train_arguments(parser)
  return parser.parse_args(argv)


def _preset(name: str) -> Config:
  if name not in PRESETS:
    raise UserError(f"Unknown model {name!r}. Choose one of: {', '.join(PRESETS)}, e.g. --model=mlp3.")
  return PRESETS[name]


def _flag(name: str) -> str:
  return "--lr" if name == "learning_rate" else "--" + name.replace("_", "-")


def _given(args: argparse.Namespace) -> dict:
  """The Config fields the flags set: a flag's dest is its field's name (--model names a preset instead)."""
  return {field.name: getattr(args, field.name) for field in dataclasses.fields(Config)
          if field.name != "model" and getattr(args, field.name, None) is not None}


def _with_sweep(args: argparse.Namespace) -> dict:
  """The fields the flags set, those given as lists becoming the sweep (the field holds its first value)."""
  given = _given(args)
  listed = [f"{_flag(name)}={value}" for name, value in {**given, "model": args.model}.items()
            if isinstance(value, str) and "," in value]
  if listed:
    raise UserError(f"{'; '.join(listed)}: a list, and only numbers can be swept: {ONLY_SWEEPS}. Models, "
                    f"optimizers and schedules each train in a run of their own. {configs.FLAGS_FIX}")
  sweep = tuple((name, value) for name, value in given.items() if isinstance(value, tuple) and name != "seeds")
  return {**given, **{name: values[0] for name, values in sweep}, **({"sweep": sweep} if sweep else {})}


def config_from_args(args: argparse.Namespace) -> Config:
  if args.resume:
    return resumed_config(args)
  given = _with_sweep(args)
  if "seeds" in given:
    if "seed" in given:
      raise UserError(f"--seed={args.seed} and --seeds={','.join(map(str, args.seeds))} both say which seeds to "
                      f"train; give one of them (--seeds lists every member's seed).")
    given["seed"] = given["seeds"][0]  # so that config.seed names the first member, as it names the one model
  return dataclasses.replace(_preset(args.model or "mlp3"), **given)


def resumed_config(args: argparse.Namespace) -> Config:
  """The config of the run in args.resume: flags may repeat it, or change only how it checkpoints."""
  run_dir = Path(args.resume)
  saved = runs.read_config(run_dir)
  given = _with_sweep(args)
  contradictions = [f"{_flag(name)}={value} (the run has {getattr(saved, name)})" for name, value in given.items()
                    if name not in configs.CHECKPOINT_FIELDS and value != getattr(saved, name)]
  if args.model is not None and _preset(args.model).model != saved.model:
    contradictions.append(f"--model={args.model} (the run trains {saved.model})")
  if args.workdir is not None and Path(args.workdir).resolve() != run_dir.resolve():
    contradictions.append(f"--workdir={args.workdir} (a resumed run continues in {run_dir})")
  if contradictions:
    raise UserError(f"--resume {run_dir} continues that run with its own config, but these flags contradict "
                    f"it: {'; '.join(contradictions)}. Drop them to resume, or start a new run without --resume.")
  return dataclasses.replace(saved, **{name: given[name] for name in configs.CHECKPOINT_FIELDS if name in given})
