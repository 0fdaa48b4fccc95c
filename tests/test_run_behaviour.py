"""What a run does that no other test watched, on the tiny IDX data: the default run directory,
--cache-dir, the lines beside the post's numbers, --keep-checkpoints, other data on --resume and on
evaluate, every checkpoint damaged, Ctrl-C with checkpoints off, and a second Ctrl-C.

The runs are subprocesses (`python -m jaxmnist.train`, as a user types it), since what some of them test
belongs to the process (its compiled-program cache, a signal). They share that cache, so only the first
run compiles. What comes after a run (evaluate, resume) runs in-process, through `cli.main`.
"""

import contextlib
import datetime
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from jaxmnist import checkpoint, cli, errors, process, report
from jaxmnist.configs import POST_RESULTS
from tests.conftest import REPO_ROOT, write_idx_dir

# The post's mlp3 with its own recipe (so that its lines stand beside the post's numbers); on the toy set's
# 480 training examples an epoch is two batches. Every run below that takes these flags runs the same
# compiled programs.
MLP3_SHORT = ("--model=mlp3",)
STAMP = r"\d{8}-\d{6}"  # the default run directory's date and time


def _env(cache_dir: Path) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXMNIST_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1",
         "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  env.pop("JAXMNIST_XLA_CACHE_MB", None)  # the runs here use and fill the compiled-program cache
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the session's shared one: --cache-dir must receive them here
  return env


def _train_command(idx_dir: Path, *args) -> list[str]:
  return [sys.executable, "-m", "jaxmnist.train", "--no-progress", "--no-evaluate", "--source=dir",
          f"--data-dir={idx_dir}", "--unverified", *map(str, args)]


