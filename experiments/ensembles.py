"""Ensembles that reach the state of the art: a recipe trained as --seeds ensembles, each a whole
`jaxmnist train` command, timed from start to the printed test accuracy.

Commands that produced experiments/results/ensembles.{md,json} (the 48k split with validation, as
every preset trains; three ensembles of disjoint seeds each):
  python experiments/ensembles.py --name=mnist --model=cnn_995 --members=6
  python experiments/ensembles.py --name=fashion --dataset=fashion_mnist --model=cnn_fashion --members=3
One ensemble only (a first look): --ensembles=1; a later run of the same recipe keeps the ensembles
already in the results and trains the others. Extra flags for `jaxmnist train` go after `--`.

Each ensemble k trains seeds k*members .. (k+1)*members-1 in one process (`--seeds=a,b,...`), with the
preset's checkpoints and without the evaluation report (summary.json has what the table needs). The
results merge into OUT/ensembles.json by name, and OUT/ensembles.md is rewritten from all of them.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from experiments import provenance  # noqa: E402  pylint: disable=g-import-not-at-top


def train_ensemble(model: str, dataset: str, seeds, extra) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    command = [sys.executable, "-m", "jaxmnist", "train", f"--model={model}", f"--dataset={dataset}",
               f"--seeds={','.join(map(str, seeds))}", "--no-progress", "--no-evaluate", *extra,
               f"--workdir={Path(tmp) / 'run'}"]
    started = time.perf_counter()
    out = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if out.returncode:
      raise RuntimeError(f"{' '.join(command)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
  return {"seeds": list(seeds), "wall_s": round(wall, 1), "train_s": summary["train_seconds"],
          "ensemble_test_accuracy": summary["ensemble_test_accuracy"],
          "member_test_accuracy": summary["member_test_accuracy"],
          "member_valid_accuracy": summary["member_valid_accuracy"],
          "members": summary["members"], "parallelism": summary["parallelism"],
          "data_source": provenance.portable(summary["data_source"]).replace(tmp, "$TMPDIR"),
          "log": provenance.portable(out.stdout).replace(tmp, "$TMPDIR")}


def to_markdown(results: dict) -> str:
  lines = ["# Ensembles: a recipe's members trained in one program (`--seeds`)", "",
           "Each row is one whole `jaxmnist train --seeds=...` command on the 48k training split (20% held out "
           "for validation, each member its own), wall time from start to the printed test accuracy; "
           "the ensemble averages its members' probabilities.", ""]
  for name, r in results.items():
    lines += [f"## {name}: {r['recipe']}", "", f"Measured {r['date']} on {r['hardware']}; "
              f"command: `{r['command']}`.", "",
              "| seeds | ensemble test | members' test, mean ± std | members' validation, mean | wall s |",
              "|---|---|---|---|---|"]
    for e in r["ensembles"]:
      m, v = e["member_test_accuracy"], e["member_valid_accuracy"]
      lines.append(f"| {','.join(map(str, e['seeds']))} | {e['ensemble_test_accuracy']:.4f} | "
                   f"{m['mean']:.4f} ± {m['std']:.4f} | {v['mean']:.4f} | {e['wall_s']:.0f} |")
    if r.get("note"):
      lines += ["", r["note"]]
    accs = [e["ensemble_test_accuracy"] for e in r["ensembles"]]
    walls = [e["wall_s"] for e in r["ensembles"]]
    lines += ["", f"Ensembles: {statistics.mean(accs):.4f} mean, {min(accs):.4f} lowest; wall "
              f"{statistics.mean(walls) / 60:.1f} minutes mean, {max(walls) / 60:.1f} longest.", ""]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--name", required=True, help="the row's name in the results, e.g. mnist")
  parser.add_argument("--model", required=True)
  parser.add_argument("--dataset", default="mnist")
  parser.add_argument("--members", type=int, required=True)
  parser.add_argument("--ensembles", type=int, default=3)
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  parser.add_argument("extra", nargs="*", help="more `jaxmnist train` flags, after --")
  args = parser.parse_args()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / "ensembles.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  flags = " ".join([f"--model={args.model}", f"--dataset={args.dataset}", f"--seeds=<{args.members} seeds>",
                    *args.extra])
  entry = {"recipe": flags, "date": datetime.date.today().isoformat(),
           "hardware": f"{provenance.cpu_name()} ({os.cpu_count()} cores)",
           "command": "python " + " ".join(sys.argv).replace(str(REPO_ROOT) + "/", ""), "ensembles": []}
  if results.get(args.name, {}).get("recipe") == flags:  # the same recipe: keep its ensembles, add the rest
    entry["ensembles"] = results[args.name]["ensembles"]
  done = [e["seeds"] for e in entry["ensembles"]]
  for k in range(args.ensembles):
    seeds = range(k * args.members, (k + 1) * args.members)
    if list(seeds) in done:
      continue
    entry["ensembles"].append(train_ensemble(args.model, args.dataset, seeds, args.extra))
    e = entry["ensembles"][-1]
    print(f"seeds {list(seeds)}: ensemble {e['ensemble_test_accuracy']:.4f}, members "
          f"{e['member_test_accuracy']['mean']:.4f} ± {e['member_test_accuracy']['std']:.4f}, "
          f"{e['wall_s']:.0f} s", flush=True)
    results[args.name] = entry
    path.write_text(json.dumps(results, indent=1) + "\n")
    (out / "ensembles.md").write_text(to_markdown(results))
  print(to_markdown(results))


if __name__ == "__main__":
  main()
