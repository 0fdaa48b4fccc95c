"""Checkpoints and resume, as a user meets them: the `jaxmnist` CLI in subprocesses, Ctrl-C, kill -9,
a damaged checkpoint, another device count, and every bad `--resume`.

The yardstick is an uninterrupted run of the same config: a resumed run must end with the same
parameters bit for bit, the same metrics.csv rows (all but the wall-clock seconds) and the same test
accuracy.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmnist import checkpoint, report, train_state
from tests import training_outcomes
from tests.test_cli import REPO_ROOT

EPOCHS = 120  # tiny epochs take ~10 ms: enough of them that a signal lands mid-run
EVERY = 5
EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"


def _env(tmp_path, xla_flags=""):
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAXMNIST_CACHE_DIR": str(tmp_path / "cache"),
          "XLA_FLAGS": xla_flags, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _train_args(idx_dir, *extra):
  return [sys.executable, "-m", "jaxmnist.cli", "train", "--no-progress", "--no-evaluate", "--source=dir",
          f"--data-dir={idx_dir}", "--unverified", *extra]


def _start(tmp_path, idx_dir, *extra, xla_flags=""):
  return subprocess.Popen(_train_args(idx_dir, *extra), cwd=tmp_path, env=_env(tmp_path, xla_flags),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(tmp_path, idx_dir, *extra, xla_flags=""):
  return subprocess.run(_train_args(idx_dir, *extra), cwd=tmp_path, env=_env(tmp_path, xla_flags),
                        capture_output=True, text=True, timeout=300, check=False)


def _wait_for(condition, process, timeout=120.0, poll=0.0005):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if condition():
      return True
    if process.poll() is not None:
      return False
    time.sleep(poll)
  return False


def _has_checkpoint(run_dir: Path):
  folder = run_dir / checkpoint.CHECKPOINT_DIR
  return lambda: folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def _save_in_progress(run_dir: Path):
  folder = run_dir / checkpoint.CHECKPOINT_DIR
  return lambda: folder.is_dir() and any(checkpoint.TMP_SUFFIX in p.name for p in folder.iterdir())


def _rows_without_seconds(run_dir: Path):
  return [{k: v for k, v in row.items() if k != "seconds"} for row in report.read_metrics_csv(run_dir / "metrics.csv")]


def _assert_same_run(run_dir: Path, reference: Path):
  assert _rows_without_seconds(run_dir) == _rows_without_seconds(reference)
  summary, expected = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
  assert summary["test_accuracy"] == expected["test_accuracy"]
  trained, uninterrupted = train_state.load_trained(run_dir), train_state.load_trained(reference)
  assert trained.epoch == uninterrupted.epoch == EPOCHS
  for a, b in zip(jax.tree.leaves(trained.variables), jax.tree.leaves(uninterrupted.variables), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit for bit


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("uninterrupted")
  from tests.conftest import write_idx_dir  # pylint: disable=g-import-not-at-top

  idx_dir = write_idx_dir(tmp / "idx")
  result = _run(tmp, idx_dir, "--model=tiny", f"--epochs={EPOCHS}", f"--checkpoint-every={EVERY}",
                "--workdir=run")
  assert result.returncode == 0, result.stderr
  return tmp / "run", idx_dir


@pytest.fixture(scope="module")
def interrupted(uninterrupted):
  """The same run, stopped by Ctrl-C once it has saved two checkpoints; tests resume copies of it."""
  reference, idx_dir = uninterrupted
  tmp = reference.parent
  process = _start(tmp, idx_dir, "--model=tiny", f"--epochs={EPOCHS}", f"--checkpoint-every={EVERY}",
                   "--workdir=stopped")
  folder = tmp / "stopped" / checkpoint.CHECKPOINT_DIR
  assert _wait_for(lambda: len(checkpoint.saved_epochs(folder)) >= 2, process, poll=0.01)
  process.send_signal(signal.SIGINT)
  _, err = process.communicate(timeout=120)
  return tmp / "stopped", process.returncode, err


@pytest.fixture
def stopped_copy(interrupted, tmp_path):
  shutil.copytree(interrupted[0], tmp_path / "run")
  return tmp_path / "run"


def test_ctrl_c_saves_and_resume_is_bit_identical(uninterrupted, interrupted, stopped_copy, tmp_path):
  reference, idx_dir = uninterrupted
  _, returncode, err = interrupted
  assert returncode == 130, err
  assert "Interrupted after epoch" in err and "jaxmnist train --resume" in err and "Traceback" not in err
  stopped_at = max(checkpoint.saved_epochs(stopped_copy / checkpoint.CHECKPOINT_DIR))
  assert stopped_at < EPOCHS

  result = _run(tmp_path, idx_dir, "--resume=run")
  assert result.returncode == 0, result.stderr
  assert f"resuming from the checkpoint of epoch {stopped_at} of {EPOCHS}" in result.stdout
  _assert_same_run(tmp_path / "run", reference)


def test_kill_9_at_any_moment_then_resume_is_bit_identical(uninterrupted, tmp_path, monkeypatch):
  # A process killed between writing a compiled program and its access-time file would leave the
  # session's shared cache with an entry that jax's capped cache then warns about: these use their own.
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  reference, idx_dir = uninterrupted
  run_dir = tmp_path / "run"
  first = ["--model=tiny", f"--epochs={EPOCHS}", f"--checkpoint-every={EVERY}", "--workdir=run"]
  moments = [("after the first checkpoint", _has_checkpoint(run_dir), first),
             ("while a checkpoint is being written", _save_in_progress(run_dir), ["--resume=run"]),
             ("at once, during start-up", lambda: True, ["--resume=run"])]
  for moment, condition, args in moments:
    process = _start(tmp_path, idx_dir, *args)
    assert _wait_for(condition, process), f"the run ended before the moment {moment!r}"
    process.kill()  # SIGKILL: no handler runs, nothing is flushed
    process.communicate(timeout=60)
  result = _run(tmp_path, idx_dir, "--resume=run")
  assert result.returncode == 0, result.stderr
  _assert_same_run(run_dir, reference)


def _damage(checkpoint_dir: Path):
  for path in checkpoint_dir.rglob("*"):
    if path.is_file() and path.stat().st_size > 100:
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a full disk


def test_a_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(uninterrupted, stopped_copy,
                                                                           tmp_path):
  reference, idx_dir = uninterrupted
  folder = stopped_copy / checkpoint.CHECKPOINT_DIR
  epochs = checkpoint.saved_epochs(folder)
  _damage(folder / str(epochs[-1]))

  result = _run(tmp_path, idx_dir, "--resume=run")
  assert result.returncode == 0, result.stderr
  assert f"resuming from the checkpoint of epoch {epochs[-2]}" in result.stdout
  assert f"passed over damaged newer checkpoints: epoch {epochs[-1]}" in result.stdout
  _assert_same_run(tmp_path / "run", reference)


@pytest.mark.parametrize("save_flags, resume_flags", [(EIGHT_DEVICES, ""), ("", EIGHT_DEVICES)],
                         ids=["8-devices-to-1", "1-device-to-8"])
def test_resume_on_another_device_count(request, tmp_path, save_flags, resume_flags):
  if save_flags:
    idx_dir = request.getfixturevalue("idx_dir")
    process = _start(tmp_path, idx_dir, "--model=tiny", f"--epochs={EPOCHS}", f"--checkpoint-every={EVERY}",
                     "--workdir=run", xla_flags=save_flags)
    assert _wait_for(_has_checkpoint(tmp_path / "run"), process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
  else:  # the module's one-device run, as if killed after its checkpoint of epoch 110: 10 epochs on 8 devices
    reference, idx_dir = request.getfixturevalue("uninterrupted")
    shutil.copytree(reference, tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    for epoch in checkpoint.saved_epochs(tmp_path / "run" / checkpoint.CHECKPOINT_DIR)[1:]:
      shutil.rmtree(tmp_path / "run" / checkpoint.CHECKPOINT_DIR / str(epoch))
  result = _run(tmp_path, idx_dir, "--resume=run", xla_flags=resume_flags)
  assert result.returncode == 0, result.stderr
  assert ("devices: 8 x cpu" if resume_flags else "devices: 1 x cpu") in result.stdout
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["epochs_completed"] == EPOCHS and summary["num_devices"] == (8 if resume_flags else 1)
  assert [r["epoch"] for r in report.read_metrics_csv(tmp_path / "run" / "metrics.csv")] == list(range(1, EPOCHS + 1))
  training_outcomes.assert_clears("tiny_run", summary)


@pytest.fixture
def bad_resume(idx_dir, jaxmnist_in_process):
  """`jaxmnist train ARGS` that must be refused (each refusal comes before any training): its paragraph."""
  def call(*args):
    result = jaxmnist_in_process(*_train_args(idx_dir, *args)[3:])  # without `python -m jaxmnist.cli`
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    return result.stderr
  return call


def test_bad_resumes_exit_2_with_one_paragraph(uninterrupted, tmp_path, bad_resume):
  finished, _ = uninterrupted
  assert "is not a directory" in bad_resume(f"--resume={tmp_path / 'nowhere'}")
  (tmp_path / "empty").mkdir()
  assert "is not a jaxmnist run: it has no config.json" in bad_resume("--resume=empty")
  (tmp_path / "early").mkdir()
  (tmp_path / "early" / "config.json").write_text((finished / "config.json").read_text())
  assert "has no complete checkpoint" in bad_resume("--resume=early")
  assert "already finished all 120 epochs" in bad_resume(f"--resume={finished}")


def test_a_resume_whose_flags_contradict_the_run_is_refused(stopped_copy, tmp_path, idx_dir, bad_resume):
  message = bad_resume("--resume=run", "--lr=0.5", "--epochs=7", "--model=cnn")
  assert "--lr=0.5 (the run has 0.1)" in message and "--epochs=7 (the run has 120)" in message
  assert "--model=cnn (the run trains mlp3)" in message
  # Repeating the run's own settings, or changing only how it checkpoints, is fine.
  result = _run(tmp_path, idx_dir, "--resume=run", "--lr=0.1", "--checkpoint-every=50")
  assert result.returncode == 0, result.stderr
