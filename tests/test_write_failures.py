"""Runs whose files cannot be written, and runs whose config.json was edited: one paragraph each, nothing lost.

The full disk is real: a 1.2 MB tmpfs, mounted in a user and mount namespace of the test's own
(`unshare -rm`, no root needed), so the OS and orbax fail exactly as they do when a disk fills up;
remounting it read-only makes "a folder made read-only". Where the kernel allows no such namespace,
those tests skip and say so.
"""

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from jaxmnist import checkpoint, report
from jaxmnist.configs import PRESETS
from tests.test_cli import REPO_ROOT

DISK_KB = 1200  # config.json, metrics.csv and one `tiny` checkpoint (~0.95 MB) fit; a second does not


def _namespaces_work() -> bool:
  if shutil.which("unshare") is None:
    return False
  probe = subprocess.run(["unshare", "-rm", "sh", "-c", 'd="$(mktemp -d)" && mount -t tmpfs -o size=64k tmpfs "$d"'],
                         capture_output=True, check=False)
  return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="needs `unshare -rm` (util-linux) and unprivileged user namespaces, to "
    "mount a small real disk without root; this kernel or container allows none")


def _jaxmnist(*args) -> str:
  return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "jaxmnist.cli", *map(str, args)))


def _on_a_small_disk(tmp_path, script: str, size_kb: int = DISK_KB) -> subprocess.CompletedProcess:
  """Runs the shell `script` in tmp_path with a fresh tmpfs of size_kb mounted at ./disk."""
  (tmp_path / "disk").mkdir()
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXMNIST_CACHE_DIR": str(tmp_path / "cache"),
         "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  return subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size_kb}k tmpfs disk && {script}"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


def _data_flags(idx_dir):
  return ("--source=dir", f"--data-dir={idx_dir}", "--unverified")


def _one_paragraph(stderr: str) -> str:
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
  return lines[0]


def _partial_files(run_dir):
  return [p for p in run_dir.rglob("*") if ".partial" in p.name or checkpoint.TMP_SUFFIX in p.name]


@needs_namespaces
def test_a_full_disk_while_checkpointing_says_what_is_kept_and_resume_continues(tmp_path, idx_dir,
                                                                               jaxmnist_in_process):
  train = _jaxmnist("train", "--model=tiny", "--no-progress", "--no-evaluate", *_data_flags(idx_dir),
                    "--workdir=disk/run")
  # The tmpfs is gone when the namespace ends: copy out what the failed run kept, as a person would
  # copy it to a disk with room.
  result = _on_a_small_disk(tmp_path, f"{train} 2>stderr.txt; echo $? > code.txt; cp -a disk/run kept")
  assert result.returncode == 0, result.stderr
  stderr = (tmp_path / "stderr.txt").read_text()
  assert (tmp_path / "code.txt").read_text().strip() == "4", stderr
  message = _one_paragraph(stderr)
  assert "No space left on device" in message and "while writing the checkpoint of epoch 2" in message
  assert "Kept: metrics.csv with the 3 finished epoch(s), and the complete checkpoint(s) of epoch 1." in message
  assert "jaxmnist train --resume disk/run" in message
  kept = tmp_path / "kept"
  assert len(report.read_metrics_csv(kept / "metrics.csv")) == 3 and not _partial_files(kept)
  assert sorted(p.name for p in (kept / "checkpoints").iterdir()) == ["1"]

  # The resume, on a disk with room, through the CLI's main in this process (it needs no process of its own).
  resumed = jaxmnist_in_process("train", "--resume=kept", "--no-progress", "--no-evaluate", *_data_flags(idx_dir))
  assert resumed.returncode == 0, resumed.stderr
  assert "resuming from the checkpoint of epoch 1 of 3" in resumed.stdout
  summary = json.loads((kept / "summary.json").read_text())
  assert summary["status"] == "finished" and summary["resumed_from_epoch"] == 1
  assert [row["epoch"] for row in report.read_metrics_csv(kept / "metrics.csv")] == [1, 2, 3]


