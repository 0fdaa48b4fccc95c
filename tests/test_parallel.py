"""Data parallelism on 8 simulated CPU devices: sharded data and batches, the same parameters as on
one device, and the CLI end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.test_cli import REPO_ROOT

EIGHT_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def eight_devices_folder(tmp_path_factory):
  return tmp_path_factory.mktemp("eight-devices")


@pytest.fixture(scope="module")
def eight_device_report(eight_devices_folder):
  """The worker's report; its `jaxmnist train` runs (the CLI tests below) wrote into eight_devices_folder."""
  result = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "multidevice_worker.py"),
                           str(eight_devices_folder)],
                          env={**os.environ, **EIGHT_DEVICES}, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_dataset_is_split_over_the_eight_devices(eight_device_report):
  r = eight_device_report
  assert r["device_count"] == 8
  assert r["dataset_shape"][0] == 104  # 100 examples padded to a multiple of 8
  assert r["dataset_shard_shapes"] == [[13, 28, 28, 1]] and r["dataset_devices"] == 8


def test_each_device_holds_its_slice_of_every_batch(eight_device_report):
  r = eight_device_report
  assert r["batch_spec"] == [None, "data"]
  assert r["batch_shard_shapes"] == [[3, 4, 28, 28, 1]]  # 3 steps, 32 / 8 examples each
  assert r["batch_devices"] == 8
  assert all(axis is None for axis in r["params_spec"])  # parameters replicated


def test_eight_devices_give_the_parameters_of_one(eight_device_report):
  r = eight_device_report
  assert r["steps"] == [16, 16]
  # Same batches, same updates: only the order of the gradient sums differs (float rounding).
  assert r["params_max_diff_8_vs_1"] < 1e-5 * max(1.0, r["params_max_abs"])
  assert abs(r["loss_sum"][0] - r["loss_sum"][1]) < 1e-4 * abs(r["loss_sum"][1])


@pytest.mark.parametrize("members, layout, spec, shard_rows", [
    (8, "8 members spread over 8 devices (1 each, no communication)", ["data"], 1),
    (3, "data parallel: every batch of all 3 members split over 8 devices; 3 members do not divide evenly over "
        "8 devices", [], 3),
])
def test_an_ensemble_spreads_its_members_when_they_divide_evenly(eight_device_report, members, layout, spec,
                                                                 shard_rows):
  r = eight_device_report[f"ensemble_of_{members}"]
  assert r["layout"] == layout
  assert r["params_spec"][:1] == spec and r["params_shard_shape"][0] == shard_rows
  # The members compared (the first, a middle and the last there is) are their seeds' models trained alone on
  # one device (float rounding apart).
  assert r["members_compared"] == [k for k in (0, 2, 7) if k < members]
  assert r["params_max_diff_vs_alone"] < 1e-5 * max(1.0, r["params_max_abs"])


# The CLI on 8 devices: `jaxmnist train` through the CLI's main inside the 8-device worker (its cli_runs),
# one process for all of them. tests/test_cli.py's subprocess tests show that the process's exit code and
# paragraph are main's.

def test_cli_trains_an_ensemble_spread_over_eight_devices_and_its_checkpoint_holds_every_member(
    eight_device_report, eight_devices_folder):
  result = eight_device_report["cli"]["ensemble_of_8"]
  assert result["returncode"] == 0, result["stderr"]
  assert "parallelism: 8 members spread over 8 devices (1 each, no communication)" in result["stdout"]
  assert "ensemble: test accuracy" in result["stdout"]  # the report of all 8 members, from the 8 devices
  # ... and onto this process's one device: each member's own parameters, not one device's shard
  from jaxmnist import ensemble, train_state  # pylint: disable=g-import-not-at-top
  trained = train_state.load_trained(eight_devices_folder / "ensemble")
  kernels = [np.asarray(ensemble.member(trained.variables, k)["params"]["dense0"]["kernel"]) for k in range(8)]
  assert kernels[0].shape == (784, 300) and all(not np.array_equal(kernels[0], k) for k in kernels[1:])
  summary = json.loads((eight_devices_folder / "ensemble" / "summary.json").read_text())
  assert len(summary["members"]) == 8 and summary["ensemble_test_accuracy"] >= 0.9


