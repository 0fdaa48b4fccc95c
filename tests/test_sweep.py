"""Sweeps (`--lr=0.05,0.1`): one member per value in one compiled program, each the model that value trains
alone; the run's table, evaluate, predict, serve and export choose the best member by validation.

The yardstick is the single run: tiny_sweep_cli_run trains `tiny` with `--lr=0.05,0.1` on the toy files that
tiny_cli_run trains with the preset's rate, 0.1, so its member 1 must be that run's model.
"""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest
from jax import export as jax_export

from jaxmnist import checkpoint, configs, report, serve, train, train_state
from jaxmnist.configs import PRESETS
from tests import serving
from tests.conftest import cli_output, make_separable

RTOL = 1e-5  # as for seeds (tests/test_ensemble.py): members run one after another, in one program


def _rows(run_dir, member=None):
  lines = report.read_metrics_csv(run_dir / "metrics.csv")
  return [line for line in lines if member is None or line["member"] == member]


@pytest.fixture(scope="module")
def sweep_run(tiny_sweep_cli_run):
  return tiny_sweep_cli_run.run_dir


def test_the_member_of_lr_0_1_is_the_run_of_lr_0_1_alone(sweep_run, tiny_sweep_cli_run, tiny_cli_run):
  member, alone = _rows(sweep_run, member=1), _rows(tiny_cli_run.run_dir)
  assert [line["learning_rate"] for line in member] == [0.1] * 3
  for line, row in zip(member, alone, strict=True):
    for name in ("train_loss", "train_accuracy", "valid_accuracy"):
      assert line[name] == pytest.approx(row[name], rel=RTOL), name
  summary = json.loads((sweep_run / "summary.json").read_text())
  single = json.loads((tiny_cli_run.run_dir / "summary.json").read_text())
  assert [m["learning_rate"] for m in summary["members"]] == [0.05, 0.1]
  assert abs(summary["members"][1]["test_accuracy"] - single["test_accuracy"]) <= 0.0005
  trained, one = train_state.load_trained(sweep_run, member=1), train_state.load_trained(tiny_cli_run.run_dir)
  for a, b in zip(jax.tree.leaves(trained.variables), jax.tree.leaves(one.variables), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=RTOL)
  assert trained.config == one.config  # the member's own config: what --lr=0.1 alone trains
  # ... and member 0 trained with its own rate: another model.
  assert _rows(sweep_run, member=0)[0]["train_loss"] != member[0]["train_loss"]
  out = tiny_sweep_cli_run.result.stdout
  assert "training 2 members (2 values of learning_rate)" in out


def test_the_run_says_its_members_values_and_sorts_its_table_by_validation(sweep_run, tiny_sweep_cli_run):
  with open(sweep_run / "metrics.csv") as f:
    assert f.readline().strip() == "epoch,member,seed,learning_rate,train_loss,train_accuracy,valid_accuracy,seconds"
  config = json.loads((sweep_run / "config.json").read_text())
  assert config["sweep"] == {"learning_rate": [0.05, 0.1]} and config["learning_rate"] == 0.05
  summary = json.loads((sweep_run / "summary.json").read_text())
  valid = [m["valid_accuracy"] for m in summary["members"]]
  assert summary["best_member"] == int(np.argmax(valid))  # the first of a tie
  assert summary["test_accuracy"] == summary["members"][summary["best_member"]]["test_accuracy"]
  assert "ensemble_test_accuracy" not in summary  # members of other rates are no ensemble
  table = tiny_sweep_cli_run.result.stdout.split("sorted by validation accuracy", 1)[1].splitlines()
  listed = [float(line.split()[3]) for line in table[2:4]]
  assert listed == sorted(valid, reverse=True) and "<- best" in table[2] and "test" not in table[1]


