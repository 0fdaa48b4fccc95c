"""Where one compiled training step spends its time, op by op: XLA's own profile of the step, each op
named by its layer and by its part of the step (forward, data gradient, weight gradient, optimizer),
beside the FLOPs it computes and the bytes it moves, and the rates those make against the machine's peaks.

Command that produced experiments/results/profile_cnn_fast-cpu.md (about a minute on 2 CPU cores):
  python experiments/profile_step.py --model=cnn_fast
Also `--model=cnn` or any other name in jaxmnist.models.MODELS, `--batch-size`, `--steps`.

How: the real training (jaxmnist.steps.train_epoch, the epoch's `lax.scan` of train_step with the preset's
optimizer) runs `--steps` steps under `jax.profiler`; the trace's events carry the names of the compiled
HLO's instructions (fusions, dots, copies), which the compiled HLO text maps to their shapes, operands
and the jaxpr path they came from (`jvp(FastCNN)/Conv_1/dot_general` is layer Conv_1's forward;
`transpose(jvp(...))` the backward pass). An op of the backward pass whose output has as many elements as
a parameter is a weight gradient; everything else there is the data gradient. FLOPs are counted for dots
only (2 x output x contraction); bytes are the instruction's operands plus its output, each once.

`op_times` and `scan_of_steps` are importable: experiments/cnn_variants.py times and profiles its variants
with them.
"""

import argparse
import collections
import dataclasses
import datetime
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

_SHAPE = re.compile(r"(pred|s8|u8|s32|u32|f32|bf16|f16|s64|f64)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "f64": 8}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$")


def _array_sizes(type_text: str) -> list[tuple[int, int]]:
  """[(elements, bytes per element)] of every array type in an HLO type string (tuples give several)."""
  return [(math.prod(int(d) for d in dims.split(",") if d) if dims else 1, _BYTES[dtype])
          for dtype, dims in _SHAPE.findall(type_text)]


def parse_hlo(hlo_text: str) -> dict:
  """Every instruction of the compiled module: output type, operand names, op_name metadata, called
  computation, and the text of each computation (to find the dot inside a fusion)."""
  instructions, computations, current = {}, {}, None
  for line in hlo_text.splitlines():
    if line and not line.startswith(" ") and "{" in line and ("%" in line or "ENTRY" in line):
      current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
      computations[current] = []
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, rest = match.groups()
    if current is not None:
      computations[current].append(rest)
    out_type = rest.split(" ", 1)[0] if not rest.startswith("(") else rest[:rest.index(")") + 1]
    opcode = re.search(r"\s([\w\-]+)\(", rest)
    args = rest[opcode.end():] if opcode else ""
    operands = re.findall(r"%([\w.\-]+)", args.split("),", 1)[0]) if opcode else []
    op_name = re.search(r'op_name="([^"]*)"', rest)
    calls = re.search(r"calls=%?([\w.\-]+)", rest)
    instructions[name] = {"type": out_type, "opcode": opcode.group(1) if opcode else "", "operands": operands,
                          "op_name": op_name.group(1) if op_name else "", "calls": calls.group(1) if calls else None}
  return {"instructions": instructions, "computations": computations}


def _bytes_of(instruction: dict, instructions: dict) -> int:
  sizes = _array_sizes(instruction["type"])
  for operand in instruction["operands"]:
    if operand in instructions:
      sizes += _array_sizes(instructions[operand]["type"])
  return sum(elements * width for elements, width in sizes)


def _dot_flops(instruction: dict, module: dict) -> int:
  """2 x output x contraction for a dot, or a fusion around one (XLA's CPU backend fuses a dot with the
  bitcasts of its two operands): the contraction is sqrt(lhs x rhs / output) elements."""
  is_dot = instruction["opcode"] == "dot"
  fused = instruction["calls"] and any(" dot(" in text for text in module["computations"].get(instruction["calls"], []))
  operands = [module["instructions"][o] for o in instruction["operands"] if o in module["instructions"]]
  if not (is_dot or fused) or len(operands) < 2:
    return 0
  lhs, rhs = (_array_sizes(operand["type"])[0][0] for operand in operands[:2])
  out = _array_sizes(instruction["type"])[0][0]
  return int(2 * out * math.sqrt(lhs * rhs / out)) if out else 0


