"""`python -m jaxmnist.train` as a user runs it: a subprocess, on tiny IDX data, good and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import jax
import pytest

from jaxmnist import process, report, train_state
from tests import agreement
from tests.conftest import make_separable
from tests.test_interpret import assert_accuracy_picture

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd, cache_dir):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXMNIST_CACHE_DIR": str(cache_dir),
         "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  return subprocess.run([sys.executable, "-m", "jaxmnist.train", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def train_in_process(idx_dir, jaxmnist_in_process):
  """`jaxmnist train ARGS` (the flags of python -m jaxmnist.train) through the CLI's main, in this process."""
  def call(*args):
    return jaxmnist_in_process("train", "--no-progress", "--source=dir", f"--data-dir={idx_dir}", "--unverified",
                               *args)
  return call


@pytest.fixture
def cli(tmp_path, idx_dir):
  def call(*args, data=True):
    data_args = ("--source=dir", f"--data-dir={idx_dir}", "--unverified") if data else ()
    return run_cli("--no-progress", *data_args, *args, cwd=tmp_path, cache_dir=tmp_path / "cache")
  return call


def test_trains_tiny_data_and_writes_the_run_files(tiny_cli_run):
  # The session's `jaxmnist train --model=tiny --source=dir --data-dir=... --unverified --workdir=run` (conftest),
  # which it asserts exited 0: this file's own run of the same command would compile and train it again.
  result = tiny_cli_run.result
  assert "unverified" in result.stdout  # it says which data it used
  assert "validation accuracy" in result.stdout and "test accuracy" in result.stdout
  run = tiny_cli_run.run_dir
  rows = report.read_metrics_csv(run / "metrics.csv")
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert list(rows[0]) == list(report.METRIC_FIELDS)
  summary = json.loads((run / "summary.json").read_text())
  assert summary["status"] == "finished" and summary["data_verified"] is False
  assert summary["epochs_completed"] == 3  # (how well `tiny` learns: tests/test_train.py, in-process)
  assert json.loads((run / "config.json").read_text())["batch_size"] == 32
  # `tiny` trains mlp3 on MNIST('s format): its curves, and the post's line for mlp3.
  assert_accuracy_picture(run / "accuracy.png", rows, None)  # tiny: the post's net, not its recipe
  assert not list(run.glob(".*partial*"))


def test_valid_fraction_zero_trains_on_every_example_and_reports_no_validation(train_in_process, tmp_path):
  result = train_in_process("--model=tiny", "--valid-fraction=0", "--workdir=run")  # needs no process of its own
  assert result.returncode == 0, result.stderr
  assert "validation accuracy none (no validation split)" in result.stdout
  rows = report.read_metrics_csv(tmp_path / "run" / "metrics.csv")
  assert [r["valid_accuracy"] for r in rows] == [None, None, None]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["valid_accuracy"] is None and summary["status"] == "finished"
  assert_accuracy_picture(tmp_path / "run" / "accuracy.png", rows, None)  # no orange, no post line
  evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())  # the report skips validation
  assert evaluation["validation"] is None
  # Training's count and the report's, two programs, against this process's logits of the toy test set.
  trained = train_state.load_trained(tmp_path / "run")
  images, labels = make_separable(100, seed=1)  # write_idx_dir's test split
  logits = np.asarray(trained.programs.logits(trained.variables, images[..., None], np.arange(len(labels),
                                                                                           dtype=np.int32)))
  for what, accuracy in (("summary.json", summary["test_accuracy"]), ("evaluation.json", evaluation["test"]["accuracy"])):
    agreement.assert_same_count(agreement.correct_count(accuracy, len(labels)), logits, labels, what)


