"""Time to accuracy, side by side: the fastest public MNIST recipe in PyTorch as published
(experiments/torch_fast.py) and as jaxmnist's `cnn_fast` preset, on the same machine in the same run;
then jaxmnist's 99.5% preset against `cnn_wide`.

Command that produced experiments/results/bench_fast-cpu.{md,json} (about 40 minutes on 2 CPU cores,
most of it cnn_wide's one run):
  python experiments/bench_fast.py
Parts can run alone: --parts=fast (the faithful race, 10 seeds each), --parts=995 (3 seeds of
cnn_995 and one of cnn_wide), --parts=profile (where an epoch's time goes). On a GPU without torch:
  python experiments/bench_fast.py --no-torch --data-dir=DIR --parts=fast,profile

What is measured:
- training time: the one epoch, from initialised parameters to trained ones (jaxmnist: compiled
  beforehand, the compile stated apart; the compiled epoch is shared by every seed, since the seed is an
  argument of the program);
- whole-process time: the wall time of one `python ...` command, from start to printed test accuracy:
  imports, data, compilation, training, the test evaluation. For jaxmnist once with an empty and once
  with a warm compilation cache, both with `--checkpoint-every=0 --no-evaluate` (what the PyTorch script
  does: no checkpoint, no report), and once with the defaults;
- test accuracy over --seeds seeds: mean, minimum, and how many reach 99.0%; jaxmnist's from one program
  that trains every seed as a member of one ensemble (`--seeds`), which also gives the ensemble's.
Both recipes train on all 60,000 training images, as the original does (labelled "full 60k").
"""

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# On a GPU, jax takes 75% of its memory up front: the whole-process commands this starts would find none.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from jaxmnist import data, models, parallel, process, programs, steps  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments import provenance  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.configs import PRESETS  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.optimizer import make_optimizer, steps_per_epoch  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
PRESET_995 = "cnn_995"


def _ready(tree):
  return jax.block_until_ready(tree)


def fast_jax(mnist: data.Mnist, seeds, preset: str = "cnn_fast", timed_seeds: int = 3) -> dict:
  """The preset's one epoch: its training time alone for the first `timed_seeds` seeds (compile measured
  on a warm-up seed), and the test accuracy of every seed from one program that trains them all as an
  ensemble's members (`--seeds`), each the model its seed trains alone."""
  mesh = parallel.make_mesh()
  base = dataclasses.replace(PRESETS[preset], valid_fraction=0.0)
  model = models.build_model(base.model)
  arrays = programs.place_data(mnist, base, mesh)
  optimizer = make_optimizer(base, steps_per_epoch(base, len(arrays["train_indices"])))
  base_programs = programs.Programs(base, model, optimizer, mesh)  # one epoch program for every seed

  def one_seed(seed):
    config = dataclasses.replace(base, seed=seed)
    state = _ready(programs.Programs(config, model, optimizer, mesh).init())
    started = time.perf_counter()
    state, sums = _ready(base_programs.train_epoch(state, arrays["images"], arrays["labels"],
                                                   arrays["train_indices"], 1, seed=jnp.asarray(seed)))
    seconds = time.perf_counter() - started
    correct = programs.correct_counts(base_programs.logits(steps.eval_variables(state), arrays["test_images"],
                                                           arrays["test_indices"]), mnist.test_labels)
    return {"seed": seed, "train_seconds": round(seconds, 3),
            "test_accuracy": int(correct) / len(mnist.test_labels)}

  warmup = one_seed(10_000)  # compiles the epoch and the evaluation once for all seeds
  timed = [one_seed(seed) for seed in seeds[:timed_seeds]]
  train_s = statistics.median(r["train_seconds"] for r in timed)
  members = ensemble_accuracies(mnist, base, seeds)
  runs = [{"seed": seed, "test_accuracy": accuracy} for seed, accuracy in zip(seeds, members["member_test"])]
  return {"runs": runs, "timed_alone": timed, "warmup_first_epoch_s": warmup["train_seconds"],
          "compile_s": round(max(warmup["train_seconds"] - train_s, 0.0), 3), "train_s_median": train_s,
          "ensemble": members, **accuracy_stats(runs)}


