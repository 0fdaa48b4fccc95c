#!/usr/bin/env bash
# The whole life of a model, as the README shows it: train a cnn, interrupt it with Ctrl-C, resume,
# evaluate, predict on two pictures of one's own, export, and run the export with jax alone.
#
#   bash experiments/model_life.sh            # ~3 minutes on a 2-core CPU; the venv active
#
# Writes experiments/results/model_life/{log.txt, confusion.png, top_losses.png, *.png inputs}. Each
# command's wall time (start-up included) is in the log: `predict` target < 3 s warm, `evaluate` < 15 s.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/experiments/results/model_life"
work="$(mktemp -d)"
mkdir -p "$out"
cd "$work"
log="$out/log.txt"
: > "$log"

step() {  # step "title" command...: runs it, appends the command, its output and its wall time to the log
  local title="$1"; shift
  printf '\n$ %s\n' "$*" | sed "s|$work/||g" >> "$log"
  local start end status=0
  start=$(date +%s%N)
  "$@" >> "$log" 2>&1 || status=$?
  end=$(date +%s%N)
  awk -v t="$title" -v s="$status" -v ns="$((end - start))" 'BEGIN { printf "[%s: exit %d, %.1f s wall]\n", t, s, ns / 1e9 }' >> "$log"
}

echo "# $(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores), cnn preset" >> "$log"
# Ctrl-C 12 s in: the run stops after the running epoch, saves it, and says how to resume.
step "train, interrupted" timeout --preserve-status -s INT 12 jaxmnist train --model=cnn --workdir=runs/cnn --no-progress
step "resume" jaxmnist train --resume runs/cnn --no-progress
step "evaluate" jaxmnist evaluate runs/cnn

# Two pictures of one's own: a 7 drawn with a thick pen, and a photo-like 3 (a real test digit drawn
# large, dark on light grey paper, off centre, as JPEG).
python - <<'EOF'
from PIL import Image, ImageDraw
from jaxmnist import data
page = Image.new("RGB", (320, 300), "white")
pen = ImageDraw.Draw(page)
pen.line([(70, 60), (230, 60), (130, 260)], fill="black", width=22, joint="curve")
page.save("my_seven.png")
mnist = data.load_mnist()
three = next(i for i, label in enumerate(mnist.test_labels) if label == 3)
digit = Image.fromarray(255 - mnist.test_images[three, ..., 0]).resize((224, 224), Image.BILINEAR)
photo = Image.new("L", (400, 300), 215)
photo.paste(Image.eval(digit, lambda v: int(v * 215 / 255)), (140, 50))
photo.save("photo_three.jpg", quality=80)
EOF
cp my_seven.png photo_three.jpg "$out/"
step "predict, cold" jaxmnist predict runs/cnn my_seven.png photo_three.jpg
step "predict one image, warm" jaxmnist predict runs/cnn my_seven.png
step "export" jaxmnist export runs/cnn --out=cnn.jaxexport
step "run the export with jax alone" python -I -c "
import numpy as np
from jax import export
exp = export.deserialize(bytearray(open('cnn.jaxexport', 'rb').read()))
print(exp.in_avals, '->', exp.out_avals)
print('logits of a blank image:', np.round(np.asarray(exp.call(np.zeros((1, 28, 28, 1), np.uint8)))[0], 2))"
cp runs/cnn/confusion.png runs/cnn/top_losses.png "$out/"
rm -rf "$work"
cat "$log"
