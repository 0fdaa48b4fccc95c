"""The one owner of the compiled programs: its layout decisions, and the init it compiles lightly on a CPU."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxmnist import models, parallel, programs
from jaxmnist.configs import PRESETS
from jaxmnist.optimizer import make_optimizer


@pytest.mark.parametrize("name", ["mlp3", "cnn_fast"])
def test_the_lightly_compiled_init_gives_the_parameters_of_the_default_compile(name):
  """Init compiles at LLVM level 1 on a CPU (docs/layout.md: 0.7 s instead of 1.9 s of a first cnn_fast run);
  that is only sound while the parameters stay bit-identical to XLA's default level."""
  config = PRESETS[name]
  run = programs.Programs(config, models.build_model(config.model), make_optimizer(config, 1), parallel.make_mesh(1))
  assert jax.default_backend() != "cpu" or programs.CPU_INIT_COMPILER_OPTIONS == {"xla_backend_optimization_level": 1}
  light = run.init()
  default = jax.jit(run._init_fn())(run._init_keys(), run.values)  # pylint: disable=protected-access
  for a, b in zip(jax.tree.leaves(light), jax.tree.leaves(default)):
    np.testing.assert_array_equal(a, b)


def test_the_layout_is_decided_once_for_training_and_evaluation():
  mesh = parallel.make_mesh(1)
  one = programs.Layout.of(PRESETS["tiny"], mesh)
  assert (one.num_members, one.spreads_members, one.splits_batches, one.eval_batch_size) == (0, False, False, 64)
  members = programs.Layout.of(dataclasses.replace(PRESETS["tiny"], seeds=(0, 1, 2)), mesh)
  # On a CPU the members run one after another, each with the whole evaluation batch.
  assert (members.members_at_once, members.eval_batch_size) == ((1, 64) if jax.default_backend() == "cpu"
                                                                 else (None, 22))
  assert members.describe().startswith("3 members on one device")


def test_correct_counts_are_the_argmax_of_the_logits():
  logits = np.array([[[0.1, 0.9], [0.8, 0.2]], [[0.6, 0.4], [0.7, 0.3]]])  # 2 members, 2 examples
  np.testing.assert_array_equal(programs.correct_counts(logits, np.array([1, 0])), [2, 1])
  # The mean of the probabilities, not a vote: example 0's mean probability of class 1 is 0.57.
  assert programs.ensemble_correct(logits, np.array([1, 0])) == 2
