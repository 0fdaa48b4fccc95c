"""Benchmark: compile time, steady-state epoch time, samples/s and FLOP/s per model, against PyTorch.

Command that produced experiments/results/bench-cpu.{md,json} (about 3 minutes on 2 CPU cores):
  python experiments/bench.py
Smoke form (synthetic data, seconds; what the test suite runs):
  python experiments/bench.py --smoke --out=bench-smoke
Hardware, versions and date are written into the results. Training epochs only (no evaluation),
the post's batch 256 on a 48k-example training split, float32 throughout.

What is measured, per model, on the default device:
- jaxmnist's epoch (`scan`: the whole epoch in one jit, jaxmnist.programs):
  compile = first epoch minus a steady epoch; steady epoch = median of --epochs timed epochs;
  achieved FLOP/s = the model's training FLOPs per epoch (counted below) / steady epoch time.
- peak: the best FLOP/s of a large float32 matmul on the same device, in the same run.
- when torch is installed: the post's loop (DataLoader over a list of (x, y) pairs) and a tuned loop
  (tensors indexed by a permutation), same data, same split, torch's default threads.
- start-up: wall time of `python -m jaxmnist.train --model=linear --epochs=1` with a warm data cache,
  once with an empty compilation cache and once with it warm.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from jaxmnist import data, models, parallel  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments import provenance  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.programs import Programs  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.configs import PRESETS  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.optimizer import make_optimizer, steps_per_epoch  # noqa: E402

import bench_fast  # noqa: E402  pylint: disable=g-import-not-at-top  (experiments/, beside this script)

HAS_TORCH = importlib.util.find_spec("torch") is not None


def matmul_peak_flops(sizes=(1024, 2048), repeats=5) -> float:
  """The best float32 FLOP/s of an n x n x n matmul on the default device."""
  best = 0.0
  for n in sizes:
    a = jax.random.uniform(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(jnp.dot)
    matmul(a, a).block_until_ready()
    for _ in range(repeats):
      start = time.perf_counter()
      matmul(a, a).block_until_ready()
      best = max(best, 2 * n**3 / (time.perf_counter() - start))
  return best


def training_flops_per_example(hidden_sizes) -> int:
  """Matmul FLOPs of one SGD example: forward, weight gradients, and input gradients of all layers but
  the first (nothing needs the gradient of the pixels). Elementwise work is not counted."""
  dims = (28 * 28, *hidden_sizes, models.NUM_CLASSES)
  layer_macs = [a * b for a, b in zip(dims[:-1], dims[1:])]
  return 2 * sum(layer_macs) + 2 * sum(layer_macs) + 2 * sum(layer_macs[1:])


def matmul_only_epoch_s(hidden_sizes, num_examples: int, batch_size: int = 256, repeats: int = 3) -> float:
  """Seconds for an epoch of just the training matmuls of an MLP, same shapes, in one lax.scan.

  A lower bound on what any float32 implementation of the epoch costs on this device: the gap
  between it and the real epoch is the elementwise work (bias, ReLU, softmax, SGD update).
  """
  dims = (28 * 28, *hidden_sizes, models.NUM_CLASSES)
  key = jax.random.key(0)
  weights = [jax.random.uniform(key, (a, b)) * 1e-3 for a, b in zip(dims[:-1], dims[1:])]
  inputs = jax.random.uniform(key, (-(-num_examples // batch_size), batch_size, dims[0]))

  def step(weights, x):
    activations = [x]
    for w in weights:
      activations.append(activations[-1] @ w)
    delta, new_weights = activations[-1], []
    for layer in reversed(range(len(weights))):
      new_weights.insert(0, weights[layer] - 1e-6 * (activations[layer].T @ delta))
      if layer > 0:
        delta = delta @ weights[layer].T
    return new_weights, None

  epoch = jax.jit(lambda w, x: jax.lax.scan(step, w, x)[0])
  jax.block_until_ready(epoch(weights, inputs))
  return min(_timed(lambda: epoch(weights, inputs)) for _ in range(repeats))


def cnn_training_flops_per_example() -> int:
  """Matmul/conv FLOPs of one training example of the `cnn` model (16, 32 channels, dense 128), as
  for the MLPs: forward, weight gradients, and input gradients of all layers but the first."""
  layer_macs = [28 * 28 * 16 * 9 * 1, 14 * 14 * 32 * 9 * 16, 32 * 7 * 7 * 128, 128 * 10]
  return 4 * sum(layer_macs) + 2 * sum(layer_macs[1:])


def flops_per_example(name: str) -> int:
  if name == "cnn":
    return cnn_training_flops_per_example()
  return training_flops_per_example(models.MLP_HIDDEN_SIZES[name])


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def bench_jax(name: str, mnist: data.Mnist, train_indices, epochs: int) -> dict:
  config = PRESETS[name]  # the preset's batch size, optimizer, recipe
  model = models.build_model(name)
  optimizer = make_optimizer(config, steps_per_epoch(config, len(train_indices)))
  mesh = parallel.make_mesh()
  run = Programs(config, model, optimizer, mesh)
  state, epoch_fn = run.init(), run.train_epoch
  images, labels = parallel.shard_dataset(mnist.train_images, mesh), parallel.shard_dataset(mnist.train_labels, mesh)
  indices = parallel.replicate(train_indices, mesh)
  holder = {"state": state}

  def one_epoch(i):
    holder["state"], sums = epoch_fn(holder["state"], images, labels, indices, i)
    return sums

  first = _timed(lambda: one_epoch(0))
  times = [_timed(lambda i=i: one_epoch(i)) for i in range(1, epochs + 1)]
  steady = statistics.median(times)
  flops = flops_per_example(name) * len(train_indices)
  return {"first_epoch_s": first, "compile_s": max(first - steady, 0.0), "epoch_s": steady,
          "epoch_times_s": times, "samples_per_s": len(train_indices) / steady, "flops_per_epoch": flops,
          "flop_per_s": flops / steady}


def bench_torch(name: str, loop: str, mnist: data.Mnist, train_indices, epochs: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO_ROOT / "experiments"))
  import torch_post  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  x, y = torch_post.to_tensors(mnist.train_images, mnist.train_labels)
  indices = torch.from_numpy(train_indices).long()
  loss_func = torch.nn.CrossEntropyLoss()
  if name == "cnn":  # the same layers as jaxmnist's cnn, Adam, the preset's batch
    import torch_cnn  # pylint: disable=g-import-not-at-top
    model = torch_cnn.make_cnn()
    optimizer = torch.optim.Adam(model.parameters(), PRESETS[name].learning_rate)
    images = x.reshape(-1, 1, 28, 28)
    run = lambda: torch_post.train_epoch_tuned(model, images, y, indices, optimizer, loss_func,
                                               PRESETS[name].batch_size)
  elif loop == "post":
    model = torch_post.make_post_model(name)
    optimizer = torch.optim.SGD(model.parameters(), PRESETS[name].learning_rate)
    loader = torch.utils.data.DataLoader(list(zip(x, y)), batch_size=256,
                                         sampler=torch.utils.data.SubsetRandomSampler(indices))
    run = lambda: torch_post.train_epoch_post(model, loader, optimizer, loss_func)
  else:
    model = torch_post.make_post_model(name)
    optimizer = torch.optim.SGD(model.parameters(), PRESETS[name].learning_rate)
    run = lambda: torch_post.train_epoch_tuned(model, x, y, indices, optimizer, loss_func)
  run()  # warm-up
  times = []
  for _ in range(epochs):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  steady = statistics.median(times)
  flops = flops_per_example(name) * len(train_indices)
  return {"epoch_s": steady, "epoch_times_s": times, "samples_per_s": len(train_indices) / steady,
          "flop_per_s": flops / steady, "threads": torch.get_num_threads()}


def bench_startup(cache_dir: Path) -> dict:
  """Wall time of the CLI's linear 1-epoch run: data cache warm; compilation cache cold, then warm."""
  seconds = {}
  with tempfile.TemporaryDirectory() as xla_cache:
    env = bench_fast.private_cache(Path(xla_cache), data_cache=cache_dir)
    for label in ("cold_compile_cache", "warm_compile_cache"):
      start = time.perf_counter()
      subprocess.run([sys.executable, "-m", "jaxmnist.train", "--model=linear", "--epochs=1",
                      "--no-progress", f"--workdir={Path(xla_cache) / label}"], cwd=REPO_ROOT, env=env,
                     check=True, capture_output=True)
      seconds[label] = time.perf_counter() - start
  return seconds


