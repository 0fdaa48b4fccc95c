"""How well a trained model reads real MNIST test digits rendered as people's pictures (the predict path).

Synopsis:
  jaxmnist train --model=cnn --workdir=runs/cnn --no-progress      # ~1-2 minutes on a 2-core CPU
  python experiments/predict_rendered.py runs/cnn --count=1000       # writes results/predict_rendered.md

Each test digit is drawn 7-12x larger, black ink on white, off centre on a 400x360 canvas
(tests/render_digits.py), saved as PNG and as JPEG (quality 85), read back through
`jaxmnist.preprocess.to_mnist_batch` (what `jaxmnist predict` does) and classified by the run's newest
checkpoint.
"""

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from jaxmnist import data, predict, preprocess, train_state  # noqa: E402
from experiments import provenance  # noqa: E402
from tests import render_digits  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("run_dir")
  parser.add_argument("--count", type=int, default=1000)
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results" / "predict_rendered.md"))
  args = parser.parse_args()
  trained = train_state.load_trained(args.run_dir)
  outputs_of = predict.outputs_fn(trained)  # (probabilities, members agreeing) of uint8 images
  mnist = data.load_mnist()
  images, labels = mnist.test_images[:args.count], mnist.test_labels[:args.count]
  lines = [f"# Rendered test digits through `jaxmnist predict`'s path ({datetime.date.today()}, {provenance.cpu_name()})",
           "", f"Command: `python experiments/predict_rendered.py RUN_DIR --count={args.count}`, "
           f"RUN_DIR a `{trained.config.model}` run (checkpoint of epoch {trained.epoch}).", "",
           "| input | accuracy | wrong | preprocessing per image |", "|---|---:|---:|---:|"]
  original = outputs_of(images)[0].argmax(-1) == labels
  lines.append(f"| the original 28x28 images | {original.mean():.4f} | {int((~original).sum())} | |")
  with tempfile.TemporaryDirectory() as tmp:
    for image_format in ("png", "jpeg"):
      paths = render_digits.write_digits(images[..., 0], Path(tmp) / image_format, image_format)
      start = time.perf_counter()
      digits = preprocess.to_mnist_batch(paths)
      per_image_ms = (time.perf_counter() - start) / len(paths) * 1000
      correct = outputs_of(digits)[0].argmax(-1) == labels
      lines.append(f"| rendered {image_format.upper()} | {correct.mean():.4f} | {int((~correct).sum())} | "
                   f"{per_image_ms:.1f} ms |")
  text = "\n".join(lines) + "\n"
  Path(args.out).write_text(text)
  print(text)


if __name__ == "__main__":
  main()