def _train(cwd: Path, idx_dir: Path, cache_dir: Path, *args) -> subprocess.CompletedProcess:
  result = subprocess.run(_train_command(idx_dir, *args), cwd=cwd, env=_env(cache_dir), capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  return result


def _run_directory(stdout: str) -> str:
  return re.search(r"run directory: (\S+)", stdout).group(1)


class FirstRun(NamedTuple):
  cwd: Path
  idx_dir: Path
  cache_dir: Path  # its --cache-dir
  env_cache_dir: Path  # $JAXMNIST_CACHE_DIR: the default it must not use
  stdout: str
  started: datetime.datetime
  ended: datetime.datetime

  @property
  def run_dir(self) -> Path:
    return self.cwd / _run_directory(self.stdout)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> FirstRun:
  """The post's mlp3, shortened, with no --workdir, its own --cache-dir, and the newest 2 of 3 checkpoints kept."""
  cwd = tmp_path_factory.mktemp("first-run")
  idx_dir = write_idx_dir(cwd / "idx")
  started = datetime.datetime.now().replace(microsecond=0)
  result = _train(cwd, idx_dir, cwd / "env-cache", *MLP3_SHORT, "--epochs=3", "--checkpoint-every=1",
                  "--keep-checkpoints=2", f"--cache-dir={cwd / 'cache'}")
  return FirstRun(cwd, idx_dir, cwd / "cache", cwd / "env-cache", result.stdout, started, datetime.datetime.now())


def _in_process(monkeypatch, capsys, *args) -> tuple[int, str]:
  """`jaxmnist ARGS` in this process, which expects it to fail: its exit code and its one line on stderr."""
  monkeypatch.setenv("JAXMNIST_XLA_CACHE_MB", "0")  # this process's jax settings stay as the suite made them
  with pytest.raises(SystemExit) as exit_info:
    cli.main(list(map(str, args)))
  stderr = capsys.readouterr().err
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in stderr, stderr
  return exit_info.value.code, lines[0]


def _data_flags(idx_dir: Path) -> tuple[str, ...]:
  return ("--source=dir", f"--data-dir={idx_dir}", "--unverified")


# ---- the default run directory, --cache-dir ---------------------------------------------------------------


def test_without_workdir_a_run_goes_to_runs_model_date_time(first_run):
  name = _run_directory(first_run.stdout)
  assert re.fullmatch(rf"runs/mlp3-{STAMP}", name), name
  stamp = datetime.datetime.strptime(name.removeprefix("runs/mlp3-"), "%Y%m%d-%H%M%S")
  assert first_run.started <= stamp <= first_run.ended
  assert {"config.json", "metrics.csv", "summary.json"} <= {p.name for p in first_run.run_dir.iterdir()}
  assert f"files: {name}/{{config.json," in first_run.stdout


@pytest.fixture(scope="module")
def fashion_run(first_run, tmp_path_factory) -> tuple[Path, str]:
  """The same files read as Fashion-MNIST (--unverified takes them as either), no --workdir, through the CLI's
  main in this process (what it tests needs no process of its own): (cwd, stdout)."""
  cwd = tmp_path_factory.mktemp("fashion-run")
  stdout = io.StringIO()
  with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
    patch.chdir(cwd)
    patch.setenv("JAXMNIST_CACHE_DIR", str(first_run.cache_dir))
    cli.main(["train", *_train_command(first_run.idx_dir, *MLP3_SHORT, "--dataset=fashion_mnist", "--epochs=1",
                                       "--checkpoint-every=0")[3:]])  # the flags after `python -m jaxmnist.train`
  return cwd, stdout.getvalue()


def test_the_default_run_directory_names_a_dataset_other_than_mnist(fashion_run):
  cwd, stdout = fashion_run
  name = _run_directory(stdout)
  assert re.fullmatch(rf"runs/mlp3-fashion_mnist-{STAMP}", name), name
  assert (cwd / name / "summary.json").is_file()


def test_cache_dir_receives_the_compiled_programs_instead_of_the_default_cache(first_run):
  assert list((first_run.cache_dir / "xla").glob("*-cache"))
  assert not first_run.env_cache_dir.exists()


def test_cache_dir_is_where_the_data_is_looked_up(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("JAXMNIST_CACHE_DIR", str(tmp_path / "env-cache"))
  code, message = _in_process(monkeypatch, capsys, "train", "--model=tiny", "--source=cache",
                              f"--cache-dir={tmp_path / 'flag-cache'}", f"--workdir={tmp_path / 'run'}")
  assert code == 2 and f"cache: no cached copy at {tmp_path / 'flag-cache' / 'mnist'} yet" in message
  assert "env-cache" not in message


# ---- the lines beside the post's numbers -------------------------------------------------------------------


def test_a_post_preset_on_mnist_is_set_beside_the_posts_numbers(first_run):
  post = POST_RESULTS["mlp3"]
  lines = first_run.stdout.splitlines()
  start = lines.index("mlp3 after 3 epochs:")
  assert re.fullmatch(rf"  validation accuracy \d\.\d{{4}}   \(post, PyTorch, 400 epochs: {post.valid}\)",
                      lines[start + 1])
  assert re.fullmatch(rf"  test accuracy       \d\.\d{{4}}   \(post, PyTorch, 400 epochs: {post.test}\)",
                      lines[start + 2])
  assert lines[start + 3] == f"  note: {post.note}"


def _assert_no_post_numbers(stdout: str, epochs: int) -> None:
  lines = stdout.splitlines()
  start = lines.index(f"mlp3 after {epochs} epochs:")
  assert re.fullmatch(r"  validation accuracy \d\.\d{4}", lines[start + 1]), lines[start + 1]
  assert re.fullmatch(r"  test accuracy       \d\.\d{4}", lines[start + 2]), lines[start + 2]
  assert "post" not in stdout


def test_another_preset_of_the_posts_net_is_not_set_beside_the_posts_numbers(tiny_cli_run):
  # `tiny` trains the post's mlp3 net, but not with the post's set-up.
  _assert_no_post_numbers(tiny_cli_run.result.stdout, epochs=3)


def test_fashion_mnist_is_not_set_beside_the_posts_numbers(fashion_run):
  _assert_no_post_numbers(fashion_run[1], epochs=1)  # the post's numbers are MNIST's


def test_comparison_lines():
  """--valid-fraction=0 as the command prints it is tests/test_cli.py's; a post preset without a split is here."""
  post = POST_RESULTS["mlp3"]
  summary = {"config": {"model": "mlp3"}, "epochs_completed": 400, "valid_accuracy": 0.97712, "test_accuracy": 0.9765}
  assert report.comparison_lines(summary, post) == [
      "mlp3 after 400 epochs:",
      "  validation accuracy 0.9771   (post, PyTorch, 400 epochs: 0.9845)",
      "  test accuracy       0.9765   (post, PyTorch, 400 epochs: 0.9713)",
      f"  note: {post.note}"]
  assert report.comparison_lines(summary, None)[1:] == ["  validation accuracy 0.9771", "  test accuracy       0.9765"]
  no_split = {**summary, "valid_accuracy": None}
  assert report.comparison_lines(no_split, post)[1:] == [  # trained on every example: not the post's set-up
      "  validation accuracy none (no validation split)", "  test accuracy       0.9765"]


# ---- checkpoints: how many are kept, other data, all damaged -------------------------------------------------


def test_keep_checkpoints_keeps_only_the_newest(first_run):
  folder = first_run.run_dir / checkpoint.CHECKPOINT_DIR
  assert checkpoint.saved_epochs(folder) == [2, 3]
  assert sorted(p.name for p in folder.iterdir()) == ["2", "3"]  # the older ones are gone, not hidden


@pytest.fixture
def other_idx_dir(tmp_path):
  return write_idx_dir(tmp_path / "other-idx", num_train=500)  # the same kind of files, other examples


def _other_data_message(first_run, run_dir, other_idx_dir):
  return (f"error: {run_dir} was trained on other data (directory {first_run.idx_dir} (unverified: not checked "
          f"against MNIST's checksums)) than the data given now (directory {other_idx_dir} (unverified: not "
          f"checked against MNIST's checksums)). Pass the data flags the run was trained with (--source, "
          f"--data-dir, --unverified, --dataset).")


def test_evaluate_with_other_data_than_the_run_trained_on_is_refused(first_run, other_idx_dir, tmp_path,
                                                                      monkeypatch, capsys):
  run_dir = shutil.copytree(first_run.run_dir, tmp_path / "run")
  code, message = _in_process(monkeypatch, capsys, "evaluate", run_dir, *_data_flags(other_idx_dir))
  assert code == 2 and message == _other_data_message(first_run, run_dir, other_idx_dir)
  assert not (run_dir / "evaluation.json").exists()


def test_resume_with_other_data_than_the_run_trained_on_is_refused(first_run, other_idx_dir, tmp_path,
                                                                    monkeypatch, capsys):
  run_dir = shutil.copytree(first_run.run_dir, tmp_path / "run")
  # As kill -9 leaves a run after its last checkpoint and before its summary: resumable.
  (run_dir / "summary.json").unlink()
  code, message = _in_process(monkeypatch, capsys, "train", f"--resume={run_dir}", "--no-progress", "--no-evaluate",
                              *_data_flags(other_idx_dir))
  assert code == 2 and message == _other_data_message(first_run, run_dir, other_idx_dir)
  assert not (run_dir / "summary.json").exists()


def test_every_checkpoint_damaged_is_one_paragraph(first_run, tmp_path, monkeypatch, capsys):
  run_dir = shutil.copytree(first_run.run_dir, tmp_path / "run")
  folder = run_dir / checkpoint.CHECKPOINT_DIR
  for path in folder.rglob("*"):
    if path.is_file() and path.stat().st_size > 100:
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a full disk
  code, message = _in_process(monkeypatch, capsys, "evaluate", run_dir, *_data_flags(first_run.idx_dir))
  assert code == 2
  assert message.startswith(f"error: every checkpoint in {folder} is damaged (epoch 3: ")
  assert "; epoch 2: " in message and message.endswith("). Train the run again.")


# ---- Ctrl-C -------------------------------------------------------------------------------------------------


def test_ctrl_c_with_checkpoints_off_says_the_run_cannot_be_resumed(first_run, tmp_path, monkeypatch, capsys):
  process = subprocess.Popen(_train_command(first_run.idx_dir, *MLP3_SHORT, "--epochs=1000", "--checkpoint-every=0",
                                            "--workdir=run"),
                             cwd=tmp_path, env=_env(first_run.cache_dir), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  while not (tmp_path / "run" / "metrics.csv").exists() and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.01)
  process.send_signal(signal.SIGINT)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr
  finished = len(report.read_metrics_csv(tmp_path / "run" / "metrics.csv"))
  assert finished < 1000
  assert stderr.strip() == (f"Interrupted after epoch {finished} of 1000; checkpoints were off (--checkpoint-every=0), "
                            f"so the run cannot be resumed. {Path('run') / 'metrics.csv'} holds the finished epochs.")
  assert "Ctrl-C: stopping after this epoch" in stdout
  assert not (tmp_path / "run" / checkpoint.CHECKPOINT_DIR).exists()
  monkeypatch.chdir(tmp_path)
  code, message = _in_process(monkeypatch, capsys, "train", "--resume=run", *_data_flags(first_run.idx_dir))
  assert code == 2 and "run has no complete checkpoint to resume from" in message  # as it said


def _press_ctrl_c_twice(said: list) -> None:
  with process.stop_after_epoch_on_ctrl_c(said.append) as stop:
    os.kill(os.getpid(), signal.SIGINT)
    deadline = time.monotonic() + 10
    while not stop["requested"] and time.monotonic() < deadline:
      time.sleep(0.001)  # the handler runs in this (the main) thread, between two of its steps
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # a sleep that a signal cuts short, as it cuts short the wait for an epoch
  said.append("the second Ctrl-C did not stop the epoch")


def test_a_second_ctrl_c_stops_at_once(capsys):
  """The first Ctrl-C asks for a stop after the epoch; the second ends the command at once, with exit code 130."""
  said, before = [], signal.getsignal(signal.SIGINT)
  with pytest.raises(SystemExit) as exit_info:
    errors.exit_with_message(lambda: _press_ctrl_c_twice(said))
  assert exit_info.value.code == 130
  assert said == ["\nCtrl-C: stopping after this epoch to save a checkpoint (Ctrl-C again stops at once)."]
  assert capsys.readouterr().err == ("interrupted: the metrics of the finished epochs and the last checkpoint are "
                                     "in the run directory.\n")
  assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C means what it meant before training