def test_a_grid_of_onecycle_weight_decay_smoothing_and_seeds_trains_each_member_as_alone(tiny_mnist, tmp_path):
  # Through the whole training path (each member's split, its schedule's length, its rows): SGD with momentum
  # under fastai's one-cycle, the peak, the decay (0 in some members: the same update as none) and the
  # smoothing (0 in some: the one-hot target) swept together, times the seeds 0 and 2: 16 members.
  config = dataclasses.replace(PRESETS["tiny"], schedule="onecycle", momentum=0.9, learning_rate=0.01, epochs=2,
                               checkpoint_every=0, seeds=(0, 2))
  sweep = dataclasses.replace(config, sweep=(("learning_rate", (0.01, 0.03)), ("weight_decay", (0.0, 5e-4)),
                                             ("label_smoothing", (0.0, 0.1))))
  together = train.train_and_evaluate(sweep, tmp_path / "sweep", tiny_mnist, progress=False)
  members = configs.member_configs(sweep)
  assert [(m.learning_rate, m.weight_decay, m.label_smoothing, m.seed) for m in members[::15]] == [
      (0.01, 0, 0, 0), (0.03, 5e-4, 0.1, 2)]
  for k in (0, 15):  # all values at their first and seed 0; at their last (0 under a structure built for more), seed 2
    alone = train.train_and_evaluate(members[k], tmp_path / str(k), tiny_mnist, progress=False)
    for line, row in zip(_rows(tmp_path / "sweep", k), _rows(tmp_path / str(k)), strict=True):
      for name in ("train_loss", "train_accuracy", "valid_accuracy"):
        assert line[name] == pytest.approx(row[name], rel=RTOL, abs=1e-6), (k, name)
    assert together["members"][k]["test_accuracy"] == alone["test_accuracy"]
  losses = [m["train_loss"] for m in together["members"]]
  assert len(set(losses)) == 16  # every value and seed changed its member's training


def test_evaluate_adds_each_members_test_accuracy_and_reports_the_best(sweep_run, tiny_sweep_cli_run, capsys):
  idx_dir = tiny_sweep_cli_run.idx_dir
  out = cli_output(capsys, "evaluate", sweep_run, "--source=dir", f"--data-dir={idx_dir}", "--unverified")
  summary = json.loads((sweep_run / "summary.json").read_text())
  evaluation = json.loads((sweep_run / "evaluation.json").read_text())
  best = summary["best_member"]
  assert evaluation["best_member"] == best
  assert evaluation["test"]["accuracy"] == summary["test_accuracy"]
  assert [m["test_accuracy"] for m in evaluation["members"]] == [m["test_accuracy"] for m in summary["members"]]
  header = out.split("sorted by validation accuracy", 1)[1].splitlines()[1]
  assert header.split()[-2:] == ["validation", "test"]
  assert "evaluation of a sweep of 2 x mlp3 on MNIST" in out


def test_predict_serve_and_export_use_the_best_member_or_the_one_asked_for(sweep_run, tiny_cli_run, tmp_path,
                                                                           capsys):
  path = tmp_path / "seven.png"
  path.write_bytes(serving.drawing(serving.SEVEN))
  summary = json.loads((sweep_run / "summary.json").read_text())
  best = json.loads(cli_output(capsys, "predict", sweep_run, path, "--json"))
  assert best["member"] == summary["best_member"] and best["members"] == 0
  one = json.loads(cli_output(capsys, "predict", sweep_run, path, "--json", "--member=1"))
  alone = json.loads(cli_output(capsys, "predict", tiny_cli_run.run_dir, path, "--json"))
  np.testing.assert_allclose(one["predictions"][0]["probabilities"], alone["predictions"][0]["probabilities"],
                             atol=1e-5)
  assert "member 1: seed 0, learning_rate 0.1" in cli_output(capsys, "export", sweep_run, "--member=1",
                                                       f"--out={tmp_path / 'm1.jaxexport'}")
  images = make_separable(8, seed=4)[0][..., None]
  logits = jax_export.deserialize(bytearray((tmp_path / "m1.jaxexport").read_bytes())).call(images)
  single = train_state.load_trained(tiny_cli_run.run_dir)
  np.testing.assert_allclose(np.asarray(logits), single.apply(single.variables, images / 255.0, train=False),
                             rtol=1e-4, atol=1e-4)
  health = serve.health(train_state.load_trained(sweep_run, member=1))
  assert health["members"] == 0 and "member 1: seed 0, learning_rate 0.1" in health["checkpoint"]


