"""Where a user waits, against each target of the speed work, from one run on one machine: cnn_fast's
training against PyTorch's, a first `jaxmnist train` against PyTorch's whole process, `jaxmnist predict`,
`jaxmnist serve` under load, what checkpoints cost, and the profile of the step that explains the first.

Command that produced experiments/results/bench_speed-cpu.{md,json} (about 15 minutes on 2 CPU cores):
  python experiments/bench_speed.py --torch-python=PATH   # PATH: a python with torch; default: this one
Parts run alone with --parts (train,first_run,predict,serve,checkpoints,profile). The GPU targets are
experiments/gpu_check.sh's.

What is measured (each a ratio printed beside its target, met or not):
- train: cnn_fast's one epoch on the full 60k, training time only, the median of --timed-seeds seeds,
  PyTorch's faithful recipe (experiments/torch_fast.py) against jaxmnist's compiled epoch
  (experiments/bench_fast.py's `fast_jax`, which also trains --seeds seeds as one ensemble for their test
  accuracy: mean >= 99.0% is the recipe's bar);
- first_run: the wall time of `python -m jaxmnist.train --model=cnn_fast --valid-fraction=0` with an empty
  compiled-program cache, defaults otherwise (checkpoint, evaluation report), against
  `python experiments/torch_fast.py --seeds=0`; also `--checkpoint-every=0 --no-evaluate` (PyTorch's
  script writes no checkpoint and no report) and both again with the cache warm;
- predict: `python -m jaxmnist predict RUN one.png`, whole process, warm (after one call);
- serve: experiments/serve_load.py's figures on that run (4 in flight), against 114 drawings a second
  and p50 <= 20 ms;
- checkpoints: experiments/checkpoint_cost.py for cnn and cnn_fast, one repeat (the full table is that
  script's own run);
- profile: experiments/profile_step.py's breakdown of cnn_fast's step.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "experiments"))

import bench_fast  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from jaxmnist import data  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import provenance  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

PARTS = ("train", "first_run", "predict", "serve", "checkpoints", "profile")
SERVE_BEFORE = {"per_second": 114.0, "p50_ms": 37.5}  # the issue's figures, 2026-11-27, a `cnn` run
PREDICT_BEFORE_S = (3.3, 3.5)


def _load() -> str:
  return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "unknown"


def train_part(torch_python: str, seeds: int, timed_seeds: int) -> dict:
  mnist = data.load_mnist("cache")
  out = subprocess.run([torch_python, str(REPO_ROOT / "experiments" / "torch_fast.py"),
                        f"--seeds={','.join(map(str, range(timed_seeds)))}"], check=True, capture_output=True, text=True)
  torch_runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  jax_result = bench_fast.fast_jax(mnist, list(range(seeds)), timed_seeds=timed_seeds)
  torch_s = statistics.median(r["train_seconds"] for r in torch_runs)
  return {"torch_runs": torch_runs, "torch_train_s": torch_s, "torch": torch_runs[0]["torch"],
          "jax_timed": jax_result["timed_alone"], "jax_train_s": jax_result["train_s_median"],
          "jax_compile_s": jax_result["compile_s"], "jax_test_mean": jax_result["test_mean"],
          "jax_test_min": jax_result["test_min"], "jax_seeds_at_99": jax_result["seeds_at_99"],
          "jax_num_seeds": jax_result["num_seeds"], "ratio": jax_result["train_s_median"] / torch_s}


def first_run_part(torch_python: str, tmp: Path) -> dict:
  """Whole processes; returns the run directory of the defaults run for predict and serve."""
  seconds = {"torch": bench_fast._wall([torch_python, "experiments/torch_fast.py", "--seeds=0"])[0]}
  (tmp / "second").mkdir(parents=True)
  env = bench_fast.private_cache(tmp)
  cli = [sys.executable, "-m", "jaxmnist.train", "--model=cnn_fast", "--valid-fraction=0", "--no-progress"]
  lean = ["--checkpoint-every=0", "--no-evaluate"]
  for label, flags in (("defaults_cold", []), ("lean_cold", lean), ("defaults_warm", []), ("lean_warm", lean)):
    if label == "lean_cold":  # an empty cache again
      env = bench_fast.private_cache(tmp / "second")
    seconds[label] = bench_fast._wall(cli + flags + [f"--workdir={tmp / label}"], env)[0]
  return {"seconds": seconds, "ratio": seconds["defaults_cold"] / seconds["torch"],
          "lean_ratio": seconds["lean_cold"] / seconds["torch"], "run_dir": str(tmp / "defaults_cold"),
          "env_cache": env["JAXMNIST_CACHE_DIR"]}


def _one_picture(path: Path) -> Path:
  """A real MNIST test digit, drawn 10x larger black on white as the page's canvas sends it."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  digit = data.load_mnist("cache").test_images[0, ..., 0]
  Image.fromarray(255 - np.kron(digit, np.ones((10, 10), np.uint8))).save(path)
  return path


