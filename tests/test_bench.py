"""The benchmark's smoke form produces its report (it times nothing that a test asserts on)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_writes_markdown_and_json(tmp_path):
  result = subprocess.run(
      [sys.executable, str(REPO_ROOT / "experiments" / "bench.py"), "--smoke", "--no-torch",
       "--models=linear", f"--out={tmp_path}"],
      env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  results = json.loads((tmp_path / "bench-cpu-smoke.json").read_text())
  assert set(results["models"]) == {"linear"}  # the report's form; timing each model adds only its compile
  for per_model in results["models"].values():
    timing = per_model["jax"]["scan"]
    assert timing["epoch_s"] > 0 and timing["compile_s"] >= 0 and timing["flop_per_s"] > 0
  assert results["models"]["linear"]["matmul_only"]["epoch_s"] > 0
  assert results["peak_flop_per_s"] > 0
  markdown = (tmp_path / "bench-cpu-smoke.md").read_text()
  assert "| linear | jaxmnist scan |" in markdown and "| linear | matmuls alone (bound) |" in markdown
  assert "matmul peak" in markdown


def test_training_flops_count_matches_hand_count():
  sys.path.insert(0, str(REPO_ROOT / "experiments"))
  import bench  # pylint: disable=g-import-not-at-top

  # linear: forward 2*7840 + weight gradient 2*7840, no input gradient.
  assert bench.training_flops_per_example(()) == 4 * 7840
  # mlp3: 3 * 2 * (235200 + 15000 + 500) minus the first layer's input gradient (2 * 235200).
  assert bench.training_flops_per_example((300, 50)) == 6 * 250700 - 2 * 235200


def test_step_profile_names_each_layer_and_part_and_counts_dot_flops():
  """experiments/profile_step.py on a small MLP's real scan: XLA's profile events map to the compiled ops,
  each op to its layer and its part of the step, and every dense layer's forward matmul is counted at
  exactly 2 x batch x fan-in x fan-out FLOPs."""
  sys.path.insert(0, str(REPO_ROOT / "experiments"))
  import profile_step  # pylint: disable=g-import-not-at-top

  batch, num_steps = 32, 3
  epoch, epoch_args, param_sizes = profile_step.scan_of_steps("mlp2", batch, num_steps)
  profile = profile_step.op_times(epoch, epoch_args, 1, param_sizes, per=num_steps)
  assert profile["ops"] and profile["ops_ms"] > 0 and profile["named_events_per_step"] >= 1
  parts = {(op["layer"], op["part"]) for op in profile["ops"]}
  assert {("dense0", "forward"), ("dense1", "forward"), ("dense1", "data gradient")} <= parts, parts
  assert any(part == "weight gradient" for _, part in parts), parts
  forward_flops = {op["layer"]: op["flops"] for op in profile["ops"] if op["part"] == "forward" and op["flops"]}
  assert forward_flops == {"dense0": 2 * batch * 784 * 30, "dense1": 2 * batch * 30 * 10}, forward_flops


def test_step_profile_rows_add_up_each_layers_part_longest_first():
  sys.path.insert(0, str(REPO_ROOT / "experiments"))
  import profile_step  # pylint: disable=g-import-not-at-top

  op = lambda layer, part, ms, flops: {"layer": layer, "part": part, "ms": ms, "flops": flops, "bytes": 8}
  profile = {"ops": [op("dense0", "forward", 1.0, 100), op("dense1", "forward", 6.0, 0),
                     op("dense0", "forward", 1.0, 300)], "ops_ms": 8.0}
  rows = profile_step.summarize(profile)["rows"]
  assert [(r["layer"], r["ms"], r["ops"], r["flops"], r["bytes"], r["share"]) for r in rows] == [
      ("dense1", 6.0, 1, 0, 8, 0.75), ("dense0", 2.0, 2, 400, 16, 0.25)]
  assert rows[1]["flop_per_s"] == 400 / 0.002
