"""How to run a CNN fast on XLA's CPU backend: one training step of the same net, four ways.

Command that produced experiments/results/cnn_cpu.md (about 2 minutes on 2 CPU cores):
  python experiments/cnn_cpu.py
The net is conv32-conv32-pool-conv64-conv64-pool-dense128 (3x3, ReLU), batch 128, SGD, float32.
Each formulation times steps after compilation: a Python loop over a jitted step, and the same step
inside one `lax.scan` (what jaxmnist's epoch is); convolutions as XLA's `conv_general_dilated`, or
as one matmul over nine shifted copies (`jaxmnist.models.conv_im2col`).
"""

import datetime
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from experiments import provenance  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxmnist.models import conv_im2col, max_pool_2x2  # noqa: E402  pylint: disable=g-import-not-at-top

BATCH = 128


def conv_xla(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def net(params, x, conv):
  for w in params["convs"][:2]:
    x = jax.nn.relu(conv(x, w))
  x = max_pool_2x2(x)
  for w in params["convs"][2:]:
    x = jax.nn.relu(conv(x, w))
  x = max_pool_2x2(x).reshape(x.shape[0] // 1, -1)
  return jax.nn.relu(x @ params["dense"]) @ params["out"]


def init(key):
  convs, channels = [], 1
  for width in (32, 32, 64, 64):
    convs.append(jax.random.normal(key, (3, 3, channels, width)) * 0.1)
    channels = width
  return {"convs": convs, "dense": jax.random.normal(key, (7 * 7 * 64, 128)) * 0.01,
          "out": jax.random.normal(key, (128, 10)) * 0.01}


def step_fn(conv):
  def loss(params, x, y):
    return -jnp.mean(jax.nn.log_softmax(net(params, x, conv))[jnp.arange(x.shape[0]), y])

  return lambda params, x, y: jax.tree.map(lambda p, g: p - 0.01 * g, params, jax.grad(loss)(params, x, y))


def time_python_loop(conv, params, xs, ys) -> float:
  step = jax.jit(step_fn(conv))
  params = jax.block_until_ready(step(params, xs[0], ys[0]))
  start = time.perf_counter()
  for i in range(len(xs)):
    params = step(params, xs[i], ys[i])
  jax.block_until_ready(params)
  return (time.perf_counter() - start) / len(xs)


def time_scan(conv, params, xs, ys) -> float:
  step = step_fn(conv)
  epoch = jax.jit(lambda p, xs, ys: jax.lax.scan(lambda p, b: (step(p, *b), None), p, (xs, ys))[0])
  params = jax.block_until_ready(epoch(params, xs, ys))
  start = time.perf_counter()
  jax.block_until_ready(epoch(params, xs, ys))
  return (time.perf_counter() - start) / len(xs)


def main():
  key = jax.random.key(0)
  params = init(key)
  rows = []
  for conv_name, conv in (("XLA conv", conv_xla), ("im2col matmul", conv_im2col)):
    for loop_name, timer, steps in (("Python loop", time_python_loop, 20), ("lax.scan", time_scan, 20)):
      if conv is conv_xla and timer is time_scan:
        steps = 3  # seconds per step: keep the run short
      xs = jax.random.uniform(key, (steps, BATCH, 28, 28, 1))
      ys = jax.random.randint(key, (steps, BATCH), 0, 10)
      seconds = timer(conv, params, xs, ys)
      rows.append((conv_name, loop_name, seconds))
      print(f"{conv_name}, {loop_name}: {seconds * 1000:.1f} ms/step", flush=True)
  cpu = provenance.cpu_name()
  lines = ["# A CNN training step on XLA's CPU backend, four ways", "",
           f"{datetime.date.today()}; {cpu} ({os.cpu_count()} cores); jax {jax.__version__}. "
           f"Command: `python experiments/cnn_cpu.py`. Net: conv32-conv32-pool-conv64-conv64-pool-dense128, "
           f"batch {BATCH}, float32.", "",
           "| convolution | loop | ms per step | s per 48k-example epoch |", "|---|---|---|---|"]
  lines += [f"| {c} | {l} | {s * 1000:.1f} | {s * 48000 / BATCH:.0f} |" for c, l, s in rows]
  out = REPO_ROOT / "experiments" / "results" / "cnn_cpu.md"
  out.write_text("\n".join(lines) + "\n")
  print(out.read_text())


if __name__ == "__main__":
  main()