def predict_part(run_dir: str, tmp: Path, cache_dir: str) -> dict:
  picture = _one_picture(tmp / "one.png")
  env = {**os.environ, "JAXMNIST_CACHE_DIR": cache_dir}
  command = [sys.executable, "-m", "jaxmnist", "predict", run_dir, str(picture)]
  first, answer = bench_fast._wall(command, env)
  warm = [bench_fast._wall(command, env)[0] for _ in range(3)]
  return {"first_s": first, "warm_s": warm, "warm_median_s": statistics.median(warm), "answer": answer.strip()}


def serve_part(run_dir: str, tmp: Path, cache_dir: str) -> dict:
  env = {**os.environ, "JAXMNIST_CACHE_DIR": cache_dir}
  _, out = bench_fast._wall([sys.executable, "experiments/serve_load.py", run_dir, f"--out={tmp / 'serve_load.md'}"], env)
  text = (tmp / "serve_load.md").read_text() if (tmp / "serve_load.md").exists() else out
  four = re.search(r"4 at a time: (\d+) requests in ([\d.]+) s \(([\d.]+) per second\).*?p50 ([\d.]+) ms", text)
  result = {"report": text}
  if four:
    result.update(per_second=float(four.group(3)), p50_ms=float(four.group(4)))
    result["throughput_ratio"] = result["per_second"] / SERVE_BEFORE["per_second"]
  return result


def checkpoints_part(tmp: Path) -> dict:
  _, out = bench_fast._wall([sys.executable, "experiments/checkpoint_cost.py", "--repeats=1", "--presets=cnn,cnn_fast",
                  f"--out={tmp}"])
  return json.loads((tmp / "checkpoint_cost.json").read_text())["results"]


def profile_part(tmp: Path) -> dict:
  bench_fast._wall([sys.executable, "experiments/profile_step.py", "--model=cnn_fast", f"--out={tmp}"])
  device = "cpu" if jax.default_backend() == "cpu" else "gpu"
  return {"markdown": (tmp / f"profile_cnn_fast-{device}.md").read_text(),
          **json.loads((tmp / f"profile_cnn_fast-{device}.json").read_text())}


def _met(ok: bool) -> str:
  return "met" if ok else "NOT met"


