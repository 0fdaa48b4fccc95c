#!/usr/bin/env bash
# Every GPU measurement in one call, for a lent GPU machine that has jax[cuda], flax, optax, chex,
# tqdm and matplotlib but no tensorflow-datasets, no torch and no network. About 9 minutes on one H100 (before step 0 was added).
#
# Here, once: the data and a CPU-made export travel in .gpu_data (ignored by git, about 42 MB):
#   mkdir -p .gpu_data/mnist .gpu_data/fashion; echo /.gpu_data/ >> .git/info/exclude
#   python -c "from jaxmnist import data, idx; import gzip, pathlib; d = pathlib.Path('.gpu_data/mnist'); \
#     [(d / (n + '.gz')).write_bytes(gzip.compress((data.default_cache_dir() / 'mnist' / n).read_bytes())) \
#      for n in idx.CANONICAL_FILES]"
#   cp /usr/share/datasets/fashion-mnist/*.gz .gpu_data/fashion/     # apt-get install dataset-fashion-mnist
#   jaxmnist export RUN_DIR_OF_A_CPU_CNN_FAST_RUN --out .gpu_data/cnn_fast.jaxexport
#   python -c "...np.save('.gpu_data/cnn_fast_cpu_logits.npy', exp.call(test_images))"   (the CPU's logits)
# Then run, carrying .gpu_data:   bash experiments/gpu_check.sh        (QUICK=1: a dry run in a minute, any machine)
# What comes back under $OUT: log.txt, results.tgz (every markdown and JSON, re-packed after each step,
# so a step cut short keeps the ones before it), gpu_run.tgz (a run trained and checkpointed on the GPU,
# for restoring on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$(mktemp -d)}"
work="$(mktemp -d)"
results="$work/results"
mkdir -p "$out" "$results"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 JAXMNIST_CACHE_DIR="$work/cache"
log="$out/log.txt"
quick="${QUICK:-0}"
pack() { tar czf "$out/results.tgz" -C "$work" results; }
step() {  # step NAME SECONDS COMMAND...: a time-boxed step, its output in the log and in results/NAME.log
  local name="$1" limit="$2"; shift 2
  echo "=== $name ($(date +%T), at most ${limit}s)" >> "$log"
  local start=$SECONDS
  timeout "$limit" "$@" > "$results/$name.log" 2>&1
  echo "--- $name: exit $?, $((SECONDS - start)) s" >> "$log"
  tail -n 25 "$results/$name.log" >> "$log"
  pack
}
if [ "$quick" = 1 ]; then seeds=2; members=2; ensemble="--seeds=2 --epochs=1"; sweep="--candidates=cnn_fast_e1,fast24x32_shift_e6 --seeds=0 --max-minutes=1"
  fashion="--models=linear --seeds=0 --epochs-override=1"; bench_epochs=2; mlp3_epochs=2
else seeds=10; members=16; ensemble="--seeds=8 --epochs=24"; sweep="--seeds=0,1,2 --max-minutes=2.0"; fashion="--models=cnn,mlp3_modern,cnn_wide,linear,mlp3"
  bench_epochs=5; mlp3_epochs=400; fi

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1
  python -c "import sys, flax, optax, chex, orbax.checkpoint, PIL, tqdm, matplotlib; print(sys.version)" 2>&1; } > "$log"
# jax's capped compilation cache needs filelock; without it, run with the cache off.
python -c "import filelock" 2>/dev/null || { export JAXMNIST_XLA_CACHE_MB=0; echo "no filelock: XLA cache off" >> "$log"; }
# Verify the carried files once; every later step reads the verified cache.
step data 30 python -c "
from jaxmnist import data
print(data.load_mnist('dir', '.gpu_data/mnist').source)
print(data.load_mnist('dir', '.gpu_data/fashion', dataset='fashion_mnist').source)"

