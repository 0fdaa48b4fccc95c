"""`jaxmnist predict RUN_DIR IMAGE...`: the digit in each of your own images, with the top-3 probabilities.

Synopsis:
  jaxmnist predict runs/cnn-20261127-120000 my_three.png photo.jpg
  jaxmnist predict runs/cnn-20261127-120000 my_three.png --json

Each image goes through `jaxmnist.preprocess.to_mnist` (ink made white on black, cropped, scaled to
20 px and centred by its centre of mass, as MNIST was made), then through the run's newest checkpoint
in eval mode, all images in one jitted call. An ensemble's run answers with the mean of its members'
probabilities, and says how many members pick the same class. Classes are named as the run's dataset names them: the
digit for MNIST, "Sneaker", "Bag", ... for Fashion-MNIST.

The first predict of a checkpoint restores it through flax and orbax and writes the outputs function
beside the run (jaxmnist.inference); later ones read that with jax alone, about a second sooner.
"""

import argparse
import functools
import json
import typing
from pathlib import Path

import jax
import numpy as np

from jaxmnist import data, datasets, ensemble, inference, interpret, preprocess, process, runs

if typing.TYPE_CHECKING:
  from jaxmnist import train_state

TOP_K = 3


def _outputs_of(trained: "train_state.Trained"):
  """`(variables, images_NxHxWxC) -> (probabilities, members agreeing or None)`, the function outputs_fn
  jits and the inference cache exports."""
  from jaxmnist import steps  # pylint: disable=g-import-not-at-top  (optax: only where a checkpoint is restored)

  def outputs_of(variables, images):
    inputs = steps.images_to_inputs(images)
    if not trained.seeds:
      return jax.nn.softmax(trained.apply(variables, inputs, train=False)), None
    member_logits = ensemble.member_logits(trained.model.apply, variables, inputs)
    logits = ensemble.combine(member_logits)  # = trained.apply(variables, inputs), members computed once
    return jax.nn.softmax(logits), ensemble.members_agreeing(member_logits, logits)
  return outputs_of


def outputs_fn(trained: "train_state.Trained"):
  """`images_NxHxWxC (uint8) -> (softmax probabilities [N, C], members agreeing [N] or None)`, eval mode,
  jitted once: build it once and call it many times (the server does), so that only a new batch shape
  compiles again. For an ensemble the probabilities are the members' mean (Trained.apply's), and the
  second output counts the members whose own top class is the ensemble's; for one model it is None."""
  jitted = jax.jit(_outputs_of(trained))
  return lambda images_NxHxWxC: jax.device_get(jitted(trained.variables, images_NxHxWxC))


def probabilities_fn(trained: "train_state.Trained"):
  """`images_NxHxWxC (uint8) -> softmax probabilities [N, C]`: outputs_fn's first output."""
  outputs_of = outputs_fn(trained)
  return lambda images_NxHxWxC: np.asarray(outputs_of(images_NxHxWxC)[0])


def probabilities(trained: "train_state.Trained", images_NxHxWxC: np.ndarray) -> np.ndarray:
  """Softmax probabilities [N, C] of uint8 images, in eval mode (one call; see probabilities_fn)."""
  return probabilities_fn(trained)(images_NxHxWxC)


def newest_outputs(run_dir: Path) -> inference.Cached:
  """The outputs of the run's newest intact checkpoint: from the inference cache when it fits that
  checkpoint, else restored (flax, optax, orbax) and then cached for the next call."""
  cached = inference.read(run_dir)
  if cached is not None:
    return cached
  from jaxmnist import train_state  # pylint: disable=g-import-not-at-top  (flax, optax, orbax: 1-2 s of imports)

  # The key before the restore: a checkpoint that lands meanwhile makes the cache stale, never wrong.
  key = inference.checkpoint_key(run_dir)
  trained = train_state.load_trained(run_dir)
  host_variables = jax.device_get(trained.variables)  # baked in as constants, tied to no device
  inference.write(run_dir, key, functools.partial(_outputs_of(trained), host_variables), trained.epoch)
  return inference.Cached(epoch=trained.epoch, outputs=outputs_fn(trained))


def describe(path: str, probabilities_C: np.ndarray, class_names=interpret.DIGITS, agreeing=None,
             members: int = 0) -> dict:
  """One image's answer; an ensemble's also says how many of its members pick the same class."""
  top = np.argsort(-probabilities_C, kind="stable")[:TOP_K]
  agreement = {"members": members, "members_agreeing": int(agreeing)} if members else {}
  return {"image": path, "prediction": class_names[int(top[0])], "class_index": int(top[0]),
          "top": [{"class": class_names[int(i)], "probability": round(float(probabilities_C[i]), 6)} for i in top],
          "probabilities": [round(float(p), 6) for p in probabilities_C], **agreement}


def line(result: dict) -> str:
  top = ", ".join(f"{t['class']}: {t['probability']:.3f}" for t in result["top"])
  agree = f"; {result['members_agreeing']} of {result['members']} members agree" if "members" in result else ""
  return f"{result['image']}: {result['prediction']}   ({top}{agree})"


def main(args: argparse.Namespace) -> None:
  images = preprocess.to_mnist_batch(args.images)  # every bad image is named before the model loads
  process.enable_compilation_cache(data.default_cache_dir(), process.xla_cache_limit_bytes())
  config = runs.read_config(args.run_dir)
  newest = newest_outputs(Path(args.run_dir))
  names = datasets.get(config.dataset).class_names
  probabilities_NxC, agreeing_N = newest.outputs(images)
  agreeing_N = [None] * len(images) if agreeing_N is None else agreeing_N
  results = [describe(path, p, names, agree, len(config.seeds))
             for path, p, agree in zip(args.images, probabilities_NxC, agreeing_N)]
  if args.json:
    print(json.dumps({"run_dir": str(args.run_dir), "model": config.model, "members": len(config.seeds),
                      "dataset": config.dataset, "class_names": list(names),
                      "checkpoint_epoch": newest.epoch, "predictions": results}, indent=1))
  else:
    print("\n".join(line(r) for r in results))
