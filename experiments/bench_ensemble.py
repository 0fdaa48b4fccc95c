"""Many models in one program: N seeds (or N learning rates) as N processes against one `--seeds=N` (or
`--lr=a,b,c,d`) process.

Command that produced experiments/results/bench_ensemble-cpu.{md,json} (about 35 minutes on 2 CPU cores):
  python experiments/bench_ensemble.py
Parts can run alone: --parts=cnn_fast (10 seeds of cnn_fast, one epoch on the full 60k, as
experiments/bench_fast.py races it), --parts=mlp3 (3 seeds of the post's mlp3, 400 epochs on the 48k
split), --parts=sweep (4 learning rates of mlp3, 100 epochs: `--lr=0.01,0.03,0.1,0.3` against
`--lr=v` each), --parts=epoch (one compiled epoch of 1 member against one of --members members, in this process:
the GPU check of experiments/gpu_check.sh). On a machine without jaxmnist's data cache: --data-dir=DIR.

What is measured: the wall time of whole `python -m jaxmnist train` commands, start to printed test
accuracy, with `--checkpoint-every=0 --no-evaluate --no-progress` (the lean command of bench_fast's
whole-process row) and a warm compiled-program cache: before the timed commands, one untimed command
of each kind (other seeds: every seed shares its program) fills a private cache. The separate
processes run one after another, as a user's shell loop runs them. Each member's test accuracy is set
beside its seed's own run: the members are the same models, so they agree within a few examples.
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

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # a GPU: leave memory to the commands

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "experiments"))
import bench_fast  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist import data, models, parallel, programs  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments import provenance  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.configs import PRESETS  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.optimizer import make_optimizer, steps_per_epoch  # noqa: E402  pylint: disable=g-import-not-at-top

LEAN = ["--checkpoint-every=0", "--no-evaluate", "--no-progress"]
SWEEP_RATES = ("0.01", "0.03", "0.1", "0.3")
# (preset, each separate process's flag, the one process's flag, extra flags, target: the one process's wall
# time over the separate processes')
PARTS = {"cnn_fast": ("cnn_fast", [f"--seed={s}" for s in range(10)], "--seeds=10", ["--valid-fraction=0"], 0.7),
         "mlp3": ("mlp3", [f"--seed={s}" for s in range(3)], "--seeds=3", [], 0.9),
         "sweep": ("mlp3", [f"--lr={v}" for v in SWEEP_RATES], f"--lr={','.join(SWEEP_RATES)}", ["--epochs=100"],
                   0.8)}


def _command(preset: str, members_flag: str, extra, workdir: Path) -> list[str]:
  return [sys.executable, "-m", "jaxmnist", "train", f"--model={preset}", members_flag, *extra, *LEAN,
          f"--workdir={workdir}"]


def _summary(workdir: Path) -> dict:
  return json.loads((workdir / "summary.json").read_text())


def processes_against_one(part: str, data_dir) -> dict:
  """`PARTS[part]`'s members as separate processes, then as one process, with a warm cache."""
  preset, flags, one_flag, extra, target = PARTS[part]
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    env = bench_fast.private_cache(tmp, data_dir)
    # Warm-up, so that the timed commands find their compiled programs in the cache: other seeds (a seed is an
    # argument of the program), or the same rates for one epoch (a single run's rate is one of its constants;
    # a sweep's rates are arguments). One epoch where the schedule is constant (its length is then no
    # constant of the program either).
    warm = extra + (["--epochs=1"] if PRESETS[preset].schedule == "constant" else [])
    sweep = one_flag.startswith("--lr=")
    for k, flag in enumerate(flags if sweep else ["--seed=1000"]):
      bench_fast._wall(_command(preset, flag, warm, tmp / f"warm-single{k}"), env)
    other_seeds = "--seeds=" + ",".join(str(1000 + s) for s in range(len(flags)))
    bench_fast._wall(_command(preset, one_flag if sweep else other_seeds, warm, tmp / "warm-one"), env)
    separate = []
    for k, flag in enumerate(flags):
      wall, _ = bench_fast._wall(_command(preset, flag, extra, tmp / f"member{k}"), env)
      summary = _summary(tmp / f"member{k}")
      separate.append({"flag": flag, "wall_s": wall, "train_s": summary["train_seconds"],
                       "test_accuracy": summary["test_accuracy"], "valid_accuracy": summary["valid_accuracy"]})
      print(json.dumps(separate[-1]), flush=True)
    wall, stdout = bench_fast._wall(_command(preset, one_flag, extra, tmp / "one"), env)
    summary = _summary(tmp / "one")
  one = {"wall_s": wall, "train_s": summary["train_seconds"], "members": summary["members"],
         "member_test_accuracy": summary.get("member_test_accuracy"), "ensemble_test_accuracy":
         summary.get("ensemble_test_accuracy"), "best_member": summary.get("best_member"),
         "parallelism": summary["parallelism"], "log": provenance.portable(stdout).replace(str(tmp), "$TMPDIR")}
  separate_wall = sum(r["wall_s"] for r in separate)
  # The machine's 1-minute load average at the end: above the core count, something else was running.
  result = {"load_average_at_end": round(os.getloadavg()[0], 2),
            "preset": preset, "members": flags, "one_flag": one_flag, "flags": extra + LEAN, "separate": separate,
            "one_process": one,
            "separate_wall_s": round(separate_wall, 2), "ratio": round(wall / separate_wall, 3), "target": target,
            "met": wall / separate_wall <= target}
  print(json.dumps({k: v for k, v in result.items() if k not in ("separate", "one_process")}), flush=True)
  return result


