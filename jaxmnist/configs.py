"""Presets: the post's three models with its exact hyperparameters, plus a tiny one for tests.

Synopsis:
  from jaxmnist.configs import PRESETS
  config = dataclasses.replace(PRESETS["mlp3"], epochs=20)
  configs.validate_config(config)       # UserError naming every field that cannot train
  configs.config_from_dict(json.loads(text), "run/config.json")   # a config read back, checked the same way

Free of jax: the command line lists presets and choices without loading it.
"""

import dataclasses
import itertools
import math
import typing

from jaxmnist import datasets
from jaxmnist.errors import UserError

# The values each string field may take, kept here so that the flags' help can name them without jax.
# tests/test_layout.py checks that AUGMENTATIONS and MODEL_NAMES equal augment.AUGMENTATIONS and models.MODELS.
INIT_SCHEMES = ("torch", "flax")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle", "onecycle_torch", "cosine")
AUGMENTATIONS = ("none", "shift", "affine", "flip", "erase")  # the base names; a config may join them with "+"
MODEL_NAMES = ("linear", "mlp2", "mlp3", "cnn", "cnn_wide", "resnet", "cnn_mid", "cnn_fast")
IMAGE_SHAPE = (28, 28, 1)  # MNIST's and Fashion-MNIST's: height, width, channels
# Fields that change no result: a resumed run may change them (--checkpoint-every, --keep-checkpoints).
CHECKPOINT_FIELDS = ("checkpoint_every", "keep_checkpoints")
# Fields that runs saved before they were retired still hold; reading them back ignores them. "loop" chose a
# Python loop over one jitted step instead of the scan: the same updates, now always the scan.
RETIRED_FIELDS = ("loop",)
# The fields a sweep may list values of (--lr=0.05,0.1): numbers the compiled program takes as arrays, so the
# members share it (the optimizer's through optax.inject_hyperparams). A schedule's peak is its learning rate.
SWEEPABLE = ("learning_rate", "weight_decay", "momentum", "label_smoothing")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a training run; saved as config.json in the run directory."""

  model: str  # a key of jaxmnist.models.MODELS
  learning_rate: float  # the post: plain SGD; the peak rate for onecycle, the start for cosine
  epochs: int = 400  # the post trains every model for 400 epochs
  batch_size: int = 256  # the post's mini_batch_size
  valid_fraction: float = 0.2  # the post holds out a random 20% of the 60k; 0 trains on all 60k (no validation)
  seed: int = 0  # drives the split, the initialisation and the shuffling
  init: str = "torch"  # "torch": nn.Linear's uniform(+-1/sqrt(fan_in)); "flax": lecun_normal, zero bias
  # Evaluation chunk: any value gives the same accuracy; 250 divides 10,000 and 12,000 and suits a CPU's cache.
  eval_batch_size: int = 250
  # Recipes beyond the post (the post's presets keep these defaults: plain SGD, constant rate).
  optimizer: str = "sgd"  # sgd | adam | adamw
  momentum: float = 0.0  # sgd only
  adam_b1: float = 0.9  # adam and adamw: the decay rates of the moment estimates (optax's defaults)
  adam_b2: float = 0.999
  nesterov: bool = False  # sgd only, with momentum > 0
  # constant | onecycle (fastai's fit_one_cycle) | onecycle_torch (torch's OneCycleLR defaults) | cosine
  schedule: str = "constant"
  weight_decay: float = 0.0  # decoupled for adamw; added to the gradient (L2) for sgd and adam
  label_smoothing: float = 0.0
  # none | shift | affine | flip | erase, or several joined by "+", applied in that order on the device
  augment: str = "none"
  # Checkpoints (they change no result): every N epochs, at the end and on Ctrl-C; the newest k kept.
  checkpoint_every: int = 25
  keep_checkpoints: int = 3
  # mnist or fashion_mnist (jaxmnist.datasets); runs saved before the field existed trained on mnist.
  dataset: str = "mnist"
  # An ensemble: one member per seed, all trained in one compiled program (jaxmnist.ensemble). Member k
  # is the model that `seed=seeds[k]` trains alone. Empty: one model, of `seed`.
  seeds: tuple[int, ...] = ()
  # A sweep: ((field, (value, ...)), ...) of SWEEPABLE fields, one member per value (the grid of several
  # fields, and of the seeds), in one compiled program. The field itself holds the first value.
  sweep: tuple[tuple[str, tuple[float, ...]], ...] = ()


def config_to_dict(config: Config) -> dict:
  """The config as config.json and summary.json hold it (the seeds a list, the sweep {field: [values]})."""
  return {**dataclasses.asdict(config), "seeds": list(config.seeds),
          "sweep": {name: list(values) for name, values in config.sweep}}


def member_configs(config: Config) -> list[Config]:
  """The single-model config of each member: what `--seed=s --lr=v ...` would train alone. A grid: the swept
  values in the order given (the first field outermost), then the seeds."""
  names = [name for name, _ in config.sweep]
  return [dataclasses.replace(config, seed=s, seeds=(), sweep=(), **dict(zip(names, values)))
          for values in itertools.product(*(values for _, values in config.sweep))
          for s in config.seeds or (config.seed,)]


def num_members(config: Config) -> int:
  """How many models the run trains at once: 0 for one model (neither --seeds nor a sweep)."""
  return len(member_configs(config)) if config.seeds or config.sweep else 0


def member_labels(config: Config) -> list[dict]:
  """What tells each member apart, for metrics.csv, summary.json and the tables: its seed and swept values."""
  return [{"member": k, "seed": member.seed, **{name: getattr(member, name) for name, _ in config.sweep}}
          for k, member in enumerate(member_configs(config))]


PRESETS = {
    "linear": Config(model="linear", learning_rate=0.01),
    "mlp2": Config(model="mlp2", learning_rate=0.001),
    "mlp3": Config(model="mlp3", learning_rate=0.01),
}
# Beyond the post: modern recipes (experiments/recipes.py measures them; README has the table).
# Adam(W) with fastai's one-cycle schedule, label smoothing, BatchNorm in the CNNs.
PRESETS["cnn"] = Config(  # >= 99.0% test in under 30 s on 2 CPU cores, compile included
    model="cnn", learning_rate=3e-3, epochs=2, batch_size=128, optimizer="adam", schedule="onecycle",
    label_smoothing=0.1, checkpoint_every=1)
PRESETS["cnn_wide"] = dataclasses.replace(  # aims at 99.5% test: a wider net, shifts, 12 epochs
    PRESETS["cnn"], model="cnn_wide", epochs=12, augment="shift")
PRESETS["mlp3_modern"] = dataclasses.replace(  # the post's mlp3 architecture, a modern recipe, 20 epochs
    PRESETS["mlp3"], optimizer="adamw", learning_rate=3e-3, schedule="onecycle", weight_decay=1e-4,
    label_smoothing=0.1, augment="shift", epochs=20, checkpoint_every=5)
# The fastest public MNIST recipe we know (tuomaso/train_mnist_fast: 99.04% test in one epoch), as it is:
# its net, Adam with betas (0.7, 0.9), torch's OneCycleLR, batch 256. experiments/bench_fast.py races it.
PRESETS["cnn_fast"] = Config(
    model="cnn_fast", learning_rate=0.01, epochs=1, optimizer="adam", adam_b1=0.7, adam_b2=0.9,
    schedule="onecycle_torch", checkpoint_every=1)
# 99.5% in minutes: the same net for 10 epochs, with shifts and label smoothing (experiments/sweep_995.py).
PRESETS["cnn_995"] = dataclasses.replace(PRESETS["cnn_fast"], epochs=10, augment="shift", label_smoothing=0.1)
# Fashion-MNIST in 10 minutes of a 2-core CPU, at the one-cycle peak a sweep chose (docs/results.md).
PRESETS["cnn_fashion"] = dataclasses.replace(PRESETS["cnn"], model="cnn_mid", epochs=11, learning_rate=0.012,
                                             augment="flip+shift")
# Seconds on a CPU, for tests and smoke runs: its 3 epochs learn the toy set for 24 seeds (experiments/test_margins.py).
PRESETS["tiny"] = dataclasses.replace(PRESETS["mlp3"], model="mlp3", epochs=3, batch_size=32,
                                      learning_rate=0.1, eval_batch_size=64, checkpoint_every=1)


@dataclasses.dataclass(frozen=True)
class PostResult:
  """Accuracies the post printed after 400 epochs of PyTorch training."""

  valid: float
  test: float
  note: str = ""


POST_RESULTS = {
    "linear": PostResult(valid=0.9126, test=0.9165),
    "mlp2": PostResult(valid=0.91, test=0.9201, note="the post says 'around 91%' for validation"),
    "mlp3": PostResult(valid=0.9845, test=0.9713,
                       note="the post's test line evaluates `simple_net_4`, not the model it trained"),
}


# What a run may change and still be the post's set-up (how long, the seeds and split, how it runs and saves).
_BESIDE_THE_RECIPE = ("epochs", "seed", "seeds", "valid_fraction", "eval_batch_size", *CHECKPOINT_FIELDS)


def post_result(config: Config) -> PostResult | None:
  """The post's numbers for a run of its own set-up on MNIST; None for another recipe or dataset. Judged from
  the config alone (a resumed run has no preset name): `tiny` is mlp3 with another rate and batch, so gets none."""
  if config.dataset != datasets.DEFAULT or config.model not in POST_RESULTS:
    return None
  post = PRESETS[config.model]  # the post's models are presets of their own name
  as_post = dataclasses.replace(config, **{name: getattr(post, name) for name in _BESIDE_THE_RECIPE})
  return POST_RESULTS[config.model] if as_post == post else None


def _unknown(what: str, value, choices) -> str:
  return f"unknown {what} {value!r} (choose one of {', '.join(choices)})"


def augment_problem(augment: str) -> str | None:
  """Why `augment` names no augmentation, in one phrase; None when it does: "none", or names joined by "+"."""
  parts = augment.split("+")
  joinable = [name for name in AUGMENTATIONS if name != "none"]
  if any(part not in AUGMENTATIONS for part in parts):
    return (f"unknown augmentation {augment!r} (choose one of {', '.join(AUGMENTATIONS)}, or several of "
            f"{', '.join(joinable)} joined by '+', e.g. flip+shift+erase)")
  if len(parts) > 1 and "none" in parts:
    return f"augmentation {augment!r} joins none to others (give none alone, or drop it)"
  repeated = [part for part in dict.fromkeys(parts) if parts.count(part) > 1]
  if repeated:
    return f"augmentation {augment!r} names {', '.join(repeated)} more than once (each part at most once)"
  return None


def config_problems(config: Config) -> list[str]:
  """What in `config` cannot train, one phrase each; empty when it can. Needs no data."""
  choices = (("model", config.model, MODEL_NAMES), ("init", config.init, INIT_SCHEMES),
             ("optimizer", config.optimizer, OPTIMIZERS), ("schedule", config.schedule, SCHEDULES),
             ("dataset", config.dataset, datasets.DATASETS))
  problems = [_unknown(what, value, names) for what, value, names in choices if value not in names]
  augment = augment_problem(config.augment)
  checks = [
      (config.learning_rate > 0 and math.isfinite(config.learning_rate),
       f"the learning rate must be a positive number, got {config.learning_rate}"),
      (config.epochs >= 1, f"epochs must be at least 1, got {config.epochs}"),
      (0 <= config.valid_fraction < 1,
       f"the validation fraction must lie in [0, 1) (0: train on all examples), got {config.valid_fraction}"),
      (config.batch_size >= 1,
       f"the batch size must be between 1 and the number of training examples, got {config.batch_size}"),
      (augment is None, augment),
      (0 <= config.adam_b1 < 1 and 0 <= config.adam_b2 < 1,
       f"the Adam betas must lie in [0, 1), got {config.adam_b1} and {config.adam_b2}"),
      (0 <= config.momentum < 1, f"momentum must lie in [0, 1), got {config.momentum}"),
      (config.weight_decay >= 0, f"weight decay must be >= 0, got {config.weight_decay}"),
      (0 <= config.label_smoothing < 1, f"label smoothing must lie in [0, 1), got {config.label_smoothing}"),
      (config.eval_batch_size >= 1, f"the evaluation batch size must be at least 1, got {config.eval_batch_size}"),
      (config.checkpoint_every >= 0,
       f"--checkpoint-every must be a number of epochs >= 0 (0: never), got {config.checkpoint_every}"),
      (config.keep_checkpoints >= 1, f"--keep-checkpoints must be at least 1, got {config.keep_checkpoints}"),
      (len(set(config.seeds)) == len(config.seeds), f"the seeds of an ensemble must differ (two equal seeds "
       f"train the same model twice), got {','.join(map(str, config.seeds))}"),
  ]
  problems += [message for fine, message in checks if not fine]
  return problems + sweep_problems(config)


def sweep_problems(config: Config) -> list[str]:
  """What in a sweep cannot train: a field that cannot be swept, a repeated value, no validation split to pick
  the best member by, and any member's own problem."""
  if not config.sweep:
    return []
  names = [name for name, _ in config.sweep]
  problems = [f"{name} cannot be swept (only {', '.join(SWEEPABLE)} can)" for name in names if name not in SWEEPABLE]
  problems += [f"the sweep of {name} repeats a value (two equal values train the same model twice), got "
               f"{','.join(map(str, values))}" for name, values in config.sweep if len(set(values)) < len(values)]
  if config.valid_fraction == 0:
    problems.append("a sweep needs a validation split to choose its best member honestly (never by test "
                    "accuracy): give --valid-fraction > 0, e.g. 0.2")
  return problems or list(dict.fromkeys(p for member in member_configs(config) for p in config_problems(member)))


