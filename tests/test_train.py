"""The training loop: both loop structures agree, and a whole run works in-process on tiny data."""

import dataclasses
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmnist import configs, evaluate, loops, models, parallel, train, train_state
from jaxmnist.configs import PRESETS
from jaxmnist.errors import UserError
from jaxmnist.optimizer import make_optimizer, torch_onecycle_schedule
from tests import training_outcomes
from tests.conftest import make_separable


def _epoch_after(loop: str):
  config = dataclasses.replace(PRESETS["tiny"], model="mlp2", batch_size=16, loop=loop)
  model = models.build_model(config.model)
  optimizer = make_optimizer(config, 8)
  mesh = parallel.make_mesh()
  state = train_state.init_train_state(config, model, optimizer, mesh, (28, 28, 1))
  images, labels = make_separable(120)
  epoch = loops.make_epoch_fn(config, model.apply, optimizer, mesh)
  images, labels = jnp.asarray(images[..., None]), jnp.asarray(labels)
  train_indices = jnp.arange(100, dtype=jnp.int32)  # 100 = 6 batches of 16 + 4: a padded last batch
  for i in range(2):
    state, sums = epoch(state, images, labels, train_indices, i)
  return state, jax.device_get(sums)


def test_scan_and_python_loops_take_the_same_steps():
  scan_state, scan_sums = _epoch_after("scan")
  python_state, python_sums = _epoch_after("python")
  assert int(scan_state.step) == int(python_state.step) == 14
  for a, b in zip(jax.tree.leaves(scan_state.params), jax.tree.leaves(python_state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert scan_sums["count"] == python_sums["count"] == 100
  np.testing.assert_allclose(scan_sums["loss_sum"], python_sums["loss_sum"], rtol=1e-5)


@pytest.mark.parametrize("loop", configs.LOOPS)
def test_train_and_evaluate_in_process(tmp_path, loop):
  summary = training_outcomes.tiny_run(tmp_path / "run", loop=loop)
  assert summary["status"] == "finished" and summary["epochs_completed"] == 3
  training_outcomes.assert_clears("tiny_run", summary)
  assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary


def test_the_report_after_training_reuses_the_test_count_s_compiled_program(tmp_path, caplog):
  """Training counts its test set with the evaluation report's own jitted program (jaxmnist.evaluate.
  logits_program); the report that follows in the same process compiles only its validation split's."""
  summary = training_outcomes.tiny_run(tmp_path / "run")
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    evaluation = evaluate.evaluate_run(tmp_path / "run", training_outcomes.tiny_mnist(), say=lambda *_: None)
  compiled = [r.getMessage() for r in caplog.records if "Finished XLA compilation of jit(eval_logits)" in r.getMessage()]
  assert len(compiled) == 1, compiled  # the 120 validation examples; the 100 test examples' program was found
  assert evaluation["test"]["accuracy"] == summary["test_accuracy"]


def test_unknown_loop_is_a_user_error(tiny_mnist, tmp_path):
  config = dataclasses.replace(PRESETS["tiny"], loop="vmap")
  with pytest.raises(UserError, match="unknown loop 'vmap'"):
    train.train_and_evaluate(config, tmp_path / "run", tiny_mnist, progress=False)


def test_torch_onecycle_schedule_matches_torch_onecycle_lr_at_its_landmarks():
  """torch.optim.lr_scheduler.OneCycleLR(max_lr=0.01, total_steps=235), its defaults: the first step
  at max/25, the peak at step 0.3*235-1 = 69.5 (between steps 69 and 70), the last step at max/25/1e4."""
  schedule = torch_onecycle_schedule(235, 0.01)
  rates = np.array([float(schedule(i)) for i in range(235)])
  np.testing.assert_allclose(rates[0], 0.01 / 25, rtol=1e-5)  # float32
  np.testing.assert_allclose(rates[-1], 0.01 / 25 / 1e4, rtol=1e-4)
  assert rates.argmax() in (69, 70) and rates.max() > 0.0099
  assert np.all(np.diff(rates[:70]) > 0) and np.all(np.diff(rates[70:]) < 0)
  # Halfway up the cosine warm-up (step 34.75 of 69.5) the rate is the mean of the two ends.
  np.testing.assert_allclose(float(schedule(34.75)), (0.01 / 25 + 0.01) / 2, rtol=1e-5)
