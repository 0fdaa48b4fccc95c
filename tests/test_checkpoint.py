"""Checkpoints and resume, as a user meets them: Ctrl-C and kill -9 sent to a `jaxmnist train` process at
named moments (tests/signal_at.py), a damaged checkpoint, another device count, and every bad `--resume`.
What needs no process of its own (the reference run, the resumes on one device) runs through the CLI's main
in this process.

The yardstick is an uninterrupted run of the same config: a resumed run must end with the same
parameters bit for bit, the same metrics.csv rows (all but the wall-clock seconds) and the same test
accuracy.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmnist import checkpoint, cli, report, train_state
from tests.test_cli import REPO_ROOT

EPOCHS = 6  # checkpoints at 2, 4 and 6; tests/signal_at.py signals a run at a named one, so few epochs do
EVERY = 2
EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"


def _env(tmp_path, xla_flags=""):
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAXMNIST_CACHE_DIR": str(tmp_path / "cache"),
          "XLA_FLAGS": xla_flags, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _train_args(idx_dir, *extra):
  return ["train", "--no-progress", "--no-evaluate", "--source=dir", f"--data-dir={idx_dir}", "--unverified",
          *map(str, extra)]


def _signalled(tmp_path, idx_dir, moment, signal_name, *extra, xla_flags=""):
  """`jaxmnist train` in a subprocess that sends itself SIGNAL at `moment` (tests/signal_at.py)."""
  return subprocess.run([sys.executable, "-m", "tests.signal_at", moment, signal_name, "--",
                         *_train_args(idx_dir, *extra)], cwd=tmp_path, env=_env(tmp_path, xla_flags),
                        capture_output=True, text=True, timeout=300, check=False)


def _in_process(cwd: Path, idx_dir, *extra) -> subprocess.CompletedProcess:
  """`jaxmnist train` through the CLI's own main in this process (one device), run in `cwd`: what no
  signal or device count needs a process of its own for."""
  out, err, code, before = io.StringIO(), io.StringIO(), 0, os.getcwd()
  os.chdir(cwd)
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      cli.main(_train_args(idx_dir, *extra))
  except SystemExit as e:
    code = e.code or 0
  finally:
    os.chdir(before)
  return subprocess.CompletedProcess(["jaxmnist", *_train_args(idx_dir, *extra)], code, out.getvalue(),
                                     err.getvalue())


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


RUN = ("--model=tiny", f"--epochs={EPOCHS}", f"--checkpoint-every={EVERY}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("uninterrupted")
  from tests.conftest import write_idx_dir  # pylint: disable=g-import-not-at-top

  idx_dir = write_idx_dir(tmp / "idx")
  result = _in_process(tmp, idx_dir, *RUN, "--workdir=run")
  assert result.returncode == 0, result.stderr
  return tmp / "run", idx_dir


@pytest.fixture(scope="module")
def interrupted(uninterrupted):
  """The same run, Ctrl-C pressed once it has saved two checkpoints; tests resume copies of it."""
  reference, idx_dir = uninterrupted
  result = _signalled(reference.parent, idx_dir, "saved:2", "INT", *RUN, "--workdir=stopped")
  return reference.parent / "stopped", result.returncode, result.stderr


@pytest.fixture
def stopped_copy(interrupted, tmp_path):
  shutil.copytree(interrupted[0], tmp_path / "run")
  return tmp_path / "run"


def test_ctrl_c_saves_and_resume_is_bit_identical(uninterrupted, interrupted, stopped_copy, tmp_path):
  reference, idx_dir = uninterrupted
  _, returncode, err = interrupted
  assert returncode == 130, err
  assert f"Interrupted after epoch {2 * EVERY} of {EPOCHS}" in err and "jaxmnist train --resume" in err
  assert "Traceback" not in err
  assert checkpoint.saved_epochs(stopped_copy / checkpoint.CHECKPOINT_DIR) == [EVERY, 2 * EVERY]

  result = _in_process(tmp_path, idx_dir, "--resume=run")
  assert result.returncode == 0, result.stderr
  assert f"resuming from the checkpoint of epoch {2 * EVERY} of {EPOCHS}" in result.stdout
  _assert_same_run(tmp_path / "run", reference)


def test_kill_9_at_any_moment_then_resume_is_bit_identical(uninterrupted, tmp_path, monkeypatch):
  # A process killed between writing a compiled program and its access-time file would leave the
  # session's shared cache with an entry that jax's capped cache then warns about: these use their own.
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  reference, idx_dir = uninterrupted
  folder = tmp_path / "run" / checkpoint.CHECKPOINT_DIR
  # Once its first checkpoint is complete: the resume below starts from it.
  killed = _signalled(tmp_path, idx_dir, "saved:1", "KILL", *RUN, "--workdir=run")
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  assert checkpoint.saved_epochs(folder) == [EVERY]
  # While the resumed run writes its next checkpoint: orbax's temporary folder is left behind.
  killed = _signalled(tmp_path, idx_dir, "writing:1", "KILL", "--resume=run")
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  assert [p.name for p in folder.iterdir() if checkpoint.TMP_SUFFIX in p.name], list(folder.iterdir())
  assert checkpoint.saved_epochs(folder) == [EVERY]
  # At once, during start-up (wherever the kill lands, the run on disk stays resumable).
  process = subprocess.Popen([sys.executable, "-m", "jaxmnist.cli", *_train_args(idx_dir, "--resume=run")],
                             cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  process.kill()  # SIGKILL: no handler runs, nothing is flushed
  process.wait(timeout=60)
  result = _in_process(tmp_path, idx_dir, "--resume=run")
  assert result.returncode == 0, result.stderr
  assert f"resuming from the checkpoint of epoch {EVERY} of {EPOCHS}" in result.stdout
  _assert_same_run(tmp_path / "run", reference)


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

  result = _in_process(tmp_path, idx_dir, "--resume=run")
  assert result.returncode == 0, result.stderr
  assert f"resuming from the checkpoint of epoch {epochs[-2]}" in result.stdout
  assert f"passed over damaged newer checkpoints: epoch {epochs[-1]}" in result.stdout
  _assert_same_run(tmp_path / "run", reference)


def test_a_run_saved_on_one_device_resumes_on_eight_and_stopped_there_resumes_on_one(uninterrupted, tmp_path):
  # The module's one-device run, as if killed after its first checkpoint: resumed on 8 devices, which a Ctrl-C
  # stops once they have saved the next; then the rest on one device again.
  reference, idx_dir = uninterrupted
  shutil.copytree(reference, tmp_path / "run")
  (tmp_path / "run" / "summary.json").unlink()
  for epoch in checkpoint.saved_epochs(tmp_path / "run" / checkpoint.CHECKPOINT_DIR)[1:]:
    shutil.rmtree(tmp_path / "run" / checkpoint.CHECKPOINT_DIR / str(epoch))
  stopped = _signalled(tmp_path, idx_dir, "saved:1", "INT", "--resume=run", xla_flags=EIGHT_DEVICES)
  assert stopped.returncode == 130, stopped.stderr
  assert "devices: 8 x cpu" in stopped.stdout and f"resuming from the checkpoint of epoch {EVERY}" in stopped.stdout
  assert checkpoint.saved_epochs(tmp_path / "run" / checkpoint.CHECKPOINT_DIR) == [EVERY, 2 * EVERY]
  result = _in_process(tmp_path, idx_dir, "--resume=run")
  assert result.returncode == 0, result.stderr
  assert "devices: 1 x cpu" in result.stdout and f"resuming from the checkpoint of epoch {2 * EVERY}" in result.stdout
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["status"] == "finished" and summary["num_devices"] == 1
  assert summary["epochs_completed"] == EPOCHS and summary["resumed_from_epoch"] == 2 * EVERY
  assert [r["epoch"] for r in report.read_metrics_csv(tmp_path / "run" / "metrics.csv")] == list(range(1, EPOCHS + 1))


@pytest.fixture
def bad_resume(idx_dir, jaxmnist_in_process):
  """`jaxmnist train ARGS` that must be refused (each refusal comes before any training): its paragraph."""
  def call(*args):
    result = jaxmnist_in_process(*_train_args(idx_dir, *args))
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
  assert f"already finished all {EPOCHS} epochs" in bad_resume(f"--resume={finished}")


def test_a_resume_whose_flags_contradict_the_run_is_refused(stopped_copy, tmp_path, idx_dir, bad_resume):
  message = bad_resume("--resume=run", "--lr=0.5", "--epochs=7", "--model=cnn", "--workdir=elsewhere")
  assert "--lr=0.5 (the run has 0.1)" in message and f"--epochs=7 (the run has {EPOCHS})" in message
  assert "--model=cnn (the run trains mlp3)" in message
  assert "--workdir=elsewhere (a resumed run continues in run)" in message
  assert "--workdir" not in bad_resume("--resume=run", "--lr=0.5", f"--workdir={stopped_copy}")  # the run's own
  # Repeating the run's own settings, or changing only how it checkpoints, is fine.
  result = _in_process(tmp_path, idx_dir, "--resume=run", "--lr=0.1", "--checkpoint-every=50")
  assert result.returncode == 0, result.stderr
