"""The search for a 99.5% recipe that trains in minutes: candidates x seeds, test and validation
accuracy and wall time each, written after every run (so a run cut short still reports).

Each candidate is the `cnn_fast` recipe (experiments/bench_fast.py) grown along one axis: epochs,
width, augmentation, label smoothing, batch; `cnn` and `cnn_wide` are there for reference. All train
on the 48k split (validation held out), the honest default. Run where it is cheap (a GPU: about 5
minutes for all; a 2-core CPU: hours), then confirm the winner on the CPU with bench_fast.py.
  python experiments/sweep_995.py --seeds=0,1,2 --out=experiments/results
  python experiments/sweep_995.py --candidates=fast32x64_shift_e8 --seeds=0   # one candidate
"""

import argparse
import dataclasses
import datetime
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from jaxmnist import data, models, parallel, train  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments import provenance  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.configs import PRESETS  # noqa: E402  pylint: disable=g-import-not-at-top

# Wider versions of the recipe's net, registered for this process only.
WIDTHS = {"fast32x64": (32, 64), "fast48x64": (48, 64)}
for _name, _widths in WIDTHS.items():
  models.MODELS.setdefault(_name, functools.partial(models.FastCNN, widths=_widths))

_FAST = dataclasses.replace(PRESETS["cnn_fast"], checkpoint_every=0)
CANDIDATES = {
    "cnn_fast_e1": _FAST,  # the recipe as it is, on 48k
    "fast24x32_shift_e6": dataclasses.replace(_FAST, epochs=6, augment="shift", label_smoothing=0.1),
    "fast24x32_shift_e10": dataclasses.replace(_FAST, epochs=10, augment="shift", label_smoothing=0.1),
    "fast32x64_shift_e6": dataclasses.replace(_FAST, model="fast32x64", epochs=6, augment="shift",
                                              label_smoothing=0.1),
    "fast32x64_shift_e10": dataclasses.replace(_FAST, model="fast32x64", epochs=10, augment="shift",
                                               label_smoothing=0.1),
    "fast32x64_affine_e10": dataclasses.replace(_FAST, model="fast32x64", epochs=10, augment="affine",
                                                label_smoothing=0.1),
    "fast32x64_shift_e15": dataclasses.replace(_FAST, model="fast32x64", epochs=15, augment="shift",
                                               label_smoothing=0.1),
    "fast48x64_shift_e10": dataclasses.replace(_FAST, model="fast48x64", epochs=10, augment="shift",
                                               label_smoothing=0.1),
    "fast32x64_shift_e10_b128": dataclasses.replace(_FAST, model="fast32x64", epochs=10, augment="shift",
                                                    label_smoothing=0.1, batch_size=128),
    "cnn_shift_e10": dataclasses.replace(PRESETS["cnn"], epochs=10, augment="shift", checkpoint_every=0),
    "cnn_wide": dataclasses.replace(PRESETS["cnn_wide"], checkpoint_every=0),
}


def run_one(config, mnist) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    started = time.perf_counter()
    summary = train.train_and_evaluate(config, Path(tmp) / "run", mnist, progress=False)
    wall = time.perf_counter() - started
  return {"test_accuracy": summary["test_accuracy"], "valid_accuracy": summary["valid_accuracy"],
          "train_s": summary["train_seconds"], "wall_s": round(wall, 2),
          "first_epoch_s": summary["first_epoch_seconds"], "steady_epoch_s": summary["steady_epoch_seconds"]}


def to_markdown(results: list[dict], header: str) -> str:
  lines = [header, "", "| candidate | model | epochs | augment | smoothing | batch | test (mean ± std) | min | "
           "valid (mean) | wall s per run | seeds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for name in dict.fromkeys(r["candidate"] for r in results):
    runs = [r for r in results if r["candidate"] == name]
    c = runs[0]["config"]
    tests = [r["test_accuracy"] for r in runs]
    spread = f" ± {statistics.stdev(tests):.4f}" if len(tests) > 1 else ""
    lines.append(f"| {name} | {c['model']} | {c['epochs']} | {c['augment']} | {c['label_smoothing']} | "
                 f"{c['batch_size']} | {statistics.mean(tests):.4f}{spread} | {min(tests):.4f} | "
                 f"{statistics.mean(r['valid_accuracy'] for r in runs):.4f} | "
                 f"{statistics.mean(r['wall_s'] for r in runs):.1f} | {len(runs)} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description="search for a fast 99.5% recipe")
  parser.add_argument("--candidates", default=",".join(CANDIDATES))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--data-dir", help="the four MNIST IDX files (else jaxmnist's usual sources)")
  parser.add_argument("--max-minutes", type=float, default=1e9, help="start no run after this many minutes")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  args = parser.parse_args()
  names = args.candidates.split(",")
  unknown = [n for n in names if n not in CANDIDATES]
  if unknown:
    sys.exit(f"unknown candidates {unknown}; choose from {', '.join(CANDIDATES)}")
  mnist = data.load_mnist("dir", args.data_dir) if args.data_dir else data.load_mnist()
  device = jax.devices()[0]
  hardware = f"{device.device_kind}" if device.platform != "cpu" else f"CPU {provenance.cpu_name()}"
  header = (f"# 99.5% search: {datetime.date.today()}, {hardware}, jax {jax.__version__}, "
            f"{parallel.make_mesh().size} device(s); 48k training split, test accuracy on the 10k.\n\n"
            f"Command: `python experiments/sweep_995.py --seeds={args.seeds}`. Wall time: the whole "
            f"training call (compilation, training, per-epoch validation, test evaluation).")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  tag = device.platform
  results, started = [], time.perf_counter()
  for name in names:
    for seed in (int(s) for s in args.seeds.split(",")):
      if time.perf_counter() - started > 60 * args.max_minutes:
        print(f"time is up: {name} seed {seed} and later not run", flush=True)
        break
      config = dataclasses.replace(CANDIDATES[name], seed=seed)
      row = {"candidate": name, "seed": seed, "config": dataclasses.asdict(config), **run_one(config, mnist)}
      results.append(row)
      print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
      (out / f"sweep_995-{tag}.json").write_text(json.dumps(results, indent=1) + "\n")
      (out / f"sweep_995-{tag}.md").write_text(to_markdown(results, header))
  print(to_markdown(results, header))


if __name__ == "__main__":
  main()
