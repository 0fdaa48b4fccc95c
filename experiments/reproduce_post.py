"""Reproduces the post's results table: jaxmnist and PyTorch side by side, same data, same splits.

The committed table (3 seeds, 400 epochs, both frameworks; about 40 minutes on 2 CPU cores):
  python experiments/reproduce_post.py
A few minutes (same script, shortened; writes to a scratch folder):
  python experiments/reproduce_post.py --epochs=10 --out=reproduce-short

jaxmnist trains a model's seeds in one run, as the members of one ensemble (`--seeds`: one compiled
program; each member is the model its seed trains alone); PyTorch trains them one after another. Each
(framework, model, seed) result is saved as runs/<framework>-<model>-seed<k>.json as soon as it
finishes, and a rerun skips the results already there, so an interrupted reproduction resumes. Then
it writes results.md (table, commands, date, CPU, versions) and one validation-curve PNG per model.
PyTorch runs need `pip install -e '.[torch]'`; without torch only the jaxmnist columns are filled.
"""

import argparse
import dataclasses
import datetime
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "experiments"))
from jaxmnist import data, report, train  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments import provenance  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.configs import POST_RESULTS, PRESETS  # noqa: E402  pylint: disable=g-import-not-at-top

MODELS = ("linear", "mlp2", "mlp3")
THRESHOLDS = (0.90, 0.97)


def run_jax(name: str, mnist: data.Mnist, epochs: int, seed: int) -> dict:
  """Preset `name` for `epochs` on `mnist` (MNIST or Fashion-MNIST, its own dataset); seconds are wall time."""
  config = dataclasses.replace(PRESETS[name], epochs=epochs, seed=seed, dataset=mnist.dataset)
  started = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    summary = train.train_and_evaluate(config, Path(workdir) / "run", mnist, progress=False)
    rows = report.read_metrics_csv(Path(workdir) / "run" / "metrics.csv")
  return {"valid_curve": [r["valid_accuracy"] for r in rows], "valid_accuracy": summary["valid_accuracy"],
          "test_accuracy": summary["test_accuracy"], "seconds": time.perf_counter() - started}


def run_jax_seeds(name: str, mnist: data.Mnist, epochs: int, seeds) -> list[dict]:
  """Preset `name` for `epochs` on `mnist` (MNIST or Fashion-MNIST, its own dataset), every seed a member of
  one ensemble (`--seeds`): one compiled program trains them all, and each member is the model its seed
  trains alone. Returns a result per seed; its seconds are the run's wall time shared out over the seeds."""
  seeds = tuple(seeds)
  config = dataclasses.replace(PRESETS[name], epochs=epochs, seed=seeds[0], seeds=seeds, dataset=mnist.dataset)
  started = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    summary = train.train_and_evaluate(config, Path(workdir) / "run", mnist, progress=False)
    lines = report.read_metrics_csv(Path(workdir) / "run" / "metrics.csv")
  seconds = time.perf_counter() - started
  return [{"valid_curve": [line["valid_accuracy"] for line in lines if line["seed"] == member["seed"]],
           "valid_accuracy": member["valid_accuracy"], "test_accuracy": member["test_accuracy"],
           "seconds": seconds / len(seeds), "ensemble_seconds": seconds, "ensemble_seeds": list(seeds),
           "ensemble_test_accuracy": summary["ensemble_test_accuracy"]} for member in summary["members"]]


def run_torch(name: str, mnist: data.Mnist, epochs: int, seed: int, loop: str) -> dict:
  import torch_post  # pylint: disable=g-import-not-at-top  (torch is optional)

  return torch_post.train_post(name, mnist, epochs, seed, loop)


def first_epoch_reaching(curve, threshold):
  return next((epoch for epoch, acc in enumerate(curve, start=1) if acc >= threshold), None)


def mean_std(values) -> str:
  if not values:
    return "n/a"
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f"{statistics.mean(values):.4f} ± {std:.4f}"


def reached(runs, threshold) -> str:
  epochs = [first_epoch_reaching(r["valid_curve"], threshold) for r in runs]
  if not epochs:
    return "n/a"
  return "/".join("never" if e is None else str(e) for e in epochs)


def plot_curves(path: Path, name: str, runs_by_framework: dict) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(8, 4.8))
  for (framework, runs), color in zip(runs_by_framework.items(), ("tab:blue", "tab:orange")):
    for i, run in enumerate(runs):
      epochs = np.arange(1, len(run["valid_curve"]) + 1)
      ax.plot(epochs, run["valid_curve"], color=color, alpha=0.6, linewidth=1,
              label=f"{framework} ({len(runs)} seeds)" if i == 0 else None)
  post = POST_RESULTS[name]
  ax.axhline(post.valid, color="gray", linestyle="--", label=f"post's final validation ({post.valid})")
  ax.set_ylim(max(0.0, min(min(r["valid_curve"]) for rs in runs_by_framework.values() for r in rs) - 0.02), 1.0)
  ax.set_xlabel("epoch")
  ax.set_ylabel("validation accuracy")
  ax.set_title(f"{name}: validation accuracy per epoch, jaxmnist vs PyTorch (post's code)")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def environment() -> str:
  import jax  # pylint: disable=g-import-not-at-top

  versions = [f"python {platform.python_version()}", f"jax {jax.__version__}", f"numpy {np.__version__}"]
  if importlib.util.find_spec("torch"):
    import torch  # pylint: disable=g-import-not-at-top
    versions.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
  cpu = provenance.cpu_name()
  import os  # pylint: disable=g-import-not-at-top
  return f"{cpu} ({os.cpu_count()} cores), device {jax.devices()[0].device_kind}; " + ", ".join(versions)