@needs_namespaces
def test_a_read_only_folder_stops_evaluate_and_export_with_one_paragraph(tmp_path, tiny_cli_run):
  # The session's tiny run copied onto the small disk, less the report that evaluate must write; then the disk
  # turns read-only.
  evaluate = _jaxmnist("evaluate", "disk/run", *_data_flags(tiny_cli_run.idx_dir))
  export = _jaxmnist("export", "disk/run")
  script = (f"cp -a {shlex.quote(str(tiny_cli_run.run_dir))} disk/run && rm disk/run/evaluation.json && "
            f"mount -o remount,ro disk && "
            f"{{ {evaluate} 2>evaluate.txt; echo $? > evaluate_code.txt; {export} 2>export.txt; echo $? > export_code.txt; }}"
            f"; cp -a disk/run kept")
  result = _on_a_small_disk(tmp_path, script, size_kb=16384)
  assert result.returncode == 0, result.stderr
  for command, fix in (("evaluate", "then write the report with `jaxmnist evaluate disk/run`"),
                       ("export", "or choose another --out, and export again")):
    stderr = (tmp_path / f"{command}.txt").read_text()
    assert (tmp_path / f"{command}_code.txt").read_text().strip() == "4", stderr
    message = _one_paragraph(stderr)
    assert "Read-only file system" in message and fix in message
  kept = tmp_path / "kept"
  assert (kept / "summary.json").is_file() and not _partial_files(kept)
  assert not (kept / "evaluation.json").exists() and not (kept / "model.jaxexport").exists()


def _run_with_config(tmp_path, **changes):
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  fields = {**dataclasses.asdict(PRESETS["tiny"]), **changes}
  (run_dir / "config.json").write_text(json.dumps(fields))
  return run_dir


@pytest.mark.parametrize("changes, says", [
    ({"model": "resnet50"}, "unknown model 'resnet50' (choose one of linear, mlp2, mlp3,"),
    ({"epochs": "ten"}, "epochs must be a whole number, got 'ten'"),
    ({"learning_rate": -1}, "the learning rate must be a positive number, got -1"),
    ({"optimizer": "lion"}, "unknown optimizer 'lion' (choose one of sgd, adam, adamw)"),
    ({"dataset": "cifar10"}, "unknown dataset 'cifar10'"),
    ({"nesterov": "yes"}, "nesterov must be true or false, got 'yes'"),
    ({"colour": "red"}, "unknown field 'colour'"),
])
@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "serve", "resume"])
def test_every_field_of_a_config_read_back_is_checked_as_the_flags_are(tmp_path, jaxmnist_in_process, changes, says,
                                                                       command):
  run_dir = _run_with_config(tmp_path, **changes)
  args = {"evaluate": ("evaluate", run_dir), "predict": ("predict", run_dir, tmp_path / "digit.png"),
          "export": ("export", run_dir), "serve": ("serve", run_dir),
          "resume": ("train", f"--resume={run_dir}")}[command]
  result = jaxmnist_in_process(*args)
  assert result.returncode == 2
  message = _one_paragraph(result.stderr)
  assert f"{run_dir / 'config.json'} holds settings jaxmnist cannot use: {says}" in message
  assert "restore it, or give another run directory" in message


def test_an_edited_model_name_is_one_paragraph_for_a_user_too(tmp_path):
  """The fault as it was found: `jaxmnist evaluate` on a config.json naming no model ended in a KeyError."""
  run_dir = _run_with_config(tmp_path, model="resnet50")
  result = subprocess.run(shlex.split(_jaxmnist("evaluate", run_dir)), env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  assert "unknown model 'resnet50'" in _one_paragraph(result.stderr)


def test_a_missing_required_field_and_a_config_that_is_no_object(tmp_path, jaxmnist_in_process):
  run_dir = _run_with_config(tmp_path)
  fields = json.loads((run_dir / "config.json").read_text())
  del fields["learning_rate"]
  (run_dir / "config.json").write_text(json.dumps(fields))
  result = jaxmnist_in_process("evaluate", run_dir)
  assert result.returncode == 2 and "field 'learning_rate' is missing" in _one_paragraph(result.stderr)
  (run_dir / "config.json").write_text("[1, 2]")
  result = jaxmnist_in_process("evaluate", run_dir)
  assert result.returncode == 2 and "is not a jaxmnist config: it holds list" in _one_paragraph(result.stderr)
