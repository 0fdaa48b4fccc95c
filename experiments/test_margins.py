"""How far every training-outcome test clears its threshold, on this machine and under perturbations.

Synopsis:
  python experiments/test_margins.py            # ~15 minutes on 2 CPU cores; writes results/test_margins.{md,json}
  python experiments/test_margins.py --quick    # baseline and broken learning only

XLA's CPU results differ in their last bits between CPUs (AVX2, AVX-512), thread counts and jax
versions, and a short run on tiny data amplifies that. This script reruns each scenario of
`tests/training_outcomes.py` (the very functions the tests call) in a fresh process under each
perturbation below, standing in for another machine, and reports the margin of every asserted
quantity (negative: that test would fail). The last row switches learning off (lr 1e-30): every
test must then fail, which shows the tests can fail. It reads real MNIST and real Fashion-MNIST from
their usual sources (Fashion-MNIST offline: `sudo apt-get install dataset-fashion-mnist`).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# name -> (seed, loop, extra environment, taskset CPU list or None)
PERTURBATIONS = {
    "baseline (seed 0, scan)": (0, "scan", {}, None),
    "seed 1": (1, "scan", {}, None),
    "seed 2": (2, "scan", {}, None),
    "seed 3": (3, "scan", {}, None),
    "python loop": (0, "python", {}, None),
    "eigen single-threaded": (0, "scan", {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}, None),
    "one CPU (taskset)": (0, "scan", {}, "0"),
    "8 devices": (0, "scan", {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, None),
}
SCENARIOS = ("toy_steps", "tiny_run", "cnn_tiny", "resnet_affine_tiny", "cnn_fast_tiny", "real_linear",
             "real_fashion_linear")


def worker(seed: int, loop: str, broken: bool) -> dict:
  """Runs every scenario in this process; returns {scenario: measured quantities}."""
  from jaxmnist import data  # pylint: disable=g-import-not-at-top
  from tests import training_outcomes as outcomes  # pylint: disable=g-import-not-at-top

  mnist = data.load_mnist()
  fashion = data.load_mnist(dataset="fashion_mnist")  # e.g. from Debian's dataset-fashion-mnist
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in SCENARIOS:
      scenario = getattr(outcomes, name)
      kwargs = {"seed": seed, "broken": broken}
      if name != "toy_steps":
        kwargs.update(workdir=Path(tmp) / name, loop=loop)
      if name == "real_linear":
        kwargs["mnist"] = mnist
      if name == "real_fashion_linear":
        kwargs["fashion"] = fashion
      measured = scenario(**kwargs)
      results[name] = {quantity: measured[quantity] for quantity, _, _ in outcomes.THRESHOLDS[name]}
  return results


def run_perturbation(seed, loop, env, cpus, broken=False) -> dict:
  command = [sys.executable, __file__, "--worker", f"--seed={seed}", f"--loop={loop}"]
  command += ["--broken"] if broken else []
  if cpus is not None:
    command = ["taskset", "-c", cpus, *command]
  result = subprocess.run(command, env={**os.environ, "JAX_PLATFORMS": "cpu", **env}, capture_output=True,
                          text=True, check=False, cwd=REPO_ROOT)
  if result.returncode != 0:
    raise RuntimeError(f"worker failed: {result.stderr[-2000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(table: dict, date: str, cpu: str) -> str:
  from tests import training_outcomes as outcomes  # pylint: disable=g-import-not-at-top

  lines = [f"# Margins of the training-outcome tests ({date}, {cpu})", "",
           "Command: `python experiments/test_margins.py`. Each cell: the measured value and its margin "
           "over the test's bound (negative: the test fails). `broken` switches learning off "
           f"(lr {outcomes.BROKEN_LEARNING_RATE}): every test must fail there.", ""]
  for scenario in SCENARIOS:
    for quantity, op, bound in outcomes.THRESHOLDS[scenario]:
      lines += [f"## {scenario}: {quantity} {op} {bound}", "", "| perturbation | value | margin |", "|---|---|---|"]
      for name, results in table.items():
        value = results[scenario][quantity]
        margin = outcomes.margins(scenario, results[scenario])[quantity]
        lines.append(f"| {name} | {value:.4f} | {margin:+.4f} |")
      worst = min(outcomes.margins(scenario, r[scenario])[quantity] for n, r in table.items() if n != "broken")
      lines += ["", f"Worst margin with learning on: {worst:+.4f}", ""]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--loop", default="scan")
  parser.add_argument("--broken", action="store_true")
  parser.add_argument("--quick", action="store_true", help="baseline and broken learning only")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(args.seed, args.loop, args.broken)))
    return

  from jaxmnist import report  # pylint: disable=g-import-not-at-top

  names = list(PERTURBATIONS)[:1] if args.quick else list(PERTURBATIONS)
  table = {}
  for name in names:
    print(f"{name} ...", flush=True)
    table[name] = run_perturbation(*PERTURBATIONS[name])
  print("broken ...", flush=True)
  table["broken"] = run_perturbation(0, "scan", {}, None, broken=True)
  date, cpu = datetime.date.today().isoformat(), report.cpu_name()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  suffix = "-quick" if args.quick else ""
  (out / f"test_margins{suffix}.json").write_text(json.dumps({"date": date, "cpu": cpu, "results": table},
                                                              indent=1) + "\n")
  (out / f"test_margins{suffix}.md").write_text(markdown(table, date, cpu))
  print(markdown(table, date, cpu))


if __name__ == "__main__":
  main()