def write_report(out: Path, args, all_runs: dict) -> None:
  lines = [
      "# The post's results, reproduced: jaxmnist and PyTorch",
      "",
      f"Written {datetime.datetime.now():%Y-%m-%d %H:%M}; {environment()}.",
      f"Command: `python experiments/reproduce_post.py {' '.join(sys.argv[1:])}`".replace(" `", " `", 1),
      f"Epochs: {args.epochs}; seeds: {args.seeds}; PyTorch loop: {args.torch_loop} "
      "(`post`: DataLoader over (x, y) pairs with SubsetRandomSampler, as the post wrote it).",
      "Every run uses the same verified MNIST arrays; seed k gives both frameworks the same 80/20 split.",
      "Accuracies count correct examples over the whole set (mean ± sample std over seeds).",
      "",
      "| model | post valid | post test | PyTorch valid | PyTorch test | jaxmnist valid | jaxmnist test | "
      "s/run PyTorch | s/run jaxmnist (all seeds' run / seeds) | epoch ≥90% PyTorch | epoch ≥90% jaxmnist | epoch ≥97% PyTorch | "
      "epoch ≥97% jaxmnist |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name in args.models:
    torch_runs, jax_runs = all_runs[name].get("PyTorch", []), all_runs[name].get("jaxmnist", [])
    post = POST_RESULTS[name]
    seconds = lambda runs: f"{statistics.mean(r['seconds'] for r in runs):.0f}" if runs else "n/a"
    lines.append(
        f"| {name} | {post.valid} | {post.test} | {mean_std([r['valid_accuracy'] for r in torch_runs])} | "
        f"{mean_std([r['test_accuracy'] for r in torch_runs])} | {mean_std([r['valid_accuracy'] for r in jax_runs])} | "
        f"{mean_std([r['test_accuracy'] for r in jax_runs])} | {seconds(torch_runs)} | {seconds(jax_runs)} | "
        f"{reached(torch_runs, 0.90)} | {reached(jax_runs, 0.90)} | {reached(torch_runs, 0.97)} | "
        f"{reached(jax_runs, 0.97)} |")
  lines += ["", "Epoch columns list each seed's first epoch at or above the threshold ('never' if none).",
            "Per-run curves and numbers: runs/*.json. Figures: curves-<model>.png."]
  (out / "results.md").write_text("\n".join(lines) + "\n")
  for name in args.models:
    if any(all_runs[name].values()):
      plot_curves(out / f"curves-{name}.png", name, {k: v for k, v in all_runs[name].items() if v})


def parse_args(argv=None) -> argparse.Namespace:
  """The command's flags (the README's comparison command is checked against them in tests)."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  parser.add_argument("--models", default=",".join(MODELS), type=lambda s: s.split(","))
  parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
  parser.add_argument("--epochs", type=int, default=400)
  parser.add_argument("--torch-loop", default="post", choices=["post", "tuned"])
  parser.add_argument("--frameworks", default="jaxmnist,PyTorch", type=lambda s: s.split(","))
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results" / "reproduce"))
  return parser.parse_args(argv)


def main():
  args = parse_args()

  out = Path(args.out)
  (out / "runs").mkdir(parents=True, exist_ok=True)
  mnist = data.load_mnist()
  frameworks = [f for f in args.frameworks if f != "PyTorch" or importlib.util.find_spec("torch")]
  all_runs = {name: {f: [] for f in frameworks} for name in args.models}
  # All jaxmnist runs before any PyTorch run: once torch has run in a process, its idle OpenMP
  # threads slow XLA's CPU threads in the same process (see experiments/bench.py).
  for framework in frameworks:
    for name in args.models:
      paths = {seed: out / "runs" / f"{framework}-{name}-seed{seed}-epochs{args.epochs}.json" for seed in args.seeds}
      missing = [seed for seed, path in paths.items() if not path.exists()]
      if framework == "jaxmnist" and missing:  # the missing seeds in one run: one ensemble
        fresh = dict(zip(missing, run_jax_seeds(name, mnist, args.epochs, missing)))
      for seed, path in paths.items():
        if path.exists():
          result = json.loads(path.read_text())
        else:
          result = fresh[seed] if framework == "jaxmnist" else run_torch(name, mnist, args.epochs, seed,
                                                                         args.torch_loop)
          result.update(framework=framework, model=name, seed=seed, epochs=args.epochs,
                        data=provenance.portable(mnist.source))
          path.write_text(json.dumps(result) + "\n")
        all_runs[name][framework].append(result)
        print(f"{framework} {name} seed {seed}: valid {result['valid_accuracy']:.4f}, test "
              f"{result['test_accuracy']:.4f}, {result['seconds']:.0f} s", flush=True)
  write_report(out, args, all_runs)
  print((out / "results.md").read_text())


if __name__ == "__main__":
  main()