def epoch_times(mnist: data.Mnist, num_members: int, repeats: int = 5) -> dict:
  """One compiled cnn_fast epoch (full 60k) for 1 member and for `num_members`, median of `repeats`."""
  out = {"num_members": num_members, "device": jax.devices()[0].device_kind}
  for members in (1, num_members):
    seeds = tuple(range(members)) if members > 1 else ()
    config = dataclasses.replace(PRESETS["cnn_fast"], valid_fraction=0.0, seeds=seeds)
    mesh = parallel.make_mesh(1)
    model = models.build_model(config.model)
    arrays = programs.place_data(mnist, config, mesh)
    optimizer = make_optimizer(config, steps_per_epoch(config, arrays["train_indices"].shape[-1]))
    run = programs.Programs(config, model, optimizer, mesh)
    epoch_fn, state = run.train_epoch, run.init()
    times = []
    for repeat in range(repeats + 1):  # the first compiles
      started = time.perf_counter()
      state, sums = jax.block_until_ready(epoch_fn(state, arrays["images"], arrays["labels"],
                                                   arrays["train_indices"], 1))
      times.append(time.perf_counter() - started)
    out[f"epoch_s_{members}"] = round(statistics.median(times[1:]), 4)
    out[f"first_epoch_s_{members}"] = round(times[0], 3)
    del state, sums
    jnp.zeros(()).block_until_ready()
  out["ratio"] = round(out[f"epoch_s_{num_members}"] / out["epoch_s_1"], 3)
  print(json.dumps(out), flush=True)
  return out