def synthetic_mnist(num_train: int, num_test: int) -> data.Mnist:
  rng = np.random.default_rng(0)
  images = lambda n: rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
  labels = lambda n: rng.integers(0, 10, size=n).astype(np.int32)
  return data.Mnist(images(num_train), labels(num_train), images(num_test), labels(num_test),
                    source="synthetic (smoke)", verified=False)


def environment() -> dict:
  versions = {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__}
  if HAS_TORCH:
    import torch  # pylint: disable=g-import-not-at-top
    versions["torch"] = torch.__version__
  cpu = provenance.cpu_name()
  return {"date": datetime.date.today().isoformat(), "device": jax.devices()[0].device_kind,
          "platform": jax.default_backend(), "cpu": cpu, "cpu_count": os.cpu_count(), "versions": versions}


def to_markdown(results: dict) -> str:
  env, peak = results["environment"], results["peak_flop_per_s"]
  lines = [
      f"# jaxmnist benchmark, {env['platform']}",
      "",
      f"{env['date']}; device {env['device']}; CPU {env['cpu']} ({env['cpu_count']} cores); "
      + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f"; data: {results['data']}.",
      f"Command: `{results['command']}`",
      "",
      f"Measured matmul peak: {peak / 1e9:.1f} GFLOP/s (float32). Training epochs only: batch 256, "
      f"{results['num_train']} examples, median of {results['epochs']} timed epochs.",
      "",
      "| model | loop | compile s | epoch s | samples/s | GFLOP/s | % of peak |",
      "|---|---|---|---|---|---|---|",
  ]
  for name, per_model in results["models"].items():
    for loop, r in per_model["jax"].items():
      lines.append(f"| {name} | jaxmnist {loop} | {r['compile_s']:.2f} | {r['epoch_s']:.4f} | "
                   f"{r['samples_per_s']:,.0f} | {r['flop_per_s'] / 1e9:.1f} | {100 * r['flop_per_s'] / peak:.0f}% |")
    if "matmul_only" in per_model:
      bound = per_model["matmul_only"]
      lines.append(f"| {name} | matmuls alone (bound) | | {bound['epoch_s']:.4f} | | "
                   f"{bound['flop_per_s'] / 1e9:.1f} | {100 * bound['flop_per_s'] / peak:.0f}% |")
    for loop, r in per_model.get("torch", {}).items():
      lines.append(f"| {name} | PyTorch {loop} | | {r['epoch_s']:.4f} | {r['samples_per_s']:,.0f} | "
                   f"{r['flop_per_s'] / 1e9:.1f} | {100 * r['flop_per_s'] / peak:.0f}% |")
  if any("torch" in m for m in results["models"].values()):
    lines += ["", "| model | best jaxmnist loop | epoch / PyTorch tuned | epoch / PyTorch post |", "|---|---|---|---|"]
    for name, m in results["models"].items():
      best = min(m["jax"], key=lambda loop: m["jax"][loop]["epoch_s"])
      jax_s = m["jax"][best]["epoch_s"]
      post = f"{jax_s / m['torch']['post']['epoch_s']:.2f}x" if "post" in m["torch"] else "n/a"
      lines.append(f"| {name} | {best} | {jax_s / m['torch']['tuned']['epoch_s']:.2f}x | {post} |")
  if "startup_s" in results:
    s = results["startup_s"]
    lines += ["", f"Start-up, `python -m jaxmnist.train --model=linear --epochs=1`, warm data cache: "
              f"{s['cold_compile_cache']:.2f} s with an empty compilation cache, "
              f"{s['warm_compile_cache']:.2f} s with a warm one (wall, imports, compile, training, test "
              f"evaluation and plot included)."]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description="jaxmnist benchmark")
  parser.add_argument("--models", default="linear,mlp2,mlp3,cnn")
  parser.add_argument("--epochs", type=int, default=5, help="timed epochs per measurement")
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--smoke", action="store_true", help="synthetic data, tiny sizes: checks the output")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.smoke:
    mnist, epochs = synthetic_mnist(1024, 64), 1
  else:
    mnist, epochs = data.load_mnist(), args.epochs
  if args.torch_worker:
    peak = 0.0
  elif args.smoke:
    peak = matmul_peak_flops(sizes=(256,), repeats=2)
  else:
    peak = matmul_peak_flops()
  train_indices, _ = data.split_train_valid(len(mnist.train_labels), 0.2, seed=0)
  results = {"environment": environment(), "command": " ".join(["python", "experiments/bench.py", *sys.argv[1:]]),
             "data": provenance.portable(mnist.source), "num_train": len(train_indices), "epochs": epochs, "peak_flop_per_s": peak,
             "models": {}}
  if args.torch_worker:
    print(json.dumps({name: {loop: bench_torch(name, loop, mnist, train_indices, epochs)
                             for loop in (("tuned",) if name == "cnn" else ("tuned", "post"))}
                      for name in args.models.split(",")}))
    return
  for name in args.models.split(","):
    per_model = {"jax": {"scan": bench_jax(name, mnist, train_indices, epochs)}}
    if name in models.MLP_HIDDEN_SIZES:
      matmul_s = matmul_only_epoch_s(models.MLP_HIDDEN_SIZES[name], len(train_indices),
                                     repeats=1 if args.smoke else 3)
      per_model["matmul_only"] = {"epoch_s": matmul_s,
                                  "flop_per_s": per_model["jax"]["scan"]["flops_per_epoch"] / matmul_s}
    results["models"][name] = per_model
    print(f"{name}: " + ", ".join(f"{loop} {r['epoch_s']:.4f} s/epoch" for loop, r in per_model["jax"].items()),
          flush=True)
  if HAS_TORCH and not args.no_torch:
    # In a process of its own: torch's OpenMP threads keep spinning after each call and would slow
    # the JAX measurements that follow them (seen here: mlp3 0.37 s/epoch alone, 0.52 s after torch).
    worker = subprocess.run([sys.executable, __file__, "--torch-worker", *sys.argv[1:]], check=True,
                            capture_output=True, text=True)
    for name, per_loop in json.loads(worker.stdout.strip().splitlines()[-1]).items():
      results["models"][name]["torch"] = per_loop
  if not args.smoke:
    results["startup_s"] = bench_startup(data.default_cache_dir())

  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  stem = f"bench-{jax.default_backend()}" + ("-smoke" if args.smoke else "")
  (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
  (out / f"{stem}.md").write_text(to_markdown(results))
  print(to_markdown(results))


if __name__ == "__main__":
  main()