def ensemble_accuracies(mnist: data.Mnist, base, seeds) -> dict:
  """Every seed of `base` trained as one ensemble (one compiled program): each member's test accuracy,
  the ensemble's, and the program's training seconds (compilation included: it runs once)."""
  config = dataclasses.replace(base, seeds=tuple(seeds), seed=seeds[0])
  mesh = parallel.make_mesh()
  model = models.build_model(config.model)
  arrays = programs.place_data(mnist, config, mesh)
  optimizer = make_optimizer(config, steps_per_epoch(config, arrays["train_indices"].shape[-1]))
  run = programs.Programs(config, model, optimizer, mesh)
  state = _ready(run.init())
  started = time.perf_counter()
  state, _ = _ready(run.train_epoch(state, arrays["images"], arrays["labels"], arrays["train_indices"], 1))
  seconds = time.perf_counter() - started
  logits = np.asarray(run.logits(steps.eval_variables(state), arrays["test_images"], arrays["test_indices"]))
  member_correct = programs.correct_counts(logits, mnist.test_labels)
  ensemble_correct = programs.ensemble_correct(logits, mnist.test_labels)
  num_test = len(mnist.test_labels)
  return {"members": len(seeds), "train_s_with_compile": round(seconds, 3),
          "member_test": [int(c) / num_test for c in member_correct], "ensemble_test": int(ensemble_correct) / num_test}


def accuracy_stats(runs) -> dict:
  accs = [r["test_accuracy"] for r in runs]
  return {"test_mean": statistics.mean(accs), "test_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
          "test_min": min(accs), "seeds_at_99": sum(a >= 0.99 for a in accs), "num_seeds": len(accs)}


def fast_torch(seeds) -> dict:
  out = subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / "torch_fast.py"),
                        f"--seeds={','.join(map(str, seeds))}"], check=True, capture_output=True, text=True)
  runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  return {"runs": runs, "train_s_median": statistics.median(r["train_seconds"] for r in runs),
          "torch": runs[0]["torch"], "threads": runs[0]["threads"], **accuracy_stats(runs)}


def _wall(command, env=None) -> tuple[float, str]:
  started = time.perf_counter()
  out = subprocess.run(command, cwd=REPO_ROOT, env=env, check=False, capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f"{' '.join(command)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
  return round(time.perf_counter() - started, 2), out.stdout


def private_cache(tmp: Path, data_dir=None, data_cache: Path | None = None) -> dict:
  """An environment whose jaxmnist cache holds the verified data and an empty compilation cache.

  (experiments/bench.py and recipes.py time whole processes from it too.) jax's own
  $JAX_COMPILATION_CACHE_DIR is dropped: a cache the user set would make a cold start warm.
  """
  cache = tmp / "cache"
  cache.mkdir()
  if data_dir is None:  # link the verified copy of a cache folder (default: the user's)
    os.symlink((data_cache or data.default_cache_dir()) / "mnist", cache / "mnist")
  else:
    data.load_mnist("dir", data_dir, cache_dir=cache)
  env = {name: value for name, value in os.environ.items() if name != process.JAX_CACHE_ENV_VAR}
  return {**env, "JAXMNIST_CACHE_DIR": str(cache)}


def whole_process(data_dir, with_torch: bool, seconds: dict, save) -> None:
  """Wall seconds of single-seed commands, start to printed test accuracy, into `seconds`."""
  if with_torch:
    seconds["torch"], _ = _wall([sys.executable, "experiments/torch_fast.py", "--seeds=0"])
  with tempfile.TemporaryDirectory() as tmp:
    env = private_cache(Path(tmp), data_dir)
    cli = [sys.executable, "-m", "jaxmnist.train", "--model=cnn_fast", "--valid-fraction=0", "--no-progress"]
    lean = ["--checkpoint-every=0", "--no-evaluate"]
    for label, flags in (("jax_cold_cache", lean), ("jax_warm_cache", lean), ("jax_defaults_warm_cache", [])):
      seconds[label], _ = _wall(cli + flags + [f"--workdir={Path(tmp) / label}"], env)
      save()


def preset_runs(preset: str, seeds, data_dir) -> list[dict]:
  """Whole `python -m jaxmnist.train` runs on the 48k split (compilation cache empty each time)."""
  runs = []
  for seed in seeds:
    with tempfile.TemporaryDirectory() as tmp:
      env = private_cache(Path(tmp), data_dir)
      wall, _ = _wall([sys.executable, "-m", "jaxmnist.train", f"--model={preset}", f"--seed={seed}",
                       "--no-progress", "--no-evaluate", "--checkpoint-every=0", f"--workdir={Path(tmp) / 'run'}"],
                      env)
      summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    runs.append({"preset": preset, "seed": seed, "wall_s": wall, "train_s": summary["train_seconds"],
                 "test_accuracy": summary["test_accuracy"], "valid_accuracy": summary["valid_accuracy"]})
    print(json.dumps(runs[-1]), flush=True)
  return runs


def training_flops_per_example() -> int:
  """cnn_fast's multiply-adds, counted by hand (XLA's count misses the GPU's cuDNN convolutions): forward
  2 FLOPs per MAC; backward the same for every weight gradient and for every input gradient but the first
  layer's (the images need none)."""
  macs = [24 * 24 * 24 * 5 * 5, 10 * 10 * 32 * 3 * 3 * 24, 800 * 256, 256 * 10]
  return 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])


