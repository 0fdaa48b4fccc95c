#!/usr/bin/env bash
# Fashion-MNIST on the 2-core CPU: the cnn_fashion preset (cnn_mid, Adam, one-cycle peaking at the rate that
# experiments/fashion_sweep.sh chose on validation, batch 128, flips then shifts), one whole `jaxmnist train`
# process per seed, timed from start to exit (start-up, compiling, per-epoch validation and the report included).
# Command:  bash experiments/fashion_cpu.sh [SEEDS] [EXTRA FLAGS...]   (default SEEDS "0 1 2")
# Writes experiments/results/fashion-cpu-<date>/: seed<K>/ (the run's report; no checkpoints), log.txt and
# runs.md (one row a seed: test, validation, wall and CPU seconds, load before and after, the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-0 1 2}"
shift $(( $# > 0 ? 1 : 0 ))
out="experiments/results/fashion-cpu-$(date +%Y-%m-%d)"
mkdir -p "$out"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)"
[ -f "$out/runs.md" ] || printf '| seed | test | validation | wall s | CPU s | load before / after | command | CPU |\n|---|---|---|---|---|---|---|---|\n' > "$out/runs.md"
for seed in $seeds; do
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  command=(python -m jaxmnist train --dataset=fashion_mnist --model=cnn_fashion --seed="$seed" "$@" --no-progress
           --workdir="$out/seed$seed")
  /usr/bin/time -f '%e %U %S' -o "$out/time.txt" "${command[@]}" | tee -a "$out/log.txt"
  read -r wall user system < "$out/time.txt" && rm "$out/time.txt"
  rm -rf "$out/seed$seed/checkpoints"  # megabytes; summary.json and evaluation.json say what it reached
  python3 - "$out/seed$seed/summary.json" "$seed" "$wall" "$user" "$system" "$load_before" "$cpu" "${command[*]}" \
    >> "$out/runs.md" <<'PY'
import json, sys
summary_path, seed, wall, user, system, load_before, cpu, command = sys.argv[1:]
s = json.load(open(summary_path))
load_after = open("/proc/loadavg").read().split()[0]
valid = "none" if s["valid_accuracy"] is None else f"{s['valid_accuracy']:.4f}"  # --valid-fraction=0: none held out
print(f"| {seed} | {s['test_accuracy']:.4f} | {valid} | {float(wall):.0f} | "
      f"{float(user) + float(system):.0f} | {load_before} / {load_after} | `{command}` | {cpu} |")
PY
done
# The home folder as ~ in what the run wrote (its data source names the cache): the files read the same anywhere.
grep -rlF "$HOME/" "$out" | xargs -r sed -i "s|$HOME/|~/|g"
cat "$out/runs.md"
