"""Ways to write cnn_fast's step for XLA's CPU backend, each timed inside the epoch's scan against today's.

Command that produced experiments/results/cnn_variants-cpu.md (about 3 minutes on 2 CPU cores):
  python experiments/cnn_variants.py
  python experiments/cnn_variants.py --variants=today,pool_vjp --profile=pool_vjp    # and one's profile

Every variant computes the same function with the same parameters as jaxmnist.models.FastCNN (normalise;
5x5 conv, 2x2 max pool, ReLU; 3x3 conv, pool, ReLU; dense 256, ReLU; logits); only how XLA is asked to
compute it differs. Each runs --steps steps of jaxmnist.steps.train_epoch with cnn_fast's optimizer
(experiments/profile_step.py's `scan_of_steps`), compiled once; then the variants take turns, --repeats
rounds, so that a slow minute of this shared machine hits them all. Reported: ms per step, median and
minimum over the rounds, and the loss after the steps (equal losses: the same arithmetic).

The variants (what the profile of today's step suggested, experiments/results/profile_cnn_fast-cpu.md):
- today: jaxmnist.models (im2col by concatenating the K*K shifted copies, channels last; pool by reshape
  and max; ReLU after the pool);
- pool_vjp: pooling and ReLU as one op with a hand-written gradient (to the window's maximum), instead of
  the gradient XLA derives for reduce_max (which counts ties and divides);
- first0 / first01: the im2col columns stacked on a leading axis ([K*K, B, H, W, C]) for the first conv
  (or both), contracted over (K*K, C), so that each shifted copy is one contiguous block;
- sum1: the second conv as the sum of 9 shifted [B*H*W, 24] x [24, 32] matmuls (no column buffer);
- chunk2 ... chunk16: the convolutional part over batch chunks (`lax.map`), so that each chunk's
  buffers stay in cache.
XLA flags that change scheduling but not results are timed the same way by running this script under
XLA_FLAGS (`--xla_cpu_enable_concurrency_optimized_scheduler=true|false`).
"""

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "experiments"))
import profile_step  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from jaxmnist import models  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import provenance  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


@jax.custom_vjp
def pool_relu(x_BxHxWxC):
  """relu(max_pool_2x2(x)), whose gradient goes to each window's maximum."""
  return jnp.maximum(models.max_pool_2x2(x_BxHxWxC), 0.0)


def _pool_relu_forward(x_BxHxWxC):
  pooled = models.max_pool_2x2(x_BxHxWxC)
  return jnp.maximum(pooled, 0.0), (x_BxHxWxC, pooled)


def _pool_relu_backward(residuals, grad_out):
  x, pooled = residuals
  batch, height, width, channels = x.shape
  grad_out = jnp.where(pooled > 0, grad_out, 0.0)
  windows = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
  at_max = windows == pooled[:, :, None, :, None, :]
  return (jnp.where(at_max, grad_out[:, :, None, :, None, :], 0.0).reshape(x.shape),)


pool_relu.defvjp(_pool_relu_forward, _pool_relu_backward)


def conv_columns_first(x_BxHxWxC, kernel_KxKxCxF):
  size = kernel_KxKxCxF.shape[0]
  _, height, width, channels = x_BxHxWxC.shape
  out_height, out_width = height - size + 1, width - size + 1
  columns = jnp.stack([x_BxHxWxC[:, i:i + out_height, j:j + out_width, :] for i in range(size) for j in range(size)])
  return jax.lax.dot_general(columns, kernel_KxKxCxF.reshape(size * size, channels, -1), (((0, 4), (0, 1)), ((), ())))


def conv_sum_of_shifts(x_BxHxWxC, kernel_KxKxCxF):
  size = kernel_KxKxCxF.shape[0]
  _, height, width, _ = x_BxHxWxC.shape
  out_height, out_width = height - size + 1, width - size + 1
  return sum(x_BxHxWxC[:, i:i + out_height, j:j + out_width, :] @ kernel_KxKxCxF[i, j]
             for i in range(size) for j in range(size))


CONVS = {"im2col": lambda x, kernel: models.conv_im2col(x, kernel, "VALID"), "first": conv_columns_first,
         "sum": conv_sum_of_shifts}