@pytest.mark.parametrize("args, says", [
    (("train", "--epochs=1,2"), "invalid int value: '1,2': a list, and this setting cannot be swept (only --lr"),
    (("train", "--model=tiny,cnn"), "--model=tiny,cnn: a list, and only numbers can be swept"),
    (("train", "--lr=0.1,0.2", "--valid-fraction=0"), "a sweep needs a validation split to choose its best member"),
    (("train", "--lr=0.1,0.1"), "the sweep of learning_rate repeats a value"),
    (("train", "--momentum=0.5,1.5"), "momentum must lie in [0, 1), got 1.5"),
])
def test_a_sweep_that_cannot_train_is_refused_in_one_paragraph(jaxmnist_in_process, args, says):
  result = jaxmnist_in_process(*args)
  assert result.returncode == 2 and says in result.stderr and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("args", [("trian",), ("serve", ".", "--port=80,81")])
def test_only_trains_number_flags_hear_about_sweeps(jaxmnist_in_process, args):
  # argparse's other refusals may hold a comma too (its list of choices); none of them is a sweep.
  result = jaxmnist_in_process(*args)
  assert result.returncode == 2 and "cannot be swept" not in result.stderr, result.stderr


def test_member_flags_that_name_no_member_are_refused(jaxmnist_in_process, sweep_run, tiny_cli_run, tmp_path):
  image = tmp_path / "seven.png"
  image.write_bytes(serving.drawing(serving.SEVEN))
  result = jaxmnist_in_process("predict", sweep_run, image, "--member=2")
  assert result.returncode == 2 and "has members 0 to 1; give one of them, or best" in result.stderr
  result = jaxmnist_in_process("export", tiny_cli_run.run_dir, "--member=best")
  assert result.returncode == 2 and "trained one model, not several. Drop --member." in result.stderr
  shutil.copytree(sweep_run, tmp_path / "unfinished")
  (tmp_path / "unfinished" / "summary.json").unlink()
  result = jaxmnist_in_process("predict", tmp_path / "unfinished", image)
  assert result.returncode == 2 and "its best member is not known: give --member=K (0 to 1)" in result.stderr


def test_a_sweep_resumes_bit_identical(sweep_run, tiny_sweep_cli_run, tmp_path, capsys):
  shutil.copytree(sweep_run, tmp_path / "run")
  (tmp_path / "run" / "summary.json").unlink()
  for epoch in checkpoint.saved_epochs(tmp_path / "run" / checkpoint.CHECKPOINT_DIR)[1:]:
    shutil.rmtree(tmp_path / "run" / checkpoint.CHECKPOINT_DIR / str(epoch))
  out = cli_output(capsys, "train", f"--resume={tmp_path / 'run'}", "--source=dir",
             f"--data-dir={tiny_sweep_cli_run.idx_dir}", "--unverified", "--no-progress", "--no-evaluate")
  assert "resuming from the checkpoint of epoch 1 of 3" in out
  def without_seconds(run):
    return [{k: v for k, v in line.items() if k != "seconds"} for line in _rows(run)]
  assert without_seconds(tmp_path / "run") == without_seconds(sweep_run)
  resumed, uninterrupted = train_state.load_trained(tmp_path / "run"), train_state.load_trained(sweep_run)
  for a, b in zip(jax.tree.leaves(resumed.variables), jax.tree.leaves(uninterrupted.variables), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_accuracy_figure_draws_a_line_per_value_with_a_band_over_seeds():
  config = dataclasses.replace(PRESETS["tiny"], seeds=(0, 1, 2), sweep=(("learning_rate", (0.05, 0.1)),))
  labels = configs.member_labels(config)
  sums = {"loss_sum": np.arange(6.0), "correct": np.full(6, 5.0), "count": np.full(6, 10.0)}
  rows = [report.epoch_row(epoch, sums, np.arange(6) + epoch, 10, 1.0, labels) for epoch in (1, 2, 3)]
  ax = report.accuracy_figure(rows, "sweep", None).axes[0]
  assert [line.get_label() for line in ax.lines] == ["validation, learning_rate 0.05 (3 seeds)",
                                                     "validation, learning_rate 0.1 (3 seeds)"]
  np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.5, 0.6, 0.7])  # members 3-5: (4, 5, 6) / 10 at epoch 1
  assert len(ax.collections) == 2  # a band per value
