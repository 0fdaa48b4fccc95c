#!/usr/bin/env bash
# The Fashion-MNIST recipe search for the 2-core CPU, done with a sweep: cnn_fashion's recipe (cnn_mid, Adam,
# one-cycle, batch 128, flips and shifts) for EPOCHS epochs at each learning rate (its one-cycle peak) of
# RATES, in one process and one compiled program; the best by validation is the recipe's rate.
# Command:  bash experiments/fashion_sweep.sh [RATES] [EPOCHS] [EXTRA FLAGS...]
#   (default RATES 0.002,0.004,0.008, EPOCHS 8)
# Writes experiments/results/fashion-sweep-<date>/: the run's files, log.txt (its sweep table, sorted by
# validation, then evaluate's with test beside it) and wall.txt (wall time, hardware, load).
set -euo pipefail
cd "$(dirname "$0")/.."
rates="${1:-0.002,0.004,0.008}"
epochs="${2:-8}"
shift $(( $# > 2 ? 2 : $# ))
out="experiments/results/fashion-sweep-$(date +%Y-%m-%d)"
start=$(date +%s.%N)
load_before=$(cut -d' ' -f1 /proc/loadavg)
python -m jaxmnist train --dataset=fashion_mnist --model=cnn_fashion --epochs="$epochs" --lr="$rates" "$@" \
  --no-progress --workdir="$out/run" | tee "$out.log"
end=$(date +%s.%N)
mv "$out.log" "$out/log.txt"
rm -rf "$out/run/checkpoints"  # megabytes per member; the table and summary say what the search found
# The home folder as ~ in what the run wrote (its data source names the cache): the files read the same anywhere.
grep -rlF "$HOME/" "$out" | xargs -r sed -i "s|$HOME/|~/|g"
{
  echo "command: bash experiments/fashion_sweep.sh $rates $epochs $*"
  echo "wall_seconds: $(python3 -c "print(round($end - $start, 1))")"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)"
  echo "load_average_before_after: $load_before / $(cut -d' ' -f1 /proc/loadavg)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$out/wall.txt"
cat "$out/wall.txt"
