"""`jaxmnist evaluate RUN_DIR`: what a trained model gets right and wrong, as pictures and a JSON file.

Synopsis:
  jaxmnist evaluate runs/cnn-20261127-120000
  # writes confusion.png, top_losses.png, weights.png (linear only), evaluation.json into the run

It restores the run's newest checkpoint, computes eval-mode logits of the test set and of the run's
own validation split in one jitted scan each, and hands them to `jaxmnist.interpret`. `jaxmnist train`
runs it at the end (unless --no-evaluate), so every finished run carries its report. A run is evaluated
on the dataset it was trained on (its config says which), and the report names its classes: digits for
MNIST, "T-shirt/top" to "Ankle boot" for Fashion-MNIST.
"""

import argparse
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist import data, datasets, errors, interpret, process, report, runs, steps, train_state

NUM_TOP_LOSSES = 15


def split_logits(trained: train_state.Trained, images_NxHxWxC, indices_M) -> np.ndarray:
  logits_fn = jax.jit(partial(steps.eval_logits, batch_size=trained.config.eval_batch_size,
                              apply_fn=trained.model.apply))
  return np.asarray(logits_fn(trained.variables, jnp.asarray(images_NxHxWxC), jnp.asarray(indices_M)))


def split_report(logits_NxC, labels_N, class_names=interpret.DIGITS) -> dict:
  """Accuracy, the confusion matrix and per-class precision and recall of one split."""
  confusion = interpret.confusion_matrix(labels_N, logits_NxC.argmax(-1))
  return {"accuracy": interpret.accuracy(confusion), "num_examples": int(len(labels_N)),
          "confusion": confusion.tolist(), "per_class": interpret.per_class_metrics(confusion, class_names)}


def write_report(run_dir: Path, trained: train_state.Trained, mnist: data.Mnist, test_logits, test: dict,
                 valid: dict | None) -> dict:
  """confusion.png, top_losses.png, weights.png (linear only) and evaluation.json; returns the last's contents."""
  dataset = datasets.get(trained.config.dataset)
  names = dataset.class_names
  name = f"{trained.config.model} on {dataset.title}, epoch {trained.epoch}"
  interpret.plot_confusion(run_dir / "confusion.png", np.asarray(test["confusion"]), names,
                           title=f"{name}: test set, accuracy {test['accuracy']:.4f}")
  top = interpret.top_losses(test_logits, mnist.test_labels, NUM_TOP_LOSSES)
  interpret.plot_top_losses(run_dir / "top_losses.png", mnist.test_images[top.indices],
                            mnist.test_labels[top.indices], top.predicted, top.probability, top.losses, names,
                            title=f"{name}: the test images it gets most confidently wrong")
  files = ["confusion.png", "top_losses.png", "evaluation.json"]
  if trained.config.model == "linear":  # chapter 4's pixel similarity: what each class's weights look for
    interpret.plot_weight_templates(run_dir / "weights.png", trained.variables["params"]["dense0"]["kernel"], names,
                                    title=f"{name}: weight templates (red: ink there raises the class)")
    files.insert(2, "weights.png")

  evaluation = {
      "run_dir": str(run_dir), "model": trained.config.model, "checkpoint_epoch": trained.epoch,
      "dataset": dataset.name, "class_names": list(names), "data_source": mnist.source, "test": test,
      "validation": valid,
      "top_losses": [{"test_index": int(i), "label": int(mnist.test_labels[i]), "predicted": int(p),
                      "label_name": names[int(mnist.test_labels[i])], "predicted_name": names[int(p)],
                      "probability": float(q), "loss": float(l)}
                     for i, p, q, l in zip(top.indices, top.predicted, top.probability, top.losses)],
      "files": files,
  }
  report.write_json(run_dir / "evaluation.json", evaluation)
  return evaluation


def evaluate_run(run_dir, mnist: data.Mnist, say=print) -> dict:
  """Writes the report of `run_dir` (trained on `mnist`) into it; returns what evaluation.json holds."""
  run_dir = Path(run_dir)
  trained = train_state.load_trained(run_dir)
  data.check_dataset(trained.config.dataset, mnist)
  data.check_same_data(trained.data, data.describe(mnist), run_dir)
  dataset = datasets.get(trained.config.dataset)
  names = dataset.class_names
  _, valid_indices = data.split_train_valid(len(mnist.train_labels), trained.config.valid_fraction,
                                            trained.config.seed)
  test_logits = split_logits(trained, mnist.test_images, np.arange(len(mnist.test_labels), dtype=np.int32))
  test = split_report(test_logits, mnist.test_labels, names)
  valid = None  # a run with --valid-fraction=0 trained on every training example
  if len(valid_indices):
    valid = split_report(split_logits(trained, mnist.train_images, valid_indices),
                         mnist.train_labels[valid_indices], names)

  try:
    evaluation = write_report(run_dir, trained, mnist, test_logits, test, valid)
  except OSError as e:  # a full disk, a read-only folder, a quota: the run itself is complete
    raise errors.WriteFailed(
        f"Could not write the evaluation report of {run_dir}: {errors.why_not_written(e)}. The run itself is kept "
        f"(its checkpoints, metrics.csv and summary.json); each of the report's files is the new one or the one "
        f"before, never half-written. Make room (or make the folder writable), then write the report with "
        f"`jaxmnist evaluate {run_dir}`.") from e
  say(f"evaluation of {trained.config.model} on {dataset.title} ({trained.checkpoint_line}):")
  say(f"  test accuracy {test['accuracy']:.4f}, validation accuracy "
      f"{report.format_accuracy(valid and valid['accuracy'])}")
  say(interpret.metrics_table_markdown(test["per_class"], test["accuracy"]))
  return evaluation


def main(args: argparse.Namespace) -> None:
  started = time.perf_counter()
  config = runs.read_config(args.run_dir)  # a wrong directory fails before any data is loaded
  runs.check_dataset_flag(args.run_dir, config, args.dataset)
  cache_dir = data.cache_dir_from_flag(args.cache_dir)
  process.enable_compilation_cache(cache_dir, process.xla_cache_limit_bytes())
  mnist = data.load_with_log(config.dataset, args.source, args.data_dir, cache_dir, not args.unverified)
  evaluation = evaluate_run(args.run_dir, mnist)
  summary = runs.read_summary(args.run_dir) or {}
  if "test_accuracy" in summary:
    same = "the same as" if summary["test_accuracy"] == evaluation["test"]["accuracy"] else "NOT the same as"
    print(f"  ({same} summary.json's test accuracy, {summary['test_accuracy']:.4f})")
  print(f"files: {args.run_dir}/{{{', '.join(evaluation['files'])}}} ({time.perf_counter() - started:.1f} s)")