FLAGS_FIX = "Fix the flags and run again (`python -m jaxmnist.train --help` lists them)."


def validate_config(config: Config) -> None:
  """Raises UserError, with the fix, for a config that cannot train (flags, or a preset)."""
  problems = config_problems(config)
  if problems:
    raise UserError("Invalid settings: " + "; ".join(problems) + ". " + FLAGS_FIX)


def check_batch_fits(config: Config, num_examples: int) -> None:
  """UserError when the batch is larger than the training split that `num_examples` leave."""
  num_train = num_examples - int(num_examples * config.valid_fraction)
  if config.batch_size > num_train:
    raise UserError(f"Invalid settings: the batch size must be between 1 and the {num_train} training examples, "
                    f"got {config.batch_size}. " + FLAGS_FIX)


_TYPE_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def _type_problem(name: str, value, kind) -> str | None:
  if name == "sweep":  # {field: [numbers]}; [] as dataclasses.asdict writes no sweep
    fits = value == [] or isinstance(value, dict) and all(isinstance(values, list) and values and all(
        _type_problem("value", v, float) is None for v in values) for values in value.values())
    return None if fits else f"sweep must map fields to lists of numbers, got {value!r}"
  if typing.get_origin(kind) is tuple:  # seeds: a JSON list of whole numbers
    fits = isinstance(value, list) and all(_type_problem(name, v, int) is None for v in value)
    return None if fits else f"{name} must be a list of whole numbers, got {value!r}"
  if kind in (int, float):  # JSON has one kind of number; bool is an int to Python, not to a person
    fits = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
  else:
    fits = isinstance(value, kind)
  return None if fits else f"{name} must be {_TYPE_NAMES[kind]}, got {value!r}"


