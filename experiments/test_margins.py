"""How far every training-outcome test clears its threshold, on this machine and under perturbations.

Synopsis:
  python experiments/test_margins.py            # ~35 minutes on 2 CPU cores; writes results/test_margins.{md,json}
  python experiments/test_margins.py --quick    # baseline and broken learning only
  python experiments/test_margins.py --scenarios=real_cnn,export_clear   # those only, merged into the results

XLA's CPU results differ in their last bits between CPUs (AVX2, AVX-512), thread counts and jax
versions, and a short run on tiny data amplifies that. This script reruns each scenario of
`tests/training_outcomes.py` (the very functions the tests call) in a fresh process under each
perturbation below, standing in for another machine, and reports the margin of every asserted
quantity (negative: that test would fail). The last row switches learning off (lr 1e-30): every
test must then fail, which shows the tests can fail. It reads real MNIST and real Fashion-MNIST from
their usual sources (Fashion-MNIST offline: `sudo apt-get install dataset-fashion-mnist`). `real_cnn`
also serves its model and reads digits through the page in chromium, where Playwright and chromium
are installed (else those two quantities are left out).

Runtime on 2 shared CPU cores (AMD EPYC): about 30 minutes in all; real_fashion_linear, real_cnn and
export_clear took 14 minutes together (9 runs each, nearly all of it real_cnn); export_clear alone, 1.
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

# name -> (seed, extra environment, taskset CPU list or None)
PERTURBATIONS = {
    "baseline (seed 0)": (0, {}, None),
    "seed 1": (1, {}, None),
    "seed 2": (2, {}, None),
    "seed 3": (3, {}, None),
    "eigen single-threaded": (0, {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}, None),
    "one CPU (taskset)": (0, {}, "0"),
    "8 devices": (0, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, None),
}
SCENARIOS = ("toy_steps", "tiny_run", "cnn_tiny", "resnet_affine_tiny", "cnn_fast_tiny", "real_linear",
             "real_fashion_linear", "real_cnn", "export_clear")
UNTRAINED = ("toy_steps", "export_clear")  # scenarios without a run directory


def worker(seed: int, broken: bool, scenarios) -> dict:
  """Runs `scenarios` in this process; returns {scenario: measured quantities}."""
  from jaxmnist import data  # pylint: disable=g-import-not-at-top
  from tests import training_outcomes as outcomes  # pylint: disable=g-import-not-at-top

  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in scenarios:
      scenario = getattr(outcomes, name)
      kwargs = {"seed": seed, "broken": broken}
      if name not in UNTRAINED:
        kwargs.update(workdir=Path(tmp) / name / "run")
      if name in ("real_linear", "real_cnn"):
        kwargs["mnist"] = data.load_mnist()
      if name == "real_fashion_linear":
        kwargs["fashion"] = data.load_mnist(dataset="fashion_mnist")  # e.g. from Debian's dataset-fashion-mnist
      measured = scenario(**kwargs)
      results[name] = {quantity: measured[quantity] for quantity, _, _ in outcomes.THRESHOLDS[name]
                       if quantity in measured}
  return results


def run_perturbation(seed, env, cpus, scenarios, broken=False) -> dict:
  command = [sys.executable, __file__, "--worker", f"--seed={seed}",
             f"--scenarios={','.join(scenarios)}"]
  command += ["--broken"] if broken else []
  if cpus is not None:
    command = ["taskset", "-c", cpus, *command]
  result = subprocess.run(command, env={**os.environ, "JAX_PLATFORMS": "cpu", **env}, capture_output=True,
                          text=True, check=False, cwd=REPO_ROOT)
  if result.returncode != 0:
    raise RuntimeError(f"worker failed: {result.stderr[-2000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(saved: dict) -> str:
  from tests import training_outcomes as outcomes  # pylint: disable=g-import-not-at-top

  table = saved["results"]
  lines = ["# Margins of the training-outcome tests", "",
           "Command: `python experiments/test_margins.py` (or `--scenarios=NAME,...` for some, merged into "
           "these results). Each cell: the measured value and its margin over the test's bound (negative: the "
           "test fails). `broken` switches learning off "
           f"(lr {outcomes.BROKEN_LEARNING_RATE}; for export_clear, zero parameters): every test must fail there.",
           ""]
  for scenario in SCENARIOS:
    measured = saved["measured"].get(scenario)
    if measured is None:
      continue
    for quantity, op, bound in outcomes.THRESHOLDS[scenario]:
      rows = {name: results[scenario] for name, results in table.items()
              if quantity in results.get(scenario, {})}
      if not rows:
        continue
      lines += [f"## {scenario}: {quantity} {op} {bound}", "",
                f"Measured {measured['date']} on {measured['cpu']} ({measured['cores']} cores): "
                f"`{measured['command']}`.", "",
                "| perturbation | value | margin |", "|---|---|---|"]
      for name, results in rows.items():
        value, margin = results[quantity], outcomes.margins(scenario, results)[quantity]
        lines.append(f"| {name} | {value:.4f} | {margin:+.4f} |")
      worst = min(outcomes.margins(scenario, r)[quantity] for n, r in rows.items() if n != "broken")
      lines += ["", f"Worst margin with learning on: {worst:+.4f}", ""]
  return "\n".join(lines) + "\n"


def merged(path: Path, table: dict, scenarios, date: str, cpu: str) -> dict:
  """The results saved at `path`, with those of `scenarios` replaced by `table`'s."""
  saved = json.loads(path.read_text()) if path.exists() else {"results": {}}
  # Files written before scenarios carried their own date said once when everything was measured.
  old = {"date": saved.pop("date", None), "cpu": saved.pop("cpu", None), "cores": 2,
         "command": "python experiments/test_margins.py"}
  measured = saved.get("measured") or {name: old for name in SCENARIOS
                                       if any(name in r for r in saved["results"].values())}
  for perturbation in saved["results"].values():  # a scenario measured again keeps no row of an older set
    for name in scenarios:
      perturbation.pop(name, None)
  for name, results in table.items():
    saved["results"].setdefault(name, {}).update(results)
  saved["results"] = {name: results for name, results in saved["results"].items() if results}
  command = "python experiments/test_margins.py" + (
      "" if list(scenarios) == list(SCENARIOS) else f" --scenarios={','.join(scenarios)}")
  measured.update({name: {"date": date, "cpu": cpu, "cores": os.cpu_count(), "command": command}
                   for name in scenarios})
  return {"measured": measured, "results": saved["results"]}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--broken", action="store_true")
  parser.add_argument("--quick", action="store_true", help="baseline and broken learning only")
  parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                      help="comma-separated scenarios to run (default: all); the others' results are kept")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  args = parser.parse_args()
  scenarios = [name for name in args.scenarios.split(",") if name]
  unknown = sorted(set(scenarios) - set(SCENARIOS))
  if unknown:
    parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
  if args.worker:
    print(json.dumps(worker(args.seed, args.broken, scenarios)))
    return

  from experiments import provenance  # pylint: disable=g-import-not-at-top

  names = list(PERTURBATIONS)[:1] if args.quick else list(PERTURBATIONS)
  table = {}
  for name in names:
    print(f"{name} ...", flush=True)
    table[name] = run_perturbation(*PERTURBATIONS[name], scenarios)
  print("broken ...", flush=True)
  table["broken"] = run_perturbation(0, {}, None, scenarios, broken=True)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  suffix = "-quick" if args.quick else ""
  saved = merged(out / f"test_margins{suffix}.json", table, scenarios, datetime.date.today().isoformat(),
                 provenance.cpu_name())
  (out / f"test_margins{suffix}.json").write_text(json.dumps(saved, indent=1) + "\n")
  (out / f"test_margins{suffix}.md").write_text(markdown(saved))
  print(markdown(saved))


if __name__ == "__main__":
  main()
