"""What checkpointing costs training, at each preset's default --checkpoint-every.

Synopsis:
  python experiments/checkpoint_cost.py            # ~6 minutes on a 2-core CPU; writes results/checkpoint_cost.{md,json}

For mlp3 (100 of its 400 epochs: 4 saves at every 25) and cnn (its 2 epochs: a save after each), it
trains the same config with checkpoints on and off (--checkpoint-every=0), alternating, three times
each, in this process, on real MNIST, and compares the training loop's wall time (`train_seconds`,
which includes waiting for the last save to finish). Target: under 5% slower with checkpoints.
"""

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from jaxmnist import data, report, train  # noqa: E402
from jaxmnist.configs import PRESETS  # noqa: E402

CASES = {"mlp3": dataclasses.replace(PRESETS["mlp3"], epochs=100), "cnn": PRESETS["cnn"]}


def train_seconds(config, mnist) -> float:
  with tempfile.TemporaryDirectory() as tmp:
    return train.train_and_evaluate(config, Path(tmp) / "run", mnist, progress=False)["train_seconds"]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  args = parser.parse_args()
  mnist = data.load_mnist()
  results = {}
  for name, config in CASES.items():
    off = dataclasses.replace(config, checkpoint_every=0)
    train_seconds(off, mnist)  # compile once, so no timed run pays for it
    times = {"on": [], "off": []}
    for _ in range(args.repeats):
      times["off"].append(train_seconds(off, mnist))
      times["on"].append(train_seconds(config, mnist))
    on, off_median = statistics.median(times["on"]), statistics.median(times["off"])
    results[name] = {"epochs": config.epochs, "checkpoint_every": config.checkpoint_every, "seconds": times,
                     "median_on": on, "median_off": off_median, "overhead": on / off_median - 1}
    print(name, results[name], flush=True)
  date, cpu = datetime.date.today().isoformat(), report.cpu_name()
  lines = [f"# Checkpoint cost ({date}, {cpu})", "", "Command: `python experiments/checkpoint_cost.py`. Training "
           "loop wall time (median of 3, the wait for the last save included), checkpoints on vs off.", "",
           "| preset | epochs | --checkpoint-every | saves | off (s) | on (s) | overhead |", "|---|---:|---:|---:|---:|---:|---:|"]
  for name, r in results.items():
    saves = r["epochs"] // r["checkpoint_every"]
    lines.append(f"| {name} | {r['epochs']} | {r['checkpoint_every']} | {saves} | {r['median_off']:.2f} | "
                 f"{r['median_on']:.2f} | {r['overhead'] * 100:+.1f}% |")
  out = Path(args.out)
  (out / "checkpoint_cost.json").write_text(json.dumps({"date": date, "cpu": cpu, "results": results}, indent=1) + "\n")
  (out / "checkpoint_cost.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