def config_from_dict(fields, where: str) -> Config:
  """The Config that `fields` (a config.json's contents) describe, checked as the flags are: UserError, naming
  `where`, for a field that is missing, unknown, of the wrong type or out of range."""
  if not isinstance(fields, dict):
    raise UserError(f"{where} is not a jaxmnist config: it holds {type(fields).__name__}, not the settings "
                    f"of a run. Give the run directory that `jaxmnist train` wrote.")
  fields = {name: value for name, value in fields.items() if name not in RETIRED_FIELDS}
  hints = typing.get_type_hints(Config)
  known = {f.name: f for f in dataclasses.fields(Config)}
  problems = [f"unknown field {name!r}" for name in fields if name not in known]
  problems += [f"field {name!r} is missing" for name, f in known.items()
               if name not in fields and f.default is dataclasses.MISSING]
  problems += [p for name, value in fields.items() if name in known
               for p in [_type_problem(name, value, hints[name])] if p]
  if not problems:
    if "sweep" in fields:
      fields = {**fields, "sweep": [(name, tuple(values)) for name, values in dict(fields["sweep"]).items()]}
    config = Config(**{name: tuple(value) if isinstance(value, list) else value for name, value in fields.items()})
    problems = config_problems(config)
  if problems:
    raise UserError(f"{where} holds settings jaxmnist cannot use: {'; '.join(problems)}. It is the config "
                    f"`jaxmnist train` wrote for the run: restore it, or give another run directory.")
  return config