def classify(op_name: str, out_type: str, param_sizes: set) -> tuple[str, str]:
  """(layer, part) of an op from its jaxpr path and output shape."""
  layer = next((p for p in op_name.split("/") if re.fullmatch(r"[A-Z]\w*_\d+|dense\d+|Conv\w*", p)), "")
  if "optax" in op_name or "apply_updates" in op_name or not op_name:
    part = "optimizer, loss, other" if not layer else "forward"
  elif "transpose(" in op_name:
    # A weight gradient ends with a parameter's elements (a conv kernel's [K*K*C, F] before its reshape).
    elements = _array_sizes(out_type)[0][0] if _array_sizes(out_type) else 0
    part = "weight gradient" if elements in param_sizes else "data gradient"
  elif "jvp(" in op_name:
    part = "forward"
  else:
    part = "optimizer, loss, other"
  return layer or "(no layer)", part


def op_times(jitted, args, steps: int = 1, param_sizes: set = frozenset(), per: int = 1) -> dict:
  """Runs `jitted(*args)` `steps` times under the profiler; per compiled op: mean ms per call divided by
  `per` (the steps one call runs), its layer and part, FLOPs and bytes; also the wall ms, so divided.

  One compiled executable is timed, profiled and read: the trace's op names are that HLO's, and the
  program compiles once."""
  compiled = jitted.lower(*args).compile()
  module = parse_hlo(compiled.as_text())
  jax.block_until_ready(compiled(*args))
  started = time.perf_counter()
  for _ in range(steps):
    out = compiled(*args)
  jax.block_until_ready(out)
  wall_ms = 1000 * (time.perf_counter() - started) / steps / per
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(steps):
      out = compiled(*args)
    jax.block_until_ready(out)
    jax.profiler.stop_trace()
    trace_file, = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(trace_file) as f:
      events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  total_us, launches = collections.Counter(), 0
  for event in events:
    if event.get("ph") == "X" and event.get("name") in module["instructions"]:
      total_us[event["name"]] += event["dur"]
      launches += 1
  ops = []
  for name, us in total_us.items():
    instruction = module["instructions"][name]
    layer, part = classify(instruction["op_name"], instruction["type"], param_sizes)
    ops.append({"op": name, "ms": us / steps / per / 1000, "layer": layer, "part": part, "type": instruction["type"],
                "flops": _dot_flops(instruction, module), "bytes": _bytes_of(instruction, module["instructions"]),
                "op_name": instruction["op_name"]})
  ops.sort(key=lambda op: -op["ms"])
  # On a GPU the named events are the kernels XLA emitted (library kernels, cuBLAS's, carry other names).
  return {"wall_ms": wall_ms, "ops_ms": sum(op["ms"] for op in ops), "ops": ops,
          "named_events_per_step": launches / steps / per}