def make_apply(convs=("im2col", "im2col"), hand_pool: bool = False, chunks: int = 1):
  """`apply(variables, images, train=False, **_)` on FastCNN's own parameters."""
  def features(params, x):
    for layer, how in enumerate(convs):
      conv = params[f"Conv_{layer}"]
      y = CONVS[how](x, conv["kernel"]) + conv["bias"]
      x = pool_relu(y) if hand_pool else nn.relu(models.max_pool_2x2(y))
    return x.reshape(x.shape[0], -1)

  def apply(variables, images_BxHxWxC, train=False, **_):
    del train
    params = variables["params"]
    x = (images_BxHxWxC - models.MNIST_MEAN) / models.MNIST_STD
    if chunks > 1:
      batch = x.shape[0]
      h = jax.lax.map(lambda chunk: features(params, chunk), x.reshape(chunks, batch // chunks, *x.shape[1:]))
      h = h.reshape(batch, -1)
    else:
      h = features(params, x)
    h = nn.relu(h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    return h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
  return apply


VARIANTS = {
    "today": None,  # the model's own apply
    "pool_vjp": make_apply(hand_pool=True),
    "first0": make_apply(("first", "im2col"), hand_pool=True),
    "first01": make_apply(("first", "first"), hand_pool=True),
    "sum1": make_apply(("im2col", "sum"), hand_pool=True),
    **{f"chunk{n}": make_apply(chunks=n) for n in (2, 4, 8, 16)},
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--profile", default="", help="variants to profile op by op afterwards")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results" / "cnn_variants-cpu.md"))
  args = parser.parse_args()
  names = args.variants.split(",")
  load_start = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "unknown"
  programs, losses, compile_s = {}, {}, {}
  for name in names:
    epoch, epoch_args, sizes = profile_step.scan_of_steps("cnn_fast", 256, args.steps, apply_fn=VARIANTS[name])
    started = time.perf_counter()
    _, sums = jax.block_until_ready(epoch(*epoch_args))
    compile_s[name] = time.perf_counter() - started
    programs[name] = (epoch, epoch_args, sizes)
    losses[name] = float(sums["loss_sum"] / sums["count"])
  ms = {name: [] for name in names}
  for _ in range(args.repeats):
    for name in names:
      epoch, epoch_args, _ = programs[name]
      started = time.perf_counter()
      jax.block_until_ready(epoch(*epoch_args))
      ms[name].append(1000 * (time.perf_counter() - started) / args.steps)
  load_end = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "unknown"
  flags = os.environ.get("XLA_FLAGS", "")
  lines = [f"# cnn_fast's step, written several ways: {datetime.date.today()}; CPU {provenance.cpu_name()} "
           f"({os.cpu_count()} cores); jax {jax.__version__}", "",
           f"Command: `{'XLA_FLAGS=' + repr(flags) + ' ' if flags else ''}python experiments/cnn_variants.py "
           f"--steps={args.steps} --repeats={args.repeats}`. Load average {load_start} at the start, {load_end} at the "
           f"end. ms per step inside the scan; the variants took turns.", "",
           "| variant | median ms | min ms | vs today (median) | first call s (compile + run) | loss after the steps |",
           "|---|---:|---:|---:|---:|---:|"]
  base = statistics.median(ms[names[0]])
  for name in names:
    lines.append(f"| {name} | {statistics.median(ms[name]):.2f} | {min(ms[name]):.2f} | "
                 f"{statistics.median(ms[name]) / base:.2f}x | {compile_s[name]:.2f} | {losses[name]:.6f} |")
  for name in filter(None, args.profile.split(",")):
    epoch, epoch_args, sizes = programs[name]
    profile = profile_step.op_times(epoch, epoch_args, 2, sizes, per=args.steps)
    lines += ["", f"## {name}: the 12 longest ops ({profile['wall_ms']:.1f} ms per step)", "",
              "| op | ms | part | output | jaxpr path |", "|---|---:|---|---|---|"]
    lines += [f"| {op['op']} | {op['ms']:.2f} | {op['part']} | `{op['type']}` | "
              f"`{op['op_name'].split('closed_call/', 1)[-1][:60]}` |" for op in profile["ops"][:12]]
  text = "\n".join(lines) + "\n"
  print(text)
  Path(args.out).write_text(text)


if __name__ == "__main__":
  main()