# 6. Speed, defined here and run last, or alone with PARTS=speed (about 3 minutes): a cnn_fast epoch
#   <= 0.5x the H100's 70 ms with fewer kernel launches, stated with a profile; the whole process warm
#   <= 3 s. The epoch as it is, then with the scan's body captured as CUDA graphs (XLA's command buffers).
speed() {
  step speed_profile 120 python experiments/profile_step.py --model=cnn_fast --out="$results"
  mkdir -p "$results/epoch_default" "$results/epoch_graphs"
  step speed_epoch_default 90 python experiments/bench_fast.py --no-torch --parts=profile \
    --data-dir=.gpu_data/mnist --out="$results/epoch_default"
  XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE \
--xla_gpu_graph_min_graph_size=1" step speed_epoch_graphs 90 python experiments/bench_fast.py --no-torch \
    --parts=profile --data-dir=.gpu_data/mnist --out="$results/epoch_graphs"
  step speed_warm_process 90 bash -c 'TIMEFORMAT="whole process: %R s"; for i in 1 2 3; do time python -m \
    jaxmnist.train --model=cnn_fast --valid-fraction=0 --checkpoint-every=0 --no-evaluate --no-progress \
    --workdir="$0/warm$i" > /dev/null; done' "$work"
}
if [ "${PARTS:-all}" = speed ]; then speed; echo "=== done $(date +%T)" >> "$log"; exit 0; fi

# 0. Many models in one program (issue 26: 16 cnn_fast members' epoch <= 2x one member's on the same card),
#    and a Fashion-MNIST ensemble for >= 0.945 test (cnn_wide's flips and shifts, 8 seeds vmapped; issue 26).
#    PARTS=many runs these two alone (about 5 minutes on one H100, not yet run).
step bench_ensemble 90 python experiments/bench_ensemble.py --parts=epoch --members="$members" \
  --data-dir=.gpu_data/mnist --out="$results"
step fashion_ensemble 300 python -m jaxmnist train --dataset=fashion_mnist --source=dir --data-dir=.gpu_data/fashion \
  --model=cnn_wide --augment=flip+shift $ensemble --no-progress --workdir="$work/fashion_ensemble"
cp "$work/fashion_ensemble/summary.json" "$results/fashion_ensemble-summary.json" 2>/dev/null
if [ "${PARTS:-all}" = many ]; then pack; echo "=== done $(date +%T)" >> "$log"; exit 0; fi

# 1. Time to accuracy (issue: under 0.5 s of training for the one-epoch recipe), compile apart, a profile.
step bench_fast 120 python experiments/bench_fast.py --no-torch --parts=fast,profile --seeds="$seeds" \
  --data-dir=.gpu_data/mnist --out="$results"

# 2. A checkpoint written on the GPU comes back for restoring on a CPU; an artifact exported on a CPU
#    runs here and must give the CPU's predictions.
step gpu_run 40 python -m jaxmnist.train --model=cnn_fast --epochs=2 --no-progress --workdir="$work/gpu_run"
tar czf "$out/gpu_run.tgz" -C "$work" gpu_run 2>> "$log"
step export_check 30 python -c "
import numpy as np
from jax import export
from jaxmnist import data
mnist = data.load_mnist('cache')
exp = export.deserialize(bytearray(open('.gpu_data/cnn_fast.jaxexport', 'rb').read()))
gpu = np.asarray(exp.call(mnist.test_images))
cpu = np.load('.gpu_data/cnn_fast_cpu_logits.npy')
print('export_check: platforms', exp.platforms, '| max |logit diff| GPU vs CPU', float(np.abs(gpu - cpu).max()),
      '| argmax disagreements', int((gpu.argmax(-1) != cpu.argmax(-1)).sum()), 'of', len(cpu),
      '| GPU accuracy', float((gpu.argmax(-1) == mnist.test_labels).mean()))"

# 3. The search for a 99.5% recipe that trains in minutes.
step sweep_995 150 python experiments/sweep_995.py $sweep --out="$results"

# 4. Fashion-MNIST's table, fastest models first (each run is saved as it ends).
step fashion 130 python experiments/fashion_results.py $fashion --data-dir=.gpu_data/fashion --out="$results"

# 5. The post's models: epoch times against the matmul peak, and the full 400-epoch mlp3 run.
step bench 60 python experiments/bench.py --no-torch --epochs="$bench_epochs" --out="$results"
step mlp3_400 30 python -m jaxmnist.train --model=mlp3 --epochs="$mlp3_epochs" --no-progress \
  --checkpoint-every=0 --no-evaluate --workdir="$work/mlp3"
cp "$work/mlp3/summary.json" "$results/mlp3-400-summary.json" 2>/dev/null
speed
pack
echo "=== done $(date +%T)" >> "$log"