def peaks() -> dict:
  """The machine's float32 matmul FLOP/s (a large square-ish matmul) and copy bandwidth (bytes read and
  written by a large elementwise op), each the best of a few runs."""
  def best(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
      started = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - started)
    return min(times)
  a, b = jnp.ones((1024, 2048)), jnp.ones((2048, 1024))
  matmul_s = best(jax.jit(lambda a, b: a @ b), a, b)
  big = jnp.ones((64 * 2**20 // 4,))
  copy_s = best(jax.jit(lambda x: x * 1.0001 + 1.0), big)
  return {"matmul_flop_per_s": 2 * 1024 * 2048 * 1024 / matmul_s, "copy_bytes_per_s": 2 * big.nbytes / copy_s}


def scan_of_steps(model_name: str, batch_size: int, num_steps: int, apply_fn=None):
  """The preset's (or a default config's) real training: `num_steps` steps of jaxmnist.steps.train_epoch,
  the epoch's `lax.scan`, as `jaxmnist train` compiles it (here without donating the state, so that it
  can run again), on random uint8 images. `apply_fn` replaces the model's own (experiments' variants).
  Returns the jitted epoch, its arguments, and the sizes of the parameters (to name weight gradients)."""
  from jaxmnist import configs, models, parallel, steps  # pylint: disable=g-import-not-at-top
  from jaxmnist.programs import Programs  # pylint: disable=g-import-not-at-top
  from jaxmnist.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
  config = configs.PRESETS.get(model_name) or configs.Config(model=model_name)
  config = dataclasses.replace(config, valid_fraction=0.0, batch_size=batch_size)
  model = models.build_model(config.model)
  optimizer = make_optimizer(config, 235)
  state = Programs(config, model, optimizer, parallel.make_mesh()).init()
  keys = jax.random.split(jax.random.key(1), 2)
  num_images = num_steps * batch_size
  images = jax.random.randint(keys[0], (num_images, 28, 28, 1), 0, 256).astype(jnp.uint8)
  labels = jax.random.randint(keys[1], (num_images,), 0, 10)
  epoch = jax.jit(lambda state, images, labels, indices: steps.train_epoch(
      state, images, labels, indices, jax.random.key(2), batch_size=batch_size, apply_fn=apply_fn or model.apply,
      optimizer=optimizer, label_smoothing=config.label_smoothing))
  param_sizes = {leaf.size for leaf in jax.tree.leaves(state.params)}
  return epoch, (state, images, labels, jnp.arange(num_images)), param_sizes


def summarize(profile: dict) -> dict:
  """Per (layer, part): ms, share of the step, FLOPs, bytes, and the FLOP/s and bytes/s they ran at."""
  groups = collections.defaultdict(lambda: {"ms": 0.0, "flops": 0, "bytes": 0, "ops": 0})
  for op in profile["ops"]:
    group = groups[(op["layer"], op["part"])]
    group["ms"] += op["ms"]
    group["flops"] += op["flops"]
    group["bytes"] += op["bytes"]
    group["ops"] += 1
  rows = []
  for (layer, part), group in sorted(groups.items(), key=lambda item: -item[1]["ms"]):
    seconds = max(group["ms"], 1e-6) / 1000
    rows.append({"layer": layer, "part": part, **group, "share": group["ms"] / max(profile["ops_ms"], 1e-9),
                 "flop_per_s": group["flops"] / seconds, "bytes_per_s": group["bytes"] / seconds})
  return {"rows": rows}


def to_markdown(name: str, batch_size: int, profile: dict, summary: dict, machine: dict, load: str) -> str:
  from experiments import provenance  # pylint: disable=g-import-not-at-top
  lines = [f"# Where a `{name}` training step goes: {datetime.date.today()}; CPU {provenance.cpu_name()} "
           f"({os.cpu_count()} cores); jax {jax.__version__}", "",
           f"Command: `python experiments/profile_step.py --model={name}`. Batch {batch_size}, the step inside the "
           f"epoch's scan. Load average at the start: {load}. One step: {profile['wall_ms']:.1f} ms wall unprofiled; "
           f"the profiled ops sum to {profile['ops_ms']:.1f} ms ({profile['named_events_per_step']:.0f} of them per step). "
           f"Peaks measured here: float32 matmul "
           f"{machine['matmul_flop_per_s'] / 1e9:.0f} GFLOP/s, an elementwise op over 256 MB (memory, not cache) "
           f"{machine['copy_bytes_per_s'] / 1e9:.1f} GB/s read and written.", "",
           "Ops that XLA hands to Eigen's thread pool (the `dot.N` weight gradients) return before their work is "
           "done: their own rows are too short, and their time lands on the ops that wait for them. Pooling "
           "and ReLU run outside any layer's scope: they are the `(no layer)` rows.", "",
           "| layer | part | ms | share | ops | MFLOP | MB moved | GFLOP/s | GB/s |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for row in summary["rows"]:
    lines.append(f"| {row['layer']} | {row['part']} | {row['ms']:.2f} | {100 * row['share']:.1f}% | {row['ops']} | "
                 f"{row['flops'] / 1e6:.0f} | {row['bytes'] / 1e6:.1f} | {row['flop_per_s'] / 1e9:.0f} | "
                 f"{row['bytes_per_s'] / 1e9:.1f} |")
  lines += ["", "The 15 longest ops:", "", "| op | ms | layer | part | output | jaxpr path |", "|---|---:|---|---|---|---|"]
  for op in profile["ops"][:15]:
    lines.append(f"| {op['op']} | {op['ms']:.2f} | {op['layer']} | {op['part']} | `{op['type']}` | "
                 f"`{op['op_name'].split('closed_call/', 1)[-1][:70]}` |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="cnn_fast")
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=40, help="steps of the profiled scan")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results"))
  args = parser.parse_args()
  load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "unknown"
  epoch, epoch_args, param_sizes = scan_of_steps(args.model, args.batch_size, args.steps)
  machine = peaks()
  profile = op_times(epoch, epoch_args, 3, param_sizes, per=args.steps)
  summary = summarize(profile)
  text = to_markdown(args.model, args.batch_size, profile, summary, machine, load)
  print(text)
  device = "cpu" if jax.default_backend() == "cpu" else "gpu"
  out = Path(args.out)
  (out / f"profile_{args.model}-{device}.md").write_text(text)
  (out / f"profile_{args.model}-{device}.json").write_text(json.dumps(
      {"date": str(datetime.date.today()), "load": load, "machine": machine, "wall_ms": profile["wall_ms"],
       "ops_ms": profile["ops_ms"], "named_events_per_step": profile["named_events_per_step"],
       "groups": summary["rows"],
       "ops": [{k: v for k, v in op.items()} for op in profile["ops"]]}, indent=1))


if __name__ == "__main__":
  main()
