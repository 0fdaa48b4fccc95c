"""`jaxmnist predict RUN_DIR IMAGE...`: the digit in each of your own images, with the top-3 probabilities.

Synopsis:
  jaxmnist predict runs/cnn-20261127-120000 my_three.png photo.jpg
  jaxmnist predict runs/cnn-20261127-120000 my_three.png --json

Each image goes through `jaxmnist.preprocess.to_mnist` (ink made white on black, cropped, scaled to
20 px and centred by its centre of mass, as MNIST was made), then through the run's newest checkpoint
in eval mode, all images in one jitted call. Classes are named as the run's dataset names them: the
digit for MNIST, "Sneaker", "Bag", ... for Fashion-MNIST.
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from jaxmnist import data, datasets, interpret, preprocess, process, steps, train_state

TOP_K = 3


def probabilities_fn(trained: train_state.Trained):
  """`images_NxHxWxC (uint8) -> softmax probabilities [N, C]`, eval mode, jitted once: build it once
  and call it many times (the server does), so that only a new batch shape compiles again."""
  def probabilities_of(variables, images):
    return jax.nn.softmax(trained.model.apply(variables, steps.images_to_inputs(images), train=False))

  jitted = jax.jit(probabilities_of)
  return lambda images_NxHxWxC: np.asarray(jitted(trained.variables, images_NxHxWxC))


def probabilities(trained: train_state.Trained, images_NxHxWxC: np.ndarray) -> np.ndarray:
  """Softmax probabilities [N, C] of uint8 images, in eval mode (one call; see probabilities_fn)."""
  return probabilities_fn(trained)(images_NxHxWxC)


def describe(path: str, probabilities_C: np.ndarray, class_names=interpret.DIGITS) -> dict:
  top = np.argsort(-probabilities_C, kind="stable")[:TOP_K]
  return {"image": path, "prediction": class_names[int(top[0])], "class_index": int(top[0]),
          "top": [{"class": class_names[int(i)], "probability": round(float(probabilities_C[i]), 6)} for i in top],
          "probabilities": [round(float(p), 6) for p in probabilities_C]}


def line(result: dict) -> str:
  top = ", ".join(f"{t['class']}: {t['probability']:.3f}" for t in result["top"])
  return f"{result['image']}: {result['prediction']}   ({top})"


def main(args: argparse.Namespace) -> None:
  images = preprocess.to_mnist_batch(args.images)  # every bad image is named before the model loads
  process.enable_compilation_cache(data.default_cache_dir(), process.xla_cache_limit_bytes())
  trained = train_state.load_trained(Path(args.run_dir))
  names = datasets.get(trained.config.dataset).class_names
  results = [describe(path, p, names) for path, p in zip(args.images, probabilities(trained, images))]
  if args.json:
    print(json.dumps({"run_dir": str(args.run_dir), "model": trained.config.model,
                      "dataset": trained.config.dataset, "class_names": list(names),
                      "checkpoint_epoch": trained.epoch, "predictions": results}, indent=1))
  else:
    print("\n".join(line(r) for r in results))