def to_markdown(results: dict) -> str:
  lines = [f"# Many models in one program: {results['environment']}", "",
           f"Command: `{results['command']}`. One sitting, one machine: the ratios compare like with like.",
           "Wall time of whole `python -m jaxmnist train` commands, start to printed test accuracy, with "
           f"`{' '.join(LEAN)}` and a warm compiled-program cache.", ""]
  for part in PARTS:
    r = results.get(part)
    if not r:
      continue
    one, separate = r["one_process"], r["separate"]
    flags = " ".join(r["flags"])
    members = r.get("members") or [f"--seed={seed}" for seed in r["seeds"]]  # results of before the sweep part
    one_flag = r.get("one_flag", f"--seeds={len(members)}")
    if one.get("best_member") is not None:  # a sweep: its best member by validation, no ensemble
      best = one["members"][one["best_member"]]
      one_accuracy = f"best by validation: member {one['best_member']}, test {best['test_accuracy']:.4f}"
    else:
      one_accuracy = (f"{one['member_test_accuracy']['mean']:.4f} ± {one['member_test_accuracy']['std']:.4f}; "
                      f"ensemble {one['ensemble_test_accuracy']:.4f}")
    lines += [f"## {r['preset']}: {len(members)} members, `{one_flag}` (`{flags}`)", "",
              "| | wall s | training s | test accuracy |", "|---|---|---|---|",
              f"| {len(separate)} separate processes (`{members[0]}`, ...) | {r['separate_wall_s']:.1f} "
              f"({statistics.mean(x['wall_s'] for x in separate):.1f} each) | "
              f"{sum(x['train_s'] for x in separate):.1f} | "
              f"{statistics.mean(x['test_accuracy'] for x in separate):.4f} ± "
              f"{statistics.stdev(x['test_accuracy'] for x in separate):.4f} (mean ± std) |",
              f"| one process (`{one_flag}`) | {one['wall_s']:.1f} | {one['train_s']:.1f} | {one_accuracy} |", "",
              f"Ratio: {r['ratio']:.2f}x (target ≤ {r['target']}x): {'met' if r['met'] else 'NOT met'}. "
              f"Parallelism: {one['parallelism']}. Load average at the end: {r.get('load_average_at_end', 'not recorded')}.", "",
              *([r["note"], ""] if r.get("note") else []),
              "| member | test accuracy alone | as a member | validation as a member | wall s alone |",
              "|---|---|---|---|---|"]
    lines += [f"| `{flag}` | {s['test_accuracy']:.4f} | {m['test_accuracy']:.4f} | "
              f"{m['valid_accuracy'] or 0:.4f} | {s['wall_s']:.1f} |".replace("| 0.0000 |", "| none |") for flag, s, m in zip(members, separate, one["members"])]
    lines.append("")
  e = results.get("epoch")
  if e:
    n = e["num_members"]
    lines += [f"## One compiled cnn_fast epoch on {e['device']}: 1 member against {n}", "",
              f"1 member: {e['epoch_s_1']:.3f} s; {n} members: {e[f'epoch_s_{n}']:.3f} s, {e['ratio']:.2f}x "
              f"(target ≤ 2x on a GPU). First epochs (compilation included): {e['first_epoch_s_1']:.1f} s and "
              f"{e[f'first_epoch_s_{n}']:.1f} s.", ""]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default="cnn_fast,mlp3")
  parser.add_argument("--members", type=int, default=10, help="members of the in-process epoch part")
  parser.add_argument("--data-dir", help="the four MNIST IDX files (else jaxmnist's cache)")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  args = parser.parse_args()
  parts = args.parts.split(",")
  results = {"environment": bench_fast.environment(),
             "command": "python " + " ".join(sys.argv).replace(str(REPO_ROOT) + "/", ""),
             "date": datetime.date.today().isoformat(), "cpus": os.cpu_count()}
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  tag = jax.default_backend()
  path = out / f"bench_ensemble-{tag}.json"
  if path.exists():  # parts run on their own add to the file
    results = {**json.loads(path.read_text()), **{k: results[k] for k in ("environment", "date")}}
  for part in parts:
    if part in PARTS:
      results[part] = processes_against_one(part, args.data_dir)
    elif part == "epoch":
      mnist = data.load_mnist("dir", args.data_dir) if args.data_dir else data.load_mnist("cache")
      results["epoch"] = epoch_times(mnist, args.members)
    else:
      parser.error(f"unknown part {part!r}")
    path.write_text(json.dumps(results, indent=1) + "\n")
    (out / f"bench_ensemble-{tag}.md").write_text(to_markdown(results))
  print(to_markdown(results))


if __name__ == "__main__":
  main()
