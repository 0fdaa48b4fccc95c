#!/usr/bin/env bash
# Every GPU measurement in one call, for a lent GPU machine that has jax[cuda], flax, optax, chex,
# tqdm and matplotlib but no tensorflow-datasets and no network. About 3 minutes on one H100.
#
# Here, once: put the four gzipped IDX files (about 11 MB) where the device machine can read them:
#   python -c "from jaxmnist import data, idx; import gzip, pathlib; d = pathlib.Path('.gpu_data'); \
#     d.mkdir(exist_ok=True); [ (d / (n + '.gz')).write_bytes(gzip.compress((data.default_cache_dir() / 'mnist' / n).read_bytes())) for n in idx.CANONICAL_FILES ]"
#   echo /.gpu_data/ >> .git/info/exclude
# Then run, carrying .gpu_data:   bash experiments/gpu_check.sh   (results under $OUT, or a new temporary folder)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
# At most 8 files come back from $OUT: run directories and caches stay in $work.
work="$(mktemp -d)"
mkdir -p "$work"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 JAXMNIST_CACHE_DIR="$work/cache"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
python -c "import jax; print(jax.__version__, jax.devices())" >> "$out/gpu.txt" 2>&1
# Verify the carried files and fill the cache once; every later step reads the cache.
python -c "from jaxmnist import data; print(data.load_mnist('dir', '.gpu_data').source)" >> "$out/gpu.txt" 2>&1
# 1. Benchmark: compile, epoch time, FLOP/s vs the measured matmul peak, both loops (no torch on GPU here).
python experiments/bench.py --no-torch --epochs=10 --out="$out" > "$out/bench.log" 2>&1
# 2. The post's full 400-epoch mlp3 run through the CLI (target: under 5 s of training on one H100).
start=$(date +%s.%N)
python -m jaxmnist.train --model=mlp3 --no-progress --workdir="$work/mlp3-400" > "$out/mlp3-400.log" 2>&1
echo "wall_seconds: $(python -c "print(round($(date +%s.%N) - $start, 1))")" >> "$out/mlp3-400.log"
# 3. The same seed for 20 epochs, to compare the accuracy curve with the CPU's.
python -m jaxmnist.train --model=mlp3 --epochs=20 --no-progress --workdir="$work/mlp3-20" > "$out/mlp3-20.log" 2>&1
cp "$work/mlp3-400/summary.json" "$out/mlp3-400-summary.json"; cp "$work/mlp3-20/metrics.csv" "$out/mlp3-20-metrics.csv"
tail -n 3 "$out"/*.log