def to_markdown(results: dict) -> str:
  lines = [f"# Speed where users wait: {results['environment']}", "",
           f"Command: `{results['command']}`. One run on one machine (load average {results['load_start']} at the "
           f"start, {results.get('load_end', '?')} at the end): ratios compare like with like.", ""]
  t = results.get("train")
  if t:
    lines += ["## 1. cnn_fast's training on this CPU", "",
              f"PyTorch {t['torch']}: {', '.join(format(r['train_seconds'], '.2f') for r in t['torch_runs'])} s "
              f"(median {t['torch_train_s']:.2f}); jaxmnist: "
              f"{', '.join(format(r['train_seconds'], '.2f') for r in t['jax_timed'])} s (median "
              f"{t['jax_train_s']:.2f}, compiled beforehand in {t['jax_compile_s']:.1f} s). Ratio "
              f"**{t['ratio']:.2f}x** (target <= 1.0x: {_met(t['ratio'] <= 1.0)}; aim 0.8x). Test accuracy over "
              f"{t['jax_num_seeds']} seeds: mean {t['jax_test_mean']:.4f}, min {t['jax_test_min']:.4f}, "
              f"{t['jax_seeds_at_99']} at >= 99.0% (bar: mean >= 0.990: {_met(t['jax_test_mean'] >= 0.990)}).", ""]
  f = results.get("first_run")
  if f:
    s = f["seconds"]
    lines += ["## 2. The first run, whole process", "",
              "| command | empty cache s | warm cache s |", "|---|---:|---:|",
              f"| `python experiments/torch_fast.py --seeds=0` | {s['torch']:.1f} | - |",
              f"| `jaxmnist train --model=cnn_fast --valid-fraction=0` | {s['defaults_cold']:.1f} | {s['defaults_warm']:.1f} |",
              f"| the same with `--checkpoint-every=0 --no-evaluate` | {s['lean_cold']:.1f} | {s['lean_warm']:.1f} |", "",
              f"Ratio, the defaults with an empty cache: **{f['ratio']:.2f}x** PyTorch's whole process (target <= 1.0x: "
              f"{_met(f['ratio'] <= 1.0)}); without checkpoint and report, as PyTorch's script: {f['lean_ratio']:.2f}x.", ""]
  p = results.get("predict")
  if p:
    lines += ["## 3. predict, one picture, whole process", "",
              f"First call {p['first_s']:.2f} s; warm {', '.join(format(x, '.2f') for x in p['warm_s'])} s: median "
              f"**{p['warm_median_s']:.2f} s** (target <= 1.5 s: {_met(p['warm_median_s'] <= 1.5)}; before: "
              f"{PREDICT_BEFORE_S[0]}-{PREDICT_BEFORE_S[1]} s). Its answer: `{p['answer'][:120]}`.", ""]
  v = results.get("serve")
  if v and "per_second" in v:
    lines += ["## 4. serve, 4 in flight (experiments/serve_load.py)", "",
              f"**{v['per_second']:.0f} drawings a second** ({v['throughput_ratio']:.2f}x the {SERVE_BEFORE['per_second']:.0f} "
              f"before; target >= 2x: {_met(v['throughput_ratio'] >= 2.0)}), p50 **{v['p50_ms']:.1f} ms** (target <= 20 ms: "
              f"{_met(v['p50_ms'] <= 20.0)}). Its report:", "", *("> " + line for line in v["report"].splitlines()), ""]
  c = results.get("checkpoints")
  if c:
    lines += ["## 5. Checkpoints at the presets' defaults (one repeat; the full table: checkpoint_cost.md)", "",
              "| preset | off s | on s | on vs off | blocked in the Saver |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['median_off']:.2f} | {r['median_on']:.2f} | {100 * r['overhead']:+.1f}% | "
              f"{100 * r['blocked_share']:.1f}% |" for name, r in c.items()]
    lines.append("")
  pr = results.get("profile")
  if pr:
    lines += ["## The profile that explains 1", "", *pr["markdown"].splitlines()[2:], ""]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--parts", default=",".join(PARTS))
  parser.add_argument("--torch-python", default=sys.executable, help="a python interpreter with torch installed")
  parser.add_argument("--seeds", type=int, default=10, help="cnn_fast seeds for the test accuracy")
  parser.add_argument("--timed-seeds", type=int, default=3)
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  args = parser.parse_args()
  parts = args.parts.split(",")
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
  out = Path(args.out)
  results = {"environment": f"{datetime.date.today()}; CPU {provenance.cpu_name()} ({os.cpu_count()} cores); jax "
                            f"{jax.__version__}" if jax.default_backend() == "cpu" else jax.devices()[0].device_kind,
             "command": "python experiments/bench_speed.py " + " ".join(
                 a for a in sys.argv[1:] if not a.startswith(("--torch-python", "--out"))),
             "load_start": _load()}

  tmp_dir = tempfile.TemporaryDirectory()
  tmp_name = tmp_dir.name

  def save():  # the temporary folder is named $TMPDIR: the results name no path of this machine
    tag = jax.default_backend()
    portable = lambda text: text.replace(tmp_name, "$TMPDIR")
    (out / f"bench_speed-{tag}.json").write_text(portable(json.dumps(results, indent=1)) + "\n")
    (out / f"bench_speed-{tag}.md").write_text(portable(to_markdown(results)))

  with tmp_dir:
    tmp = Path(tmp_name)
    steps_ = [("train", lambda: train_part(args.torch_python, args.seeds, args.timed_seeds)),
              ("first_run", lambda: first_run_part(args.torch_python, tmp / "first")),
              ("predict", lambda: predict_part(results["first_run"]["run_dir"], tmp, results["first_run"]["env_cache"])),
              ("serve", lambda: serve_part(results["first_run"]["run_dir"], tmp, results["first_run"]["env_cache"])),
              ("checkpoints", lambda: checkpoints_part(tmp)),
              ("profile", lambda: profile_part(tmp))]
    for name, run in steps_:
      if name not in parts:
        continue
      if name in ("predict", "serve") and "first_run" not in results:
        results["first_run"] = first_run_part(args.torch_python, tmp / "first")
      print(f"== {name} (load {_load()})", flush=True)
      results[name] = run()
      results["load_end"] = _load()
      save()
      print(to_markdown({k: v for k, v in results.items() if k in (name, "environment", "command", "load_start",
                                                                     "load_end")}), flush=True)
  save()
  print(to_markdown(results))


if __name__ == "__main__":
  main()
