"""The flags that set a Config field, each mapped to its field: `jaxmnist train` and `python -m jaxmnist.train`
alike, alone and all at once, over any preset. Pure Python: no jax, no training."""

import dataclasses

import pytest

from jaxmnist import flags
from jaxmnist.configs import PRESETS, Config

# field: (the flag as a user types it, the value the Config must get). Each value differs from mlp3's
# (the default preset) and from cnn_fast's, so a flag that set nothing would be seen.
FLAG_VALUES = {
    "epochs": ("--epochs=7", 7),
    "learning_rate": ("--lr=0.25", 0.25),
    "batch_size": ("--batch-size=64", 64),
    "valid_fraction": ("--valid-fraction=0.1", 0.1),
    "seed": ("--seed=5", 5),
    "init": ("--init=flax", "flax"),
    "optimizer": ("--optimizer=adamw", "adamw"),
    "momentum": ("--momentum=0.9", 0.9),
    "nesterov": ("--nesterov", True),
    "schedule": ("--schedule=cosine", "cosine"),
    "weight_decay": ("--weight-decay=0.0005", 0.0005),
    "label_smoothing": ("--label-smoothing=0.05", 0.05),
    "augment": ("--augment=affine", "affine"),
    "dataset": ("--dataset=fashion_mnist", "fashion_mnist"),
    "checkpoint_every": ("--checkpoint-every=0", 0),
    "keep_checkpoints": ("--keep-checkpoints=1", 1),
}

PARSERS = {
    "jaxmnist train": lambda argv: flags.build_parser().parse_args(["train", *argv]),
    "python -m jaxmnist.train": flags.parse_train_args,
}


def _config(parser: str, *argv):
  return flags.config_from_args(PARSERS[parser](list(argv)))


def test_every_flag_that_sets_a_field_is_in_this_table():
  # --seeds sets seed too (its first member's), and cannot be given with --seed: tested on its own below.
  flag_fields = set(vars(flags.parse_train_args([]))) & {field.name for field in dataclasses.fields(Config)}
  assert set(FLAG_VALUES) | {"seeds"} == flag_fields - {"model"}  # --model names a preset, not a field's value


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("flag, seeds", [("--seeds=3", (0, 1, 2)), ("--seeds=1", (0,)), ("--seeds=3,7,11", (3, 7, 11)),
                                         ("--seeds=5,", None), ("--seeds=0", None), ("--seeds=two", None)])
def test_seeds_name_an_ensemble_by_its_size_or_its_seeds(parser, flag, seeds):
  if seeds is None:
    with pytest.raises(flags.UserError, match="argument --seeds"):
      _config(parser, "--model=cnn_fast", flag)
    return
  assert _config(parser, "--model=cnn_fast", flag) == dataclasses.replace(PRESETS["cnn_fast"], seeds=seeds,
                                                                          seed=seeds[0])


def test_seed_and_seeds_together_are_refused():
  with pytest.raises(flags.UserError, match="give one of them"):
    _config("jaxmnist train", "--seed=1", "--seeds=3")


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("preset", ["mlp3", "cnn_fast"])
@pytest.mark.parametrize("field", FLAG_VALUES)
def test_a_flag_sets_its_field_and_nothing_else(parser, preset, field):
  flag, value = FLAG_VALUES[field]
  assert getattr(PRESETS[preset], field) != value
  assert _config(parser, f"--model={preset}", flag) == dataclasses.replace(PRESETS[preset], **{field: value})


@pytest.mark.parametrize("parser", PARSERS)
def test_all_flags_at_once(parser):
  config = _config(parser, "--model=cnn_fast", *(flag for flag, _ in FLAG_VALUES.values()))
  assert config == dataclasses.replace(PRESETS["cnn_fast"], **{field: v for field, (_, v) in FLAG_VALUES.items()})


def test_without_flags_each_preset_keeps_its_own_recipe():
  assert _config("jaxmnist train") == PRESETS["mlp3"]  # the post's setup is the default
  for name, preset in PRESETS.items():
    assert _config("jaxmnist train", f"--model={name}") == preset


def test_lr_has_a_long_name_too():
  assert _config("jaxmnist train", "--learning-rate=0.125").learning_rate == 0.125
