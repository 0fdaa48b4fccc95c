"""What checkpointing costs training, at each preset's default --checkpoint-every.

Synopsis:
  python experiments/checkpoint_cost.py            # ~12 minutes on a 2-core CPU; writes results/checkpoint_cost.{md,json}

For mlp3 (100 of its 400 epochs: 4 saves at every 25) and the CNN presets cnn (its 2 epochs), cnn_fast
(its 1 epoch) and cnn_995 (3 of its 10 epochs), each saving after every epoch, it trains the same config
with checkpoints on and off (--checkpoint-every=0), alternating, --repeats times each, in this process, on
real MNIST, and reports two figures:
- the training loop's wall time (`train_seconds`, which includes waiting for the last save), on against
  off: everything checkpointing costs, the background writes' share of the cores included, but as noisy
  as this shared machine (a few percent between identical runs);
- the seconds the loop spent blocked in the Saver (each save's device-to-host copy and hand-over, and
  the wait for the last write), measured around its calls: what the loop itself waits for, nearly
  free of noise.
Target: under 3% for the CNN presets, within noise for the post's.
"""

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from jaxmnist import checkpoint, data, train  # noqa: E402
from experiments import provenance  # noqa: E402
from jaxmnist.configs import PRESETS  # noqa: E402

CASES = {"mlp3": dataclasses.replace(PRESETS["mlp3"], epochs=100), "cnn": PRESETS["cnn"],
         "cnn_fast": PRESETS["cnn_fast"], "cnn_995": dataclasses.replace(PRESETS["cnn_995"], epochs=3)}
BLOCKED = {"seconds": 0.0}  # time spent inside the Saver's calls, summed over a run


def _timed(method):
  def timed(*args, **kwargs):
    started = time.perf_counter()
    try:
      return method(*args, **kwargs)
    finally:
      BLOCKED["seconds"] += time.perf_counter() - started
  return timed


# The experiment's own instrument: every call the training loop makes into the Saver, timed.
for _name in ("save", "close"):  # (not __init__: it runs before the loop's clock starts)
  setattr(checkpoint.Saver, _name, _timed(getattr(checkpoint.Saver, _name)))


def train_seconds(config, mnist) -> tuple[float, float]:
  """The training loop's seconds, and the part of them spent in the Saver."""
  BLOCKED["seconds"] = 0.0
  with tempfile.TemporaryDirectory() as tmp:
    seconds = train.train_and_evaluate(config, Path(tmp) / "run", mnist, progress=False)["train_seconds"]
  return seconds, BLOCKED["seconds"]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--presets", default=",".join(CASES), help="a comma-separated subset of " + ", ".join(CASES))
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  args = parser.parse_args()
  mnist = data.load_mnist()
  results = {}
  for name, config in ((name, CASES[name]) for name in args.presets.split(",")):
    off = dataclasses.replace(config, checkpoint_every=0)
    train_seconds(off, mnist)  # compile once, so no timed run pays for it
    times, blocked = {"on": [], "off": []}, []
    for _ in range(args.repeats):
      times["off"].append(train_seconds(off, mnist)[0])
      seconds, in_saver = train_seconds(config, mnist)
      times["on"].append(seconds)
      blocked.append(in_saver / seconds)
    on, off_median = statistics.median(times["on"]), statistics.median(times["off"])
    results[name] = {"epochs": config.epochs, "checkpoint_every": config.checkpoint_every, "seconds": times,
                     "median_on": on, "median_off": off_median, "overhead": on / off_median - 1,
                     "blocked_share": statistics.median(blocked)}
    print(name, results[name], flush=True)
  date, cpu = datetime.date.today().isoformat(), provenance.cpu_name()
  load = open("/proc/loadavg").read().split()[0] if Path("/proc/loadavg").exists() else "unknown"
  lines = [f"# Checkpoint cost ({date}, {cpu}, {os.cpu_count()} cores)", "",
           f"Command: `python experiments/checkpoint_cost.py --repeats={args.repeats}`. Training loop wall time "
           f"(median of {args.repeats}, the wait for the last save included), checkpoints on vs off, alternating; "
           f"and the share of the loop spent blocked in the Saver (its calls timed). Load average at the end: {load}.",
           "", "| preset | epochs | --checkpoint-every | saves | off (s) | on (s) | on vs off | blocked in the Saver |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for name, r in results.items():
    saves = r["epochs"] // r["checkpoint_every"]
    lines.append(f"| {name} | {r['epochs']} | {r['checkpoint_every']} | {saves} | {r['median_off']:.2f} | "
                 f"{r['median_on']:.2f} | {r['overhead'] * 100:+.1f}% | {r['blocked_share'] * 100:.1f}% |")
  out = Path(args.out)
  (out / "checkpoint_cost.json").write_text(json.dumps({"date": date, "cpu": cpu, "results": results}, indent=1) + "\n")
  (out / "checkpoint_cost.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
