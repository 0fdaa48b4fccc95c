#!/usr/bin/env bash
# The post's full mlp3 run (SGD lr 0.01, batch 256, 400 epochs) through the CLI, timed end to end.
# Command:  bash experiments/full_mlp3_run.sh
# Writes experiments/results/mlp3-400-<date>/ (the run's files) and wall.txt (wall time, hardware).
# On the 2-core CPU of experiments/results/bench-cpu.md it takes about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
out="experiments/results/mlp3-400-$(date +%Y-%m-%d)"
start=$(date +%s.%N)
python -m jaxmnist.train --model=mlp3 --no-progress --workdir="$out"
end=$(date +%s.%N)
{
  echo "command: python -m jaxmnist.train --model=mlp3"
  echo "wall_seconds: $(python3 -c "print(round($end - $start, 1))")"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$out/wall.txt"
cat "$out/wall.txt"
