#!/usr/bin/env bash
# The sweep's promises on real MNIST, end to end through the CLI: `--lr=0.05,0.1` on `linear` trains two
# members in one program, its lr-0.1 member reaches the test accuracy of `--lr=0.1` alone, summary.json names
# each member's rate, `evaluate` prints the sweep table with test beside validation, and `predict` answers
# with the best member by validation.
#
#   bash experiments/sweep_linear.sh [EPOCHS]     # default 20 (the preset's 400 take minutes); the venv active
#
# Writes experiments/results/sweep-linear/log.txt: each command, its output and its wall time, then the check.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
epochs="${1:-20}"
out="$repo/experiments/results/sweep-linear"
work="$(mktemp -d)"
mkdir -p "$out"
cd "$work"
log="$out/log.txt"
echo "# $(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores), linear, $epochs epochs" > "$log"

step() {  # step command...: runs it, appends the command, its output and its wall time to the log
  printf '\n$ %s\n' "$*" >> "$log"
  local start end
  start=$(date +%s%N)
  "$@" >> "$log" 2>&1
  end=$(date +%s%N)
  awk -v ns="$((end - start))" 'BEGIN { printf "[%.1f s wall]\n", ns / 1e9 }' >> "$log"
}

step jaxmnist train --model=linear --lr=0.05,0.1 --epochs="$epochs" --workdir=sweep --no-progress
step jaxmnist train --model=linear --lr=0.1 --epochs="$epochs" --workdir=alone --no-progress
step jaxmnist evaluate sweep
python - <<'PY'
from PIL import Image
from jaxmnist import data
digit = data.load_mnist("cache").test_images[0, ..., 0]  # the session's verified cache: a real test 7
Image.fromarray(255 - digit).resize((112, 112)).save("seven.png")
PY
step jaxmnist predict sweep seven.png --json
python - "$log" <<'PY' | tee -a "$log"
import json, sys
sweep, alone = (json.load(open(f"{run}/summary.json")) for run in ("sweep", "alone"))
prediction = json.loads(open(sys.argv[1]).read().rsplit("--json\n", 1)[1].split("\n[", 1)[0])
rates = [m["learning_rate"] for m in sweep["members"]]
member = sweep["members"][rates.index(0.1)]
best = max(range(len(rates)), key=lambda k: sweep["members"][k]["valid_accuracy"])
print(f"\ncheck: {len(rates)} members, rates {rates}; member lr 0.1 test {member['test_accuracy']:.4f}, "
      f"alone {alone['test_accuracy']:.4f} (difference {abs(member['test_accuracy'] - alone['test_accuracy']):.4f}, "
      f"bound 0.0005); best by validation: member {best} (summary says {sweep['best_member']}); "
      f"predict answered with member {prediction.get('member')}")
PY
# The home folder as ~ in what the run wrote (its data source names the cache): the files read the same anywhere.
grep -rlF "$HOME/" "$log" | xargs -r sed -i "s|$HOME/|~/|g"