def profile_fast(mnist: data.Mnist) -> dict:
  """Where cnn_fast's epoch goes: one step's FLOPs and kernels (XLA's own count), the epoch against
  the device's matmul peak, and a forward-only scan over the same batches."""
  sys.path.insert(0, str(REPO_ROOT / "experiments"))
  import bench  # pylint: disable=g-import-not-at-top

  config = dataclasses.replace(PRESETS["cnn_fast"], valid_fraction=0.0)
  model = models.build_model(config.model)
  mesh = parallel.make_mesh()
  arrays = programs.place_data(mnist, config, mesh)
  num_steps = steps_per_epoch(config, len(arrays["train_indices"]))
  optimizer = make_optimizer(config, num_steps)
  run_programs = programs.Programs(config, model, optimizer, mesh)
  state = run_programs.init()
  batch = (jnp.zeros((config.batch_size, 28, 28, 1), jnp.uint8), jnp.zeros((config.batch_size,), jnp.int32),
           jnp.ones((config.batch_size,)))
  step = jax.jit(lambda s, x, y, w: steps.train_step(s, x, y, w, apply_fn=model.apply, optimizer=optimizer))
  compiled = step.lower(state, *batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  hlo = compiled.as_text()
  fusions = hlo.count(" fusion(") + hlo.count("custom-call(")  # the kernels one step launches, roughly
  epoch_fn = run_programs.train_epoch
  run = lambda s: _ready(epoch_fn(s, arrays["images"], arrays["labels"], arrays["train_indices"], 1))
  state, _ = run(state)
  times = []
  for _ in range(5):
    started = time.perf_counter()
    state, _ = run(state)
    times.append(time.perf_counter() - started)
  epoch_s = statistics.median(times)
  batches, _ = steps.shuffled_batches(jax.random.key(0), arrays["train_indices"], config.batch_size)
  forward = jax.jit(lambda v, images, idx: jax.lax.scan(
      lambda c, b: (c + model.apply(v, steps.images_to_inputs(images[b]), train=False).sum(), None),
      jnp.zeros(()), idx)[0])
  variables = steps.eval_variables(state)
  _ready(forward(variables, arrays["images"], batches))
  forward_times = []
  for _ in range(5):
    started = time.perf_counter()
    _ready(forward(variables, arrays["images"], batches))
    forward_times.append(time.perf_counter() - started)
  step_flops = float(cost.get("flops", 0.0))
  peak = bench.matmul_peak_flops((2048, 4096) if jax.default_backend() != "cpu" else (1024, 2048))
  return {"steps": num_steps, "epoch_s": round(epoch_s, 4), "step_ms": round(1000 * epoch_s / num_steps, 3),
          "forward_only_epoch_s": round(statistics.median(forward_times), 4),
          "xla_flops_per_step": step_flops,
          "counted_flops_per_step": training_flops_per_example() * config.batch_size,
          "achieved_flop_per_s": training_flops_per_example() * config.batch_size * num_steps / epoch_s,
          "matmul_peak_flop_per_s": peak, "kernels_per_step": fusions,
          "us_per_kernel_if_launch_bound": round(1e6 * epoch_s / num_steps / max(fusions, 1), 2)}


def environment() -> str:
  device = jax.devices()[0]
  hardware = device.device_kind if device.platform != "cpu" else f"CPU {provenance.cpu_name()} ({os.cpu_count()} cores)"
  torch = ""
  if HAS_TORCH:
    import torch as torch_module  # pylint: disable=g-import-not-at-top
    torch = f", torch {torch_module.__version__}"
  return f"{datetime.date.today()}; {hardware}; jax {jax.__version__}{torch}"


def to_markdown(results: dict) -> str:
  lines = [f"# Time to accuracy: {results['environment']}", "",
           f"Command: `{results['command']}`. One run, one machine: ratios compare like with like.", ""]
  fast = results.get("fast")
  if fast:
    jx, th = fast["jax"], fast.get("torch")
    lines += ["## The fastest known recipe (tuomaso/train_mnist_fast), full 60k, one epoch", "",
              "| | training s (median) | compile s | whole process s | test mean ± std | min | seeds ≥ 99.0% |",
              "|---|---|---|---|---|---|---|"]
    wp = fast.get("whole_process_s", {})
    w = lambda label: wp.get(label, float("nan"))  # nan: not measured (yet)
    if th:
      lines.append(f"| PyTorch {th['torch']} ({th['threads']} threads) | {th['train_s_median']:.2f} | - | "
                   f"{w('torch'):.1f} | {th['test_mean']:.4f} ± {th['test_std']:.4f} | {th['test_min']:.4f} | "
                   f"{th['seeds_at_99']}/{th['num_seeds']} |")
    lines.append(f"| jaxmnist cnn_fast | {jx['train_s_median']:.2f} | {jx['compile_s']:.1f} | "
                 f"{w('jax_cold_cache'):.1f} cold cache, {w('jax_warm_cache'):.1f} warm "
                 f"({w('jax_defaults_warm_cache'):.1f} with checkpoint and report) | "
                 f"{jx['test_mean']:.4f} ± {jx['test_std']:.4f} | {jx['test_min']:.4f} | "
                 f"{jx['seeds_at_99']}/{jx['num_seeds']} |")
    ens = jx.get("ensemble")
    if ens:
      lines.append(f"| jaxmnist, the {ens['members']} seeds as one ensemble (`--seeds={ens['members']}`) | "
                   f"{ens['train_s_with_compile']:.1f} for all, compile included | - | - | ensemble "
                   f"{ens['ensemble_test']:.4f} | - | - |")
    if th:
      lines += ["", f"Ratios (target): training {jx['train_s_median'] / th['train_s_median']:.2f}x PyTorch's "
                f"(≤ 0.7x); whole process {w('jax_cold_cache') / w('torch'):.2f}x cold cache, "
                f"{w('jax_warm_cache') / w('torch'):.2f}x warm (≤ 1.0x)."]
  if results.get("995"):
    r = results["995"]
    p, w = r[PRESET_995], r.get("cnn_wide")
    mean_wall = statistics.mean(x["wall_s"] for x in p)
    row = lambda name, runs: (
        f"| {name} | {len(runs)} | {', '.join(format(x['test_accuracy'], '.4f') for x in runs)} | "
        f"{statistics.mean(x['test_accuracy'] for x in runs):.4f} | "
        f"{statistics.mean(x['wall_s'] for x in runs):.1f} |")
    lines += ["", "## 99.5%: 48k training split, whole process, compilation cache empty", "",
              "| preset | seeds | test accuracy per seed | mean | wall s per run (mean) |", "|---|---|---|---|---|",
              row(PRESET_995, p)]
    if w:
      lines += [row("cnn_wide", w), "", f"Ratio (target ≤ 0.5x): {PRESET_995}'s wall time per run is "
                f"{mean_wall / statistics.mean(x['wall_s'] for x in w):.2f}x cnn_wide's."]
  if results.get("profile"):
    pr = results["profile"]
    lines += ["", "## Where cnn_fast's epoch goes", "",
              f"{pr['steps']} steps: {pr['epoch_s']:.3f} s per epoch, {pr['step_ms']:.2f} ms per step; a "
              f"forward-only scan over the same batches: {pr['forward_only_epoch_s']:.3f} s. A step is "
              f"{pr['counted_flops_per_step'] / 1e9:.2f} GFLOP counted by hand (XLA's cost analysis says "
              f"{pr['xla_flops_per_step'] / 1e9:.2f}; it misses library convolutions): "
              f"{pr['achieved_flop_per_s'] / 1e9:.1f} GFLOP/s "
              f"achieved against a measured float32 matmul peak of {pr['matmul_peak_flop_per_s'] / 1e9:.0f} GFLOP/s "
              f"({100 * pr['achieved_flop_per_s'] / pr['matmul_peak_flop_per_s']:.1f}%). One step runs "
              f"about {pr['kernels_per_step']} kernels (fusions and library calls in the compiled step): "
              f"{pr['us_per_kernel_if_launch_bound']} µs each if the step were launch-bound."]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description="time to accuracy against the fastest known recipe")
  parser.add_argument("--parts", default="fast,995,profile")
  parser.add_argument("--seeds", type=int, default=10, help="seeds of each faithful recipe")
  parser.add_argument("--seeds-995", type=int, default=3)
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--data-dir", help="the four MNIST IDX files (else jaxmnist's cache)")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  args = parser.parse_args()
  parts = args.parts.split(",")
  with_torch = HAS_TORCH and not args.no_torch
  mnist = data.load_mnist("dir", args.data_dir) if args.data_dir else data.load_mnist("cache")
  results = {"environment": environment(), "command": "python " + " ".join(sys.argv).replace(str(REPO_ROOT) + "/", "")}
  seeds = list(range(args.seeds))
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  tag = jax.default_backend()

  def save():  # after every part: a run cut short keeps what it measured
    (out / f"bench_fast-{tag}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"bench_fast-{tag}.md").write_text(to_markdown(results))

  if "fast" in parts:
    results["fast"] = {"jax": fast_jax(mnist, seeds)}
    print("jax", json.dumps(results["fast"]["jax"]), flush=True)
    if with_torch:
      results["fast"]["torch"] = fast_torch(seeds)
      print("torch", json.dumps(results["fast"]["torch"]), flush=True)
    results["fast"]["whole_process_s"] = {}
    whole_process(args.data_dir, with_torch, results["fast"]["whole_process_s"], save)
    print("whole process", results["fast"]["whole_process_s"], flush=True)
  if "profile" in parts:
    results["profile"] = profile_fast(mnist)
    print("profile", json.dumps(results["profile"]), flush=True)
    save()
  if "995" in parts:
    results["995"] = {PRESET_995: preset_runs(PRESET_995, range(args.seeds_995), args.data_dir)}
    save()
  if "995" in parts or "cnn_wide" in parts:  # cnn_wide alone: added to the results file already there
    if "995" not in parts:
      results = {**json.loads((out / f"bench_fast-{tag}.json").read_text()), "cnn_wide_command": results["command"]}
    results["995"]["cnn_wide"] = preset_runs("cnn_wide", [0], args.data_dir)
    save()
  print(to_markdown(results))


if __name__ == "__main__":
  main()