def test_cli_spreads_a_sweep_over_eight_devices_and_its_member_trains_as_alone(eight_device_report,
                                                                              eight_devices_folder):
  result = eight_device_report["cli"]["sweep_of_8"]  # 2 rates x 4 seeds
  assert result["returncode"] == 0, result["stderr"]
  assert "parallelism: 8 members spread over 8 devices (1 each, no communication)" in result["stdout"]
  from jaxmnist import report  # pylint: disable=g-import-not-at-top
  member = [line for line in report.read_metrics_csv(eight_devices_folder / "sweep" / "metrics.csv")
            if line["member"] == 4]  # lr 0.1, seed 0: the `tiny` run's settings, trained there data parallel
  alone = report.read_metrics_csv(eight_devices_folder / "tiny" / "metrics.csv")
  assert [(line["learning_rate"], line["seed"]) for line in member] == [(0.1, 0)] * 3
  for line, row in zip(member, alone, strict=True):
    for name in ("train_loss", "train_accuracy", "valid_accuracy"):
      assert line[name] == pytest.approx(row[name], rel=1e-4, abs=1e-5), name


def test_cli_trains_on_eight_devices(eight_device_report, eight_devices_folder):
  result = eight_device_report["cli"]["tiny"]
  assert result["returncode"] == 0, result["stderr"]
  assert "devices: 8 x cpu" in result["stdout"]
  summary = json.loads((eight_devices_folder / "tiny" / "summary.json").read_text())
  assert summary["num_devices"] == 8 and summary["status"] == "finished" and summary["epochs_completed"] == 3
  # (how well `tiny` learns is tests/test_train.py's to assert, on one device)


def test_cli_trains_on_the_devices_num_devices_asks_for(eight_device_report, eight_devices_folder):
  result = eight_device_report["cli"]["two_of_eight"]
  assert result["returncode"] == 0, result["stderr"]
  assert "devices: 2 x cpu" in result["stdout"]
  summary = json.loads((eight_devices_folder / "two" / "summary.json").read_text())
  assert summary["num_devices"] == 2 and summary["status"] == "finished"


def test_batch_that_does_not_split_over_eight_devices_is_refused(eight_device_report, eight_devices_folder):
  result = eight_device_report["cli"]["batch_30"]
  assert result["returncode"] == 2
  assert "does not split evenly over the 8 devices" in result["stderr"] and "24 or 32" in result["stderr"]
  assert "Traceback" not in result["stderr"]
  assert not (eight_devices_folder / "batch30" / "summary.json").exists()


@pytest.fixture
def held_port():
  """A loopback port number that stays this test's: a socket bound to it with SO_REUSEPORT and never listening,
  held open until the test ends. Only another socket that also asks for SO_REUSEPORT, as gRPC's server (jax's
  coordinator) does, can bind it meanwhile; a port closed again before use could be taken by anything."""
  import socket  # pylint: disable=g-import-not-at-top

  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]


def test_two_processes_train_as_one_job_and_only_process_0_writes(tmp_path, idx_dir, held_port):
  """A real multi-host launch on this machine: 2 processes x 2 CPU devices, a coordinator on loopback."""
  processes, logs = [], []
  for rank in (0, 1):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{held_port}", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": str(rank), "JAXMNIST_CACHE_DIR": str(tmp_path / f"cache{rank}"),
           "PYTHONPATH": str(REPO_ROOT)}
    # Into files, not pipes: a process whose pipe filled while this one waited on the other would stall both.
    logs.append((tmp_path / f"out{rank}.txt", tmp_path / f"err{rank}.txt"))
    with open(logs[-1][0], "w") as out, open(logs[-1][1], "w") as err:
      processes.append(subprocess.Popen(
          [sys.executable, "-m", "jaxmnist.train", "--model=tiny", "--source=dir", f"--data-dir={idx_dir}",
           "--unverified", f"--workdir=run{rank}", "--no-progress"], cwd=tmp_path, env=env, stdout=out, stderr=err))
  for p in processes:
    p.wait(timeout=300)
  outputs = [(out.read_text(), err.read_text()) for out, err in logs]
  for p, (out, err) in zip(processes, outputs):
    assert p.returncode == 0, err
  assert "devices: 4 x cpu (cpu, 2 process(es))" in outputs[0][0]
  # Process 1 computes but prints nothing of its own (gloo's C++ logs its connections to stdout).
  assert "data:" not in outputs[1][0] and "accuracy" not in outputs[1][0]
  summary = json.loads((tmp_path / "run0" / "summary.json").read_text())
  assert summary["num_processes"] == 2 and summary["num_devices"] == 4 and summary["status"] == "finished"
  assert not (tmp_path / "run1").exists()