@pytest.mark.parametrize("args, message", [
    (("--model=resnet50",), "Unknown model 'resnet50'"),
    (("--lr=0",), "learning rate must be a positive number"),
    (("--lr=-0.1",), "learning rate must be a positive number"),
    (("--epochs=0",), "epochs must be at least 1"),
    (("--batch-size=0",), "batch size must be between 1 and"),
    (("--batch-size=481",), "batch size must be between 1 and the 480 training examples"),
    (("--valid-fraction=-0.1",), "must lie in [0, 1)"),
    (("--valid-fraction=1.5",), "must lie in [0, 1)"),
    (("--init=xavier",), "unknown init 'xavier'"),
    (("--schedule=warmup",), "unknown schedule 'warmup' (choose one of constant,"),
    (("--checkpoint-every=-1",), "--checkpoint-every must be a number of epochs >= 0 (0: never), got -1"),
    (("--keep-checkpoints=0",), "--keep-checkpoints must be at least 1, got 0"),
    # argparse would take these as --data-dir=idx and --epochs=3 without a word.
    (("--data=idx",), "unrecognized arguments: --data=idx"),
    (("--epoch=3",), "unrecognized arguments: --epoch=3"),
    (("--no-such-flag",), "flags cannot be abbreviated"),
])
def test_bad_settings_exit_2_with_one_paragraph(train_in_process, args, message):
  result = train_in_process("--model=tiny", *args)
  assert result.returncode == 2, result.stderr
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (("--lr=0",), "learning rate must be a positive number"),
    (("--data=idx",), "unrecognized arguments: --data=idx"),
])
def test_a_user_sees_exit_2_and_one_paragraph_from_the_process(cli, args, message):
  """The cases above run in this process for speed; these two go through a real process boundary."""
  result = cli("--model=tiny", *args)
  assert result.returncode == 2, result.stderr
  assert message in result.stderr and "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_data_dir_exits_2(jaxmnist_in_process, tmp_path):
  result = jaxmnist_in_process("train", "--no-progress", "--model=tiny", "--source=dir",
                               f"--data-dir={tmp_path / 'nowhere'}")
  assert result.returncode == 2
  assert "is not a readable directory" in result.stderr and "Traceback" not in result.stderr


def test_an_existing_run_is_never_overwritten(train_in_process, tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "metrics.csv").write_text("precious\n")
  result = train_in_process("--model=tiny", "--workdir=run")
  assert result.returncode == 2 and "already holds a run" in result.stderr
  assert (run / "metrics.csv").read_text() == "precious\n"


def test_nan_loss_stops_with_advice_and_keeps_metrics(train_in_process, tmp_path):
  result = train_in_process("--model=tiny", "--epochs=5", "--lr=1e9", "--workdir=run")
  assert result.returncode == 3, result.stdout + result.stderr
  assert "Training diverged" in result.stderr and "learning rate 1000000000.0" in result.stderr
  assert "--lr=1e+08" in result.stderr and "Traceback" not in result.stderr
  rows = report.read_metrics_csv(tmp_path / "run" / "metrics.csv")  # intact and parseable
  assert 1 <= len(rows) < 5
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["status"] == "diverged" and summary["epochs_completed"] == len(rows)


def _compiled_program_bytes(xla_dir: Path) -> int:
  return sum(p.stat().st_size for p in xla_dir.glob("*-cache"))


def test_compiled_program_cache_is_capped(cli, tmp_path, monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")  # the session's shared cache: this test needs its own
  # One `tiny` run compiles about 0.18 MB (2026-12-03, jax 0.10), its largest program 0.08 MB: past a cap of
  # 0.1 MB (a second run, more programs, would only add another process's start-up).
  monkeypatch.setenv("JAXMNIST_XLA_CACHE_MB", "0.1")
  result = cli("--model=tiny", "--epochs=1", "--workdir=run")
  assert result.returncode == 0, result.stderr
  cached = _compiled_program_bytes(tmp_path / "cache" / "xla")
  assert 0 < cached <= 0.1 * 2**20  # jax evicted the least recently used programs past the cap


@pytest.mark.parametrize("value, expect_cache", [("0", False), ("lots", None)])
def test_compiled_program_cache_setting(train_in_process, tmp_path, monkeypatch, value, expect_cache):
  # In this process: 0 leaves jax's settings as they are (a cache it opened would be tmp_path's, and show), and
  # a refusal comes before any.
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")  # the session's shared cache: this test needs its own
  monkeypatch.setenv("JAXMNIST_XLA_CACHE_MB", value)
  result = train_in_process("--model=tiny", "--epochs=1", "--no-evaluate", "--workdir=run")
  if expect_cache is None:  # not a number: one paragraph, exit 2, nothing trained
    assert result.returncode == 2 and "JAXMNIST_XLA_CACHE_MB='lots' is not a size" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "summary.json").exists()
  else:  # 0 turns the cache off
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "summary.json").is_file() and not (tmp_path / "cache" / "xla").exists()


def test_jaxs_own_compilation_cache_variable_is_followed(tmp_path, monkeypatch):
  """(The whole session relies on it too: its CLI processes share one cache through the variable.)"""
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "shared-xla"))
  try:
    process.enable_compilation_cache(tmp_path / "cache", limit_bytes=2**20)
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "shared-xla")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    process.enable_compilation_cache(tmp_path / "cache", limit_bytes=2**20)
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache" / "xla")
  finally:  # this process compiles without a persistent cache, as conftest set it
    jax.config.update("jax_compilation_cache_dir", None)
