"""The training loop: a whole run works in-process on tiny data, and its report reuses what it holds."""

import json
import logging

import jax
import numpy as np

from jaxmnist import configs, evaluate, parallel, runs, train
from jaxmnist.configs import PRESETS
from jaxmnist.optimizer import torch_onecycle_schedule
from tests import training_outcomes


def test_train_and_evaluate_in_process(tmp_path):
  summary = training_outcomes.tiny_run(tmp_path / "run")
  assert summary["status"] == "finished" and summary["epochs_completed"] == 3
  training_outcomes.assert_clears("tiny_run", summary)
  assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary


def test_the_report_after_training_uses_the_model_and_logits_in_memory(tmp_path, caplog):
  """`jaxmnist train`'s report restores nothing and compiles no program of its own: the logits program
  compiles once for the validation split and once for the test set, and the report reads those logits."""
  config, mnist, workdir = PRESETS["tiny"], training_outcomes.tiny_mnist(), tmp_path / "run"
  mesh = parallel.make_mesh()
  train.check_and_prepare(config, workdir, mesh, resume=False)
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    summary, evaluation = train.train_checked(config, workdir, mnist, mesh, progress=False, with_report=True)
  compiled = [r.getMessage() for r in caplog.records if "Finished XLA compilation of jit(eval_logits)" in r.getMessage()]
  assert len(compiled) == 2, compiled
  assert evaluation["test"]["accuracy"] == summary["test_accuracy"]
  assert evaluation["validation"]["accuracy"] == summary["valid_accuracy"]
  assert json.loads((workdir / "evaluation.json").read_text()) == evaluation
  # The same report from the checkpoint, as `jaxmnist evaluate` writes it, agrees.
  again = evaluate.evaluate_run(workdir, mnist, say=lambda *_: None)
  assert again["test"]["confusion"] == evaluation["test"]["confusion"]


def test_a_run_saved_with_the_retired_loop_field_still_reads_back(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({**configs.config_to_dict(PRESETS["tiny"]), "loop": "python"}))
  assert runs.read_config(tmp_path) == PRESETS["tiny"]


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
