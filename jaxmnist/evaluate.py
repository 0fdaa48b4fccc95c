"""`jaxmnist evaluate RUN_DIR`: what a trained model gets right and wrong, as pictures and a JSON file.

Synopsis:
  jaxmnist evaluate runs/cnn-20261127-120000
  # writes confusion.png, top_losses.png, weights.png (linear only), evaluation.json into the run

It restores the run's newest checkpoint, computes eval-mode logits of the test set and of the run's
own validation split with the run's own logits program (jaxmnist.programs), and hands them to
`jaxmnist.interpret`. `jaxmnist train` writes the same report at its end from the model and logits it
holds (unless --no-evaluate), so every finished run carries its report. A run is evaluated
on the dataset it was trained on (its config says which), and the report names its classes: digits for
MNIST, "T-shirt/top" to "Ankle boot" for Fashion-MNIST.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from jaxmnist import configs, data, datasets, ensemble, errors, interpret, process, report, runs, train_state
from jaxmnist.programs import place_data

NUM_TOP_LOSSES = 15


def split_logits(trained: train_state.Trained, mnist: data.Mnist):
  """Eval-mode logits of the test set [N, C] and of the run's validation split [V, C] (None without one), and
  that split's labels; an ensemble's [K, N, C], [K, V, C] and [K, V], each member on its own split."""
  programs = trained.programs
  arrays = place_data(mnist, trained.config, programs.layout.mesh)
  test = np.asarray(programs.logits(trained.variables, arrays["test_images"], arrays["test_indices"]))
  if not arrays["valid_indices"].shape[-1]:  # a run with --valid-fraction=0 trained on every training example
    return test, None, None
  valid = np.asarray(programs.logits(trained.variables, arrays["images"], arrays["valid_indices"]))
  return test, valid, arrays["valid_labels"]


def member_report(trained: train_state.Trained, member_logits_KxNxC, ensemble_logits_NxC, labels_N,
                  member_valid) -> dict:
  """Each member's accuracies, and how often the members disagree on the test set; a sweep's best member by
  validation (and no ensemble: its members trained with other values)."""
  predictions_KxN = member_logits_KxNxC.argmax(-1)
  members = [{**label, "test_accuracy": float(np.mean(predictions_KxN[k] == labels_N)),
              "valid_accuracy": member_valid[k] if member_valid else None}
             for k, label in enumerate(configs.member_labels(trained.config))]
  # The share of test images on which not every member names the same class.
  disagreement = float(np.mean((predictions_KxN != predictions_KxN[:1]).any(0)))
  if trained.config.sweep:
    return {"members": members, "disagreement": disagreement, "best_member": report.best_member(members)}
  agreeing_N = ensemble.members_agreeing(member_logits_KxNxC, ensemble_logits_NxC)
  return {"members": members, "disagreement": disagreement,
          "members_agreeing_with_ensemble": {str(n): int(np.sum(agreeing_N == n)) for n in range(len(members) + 1)}}


def split_report(logits_NxC, labels_N, class_names=interpret.DIGITS) -> dict:
  """Accuracy, the confusion matrix and per-class precision and recall of one split."""
  confusion = interpret.confusion_matrix(labels_N, logits_NxC.argmax(-1))
  return {"accuracy": interpret.accuracy(confusion), "num_examples": int(len(labels_N)),
          "confusion": confusion.tolist(), "per_class": interpret.per_class_metrics(confusion, class_names)}


def write_report(run_dir: Path, trained: train_state.Trained, mnist: data.Mnist, test_logits, test: dict,
                 valid: dict | None, members: dict | None = None) -> dict:
  """confusion.png, top_losses.png, weights.png (linear only) and evaluation.json; returns the last's contents.
  A sweep's pictures are its best member's; an ensemble's its own, but for member 0's weights."""
  dataset = datasets.get(trained.config.dataset)
  names = dataset.class_names
  best, many = (members or {}).get("best_member"), f"{trained.num_members} x {trained.config.model}"
  what = (f"member {best} of a sweep of {many}" if best is not None else f"ensemble of {many}" if members
          else trained.config.model)
  name = f"{what} on {dataset.title}, epoch {trained.epoch}"
  interpret.save_png(run_dir / "confusion.png", interpret.confusion_figure(
      np.asarray(test["confusion"]), names, title=f"{name}: test set, accuracy {test['accuracy']:.4f}"))
  top = interpret.top_losses(test_logits, mnist.test_labels, NUM_TOP_LOSSES)
  interpret.save_png(run_dir / "top_losses.png", interpret.top_losses_figure(
      mnist.test_images[top.indices], mnist.test_labels[top.indices], top.predicted, top.probability, top.losses,
      names, title=f"{name}: the test images it gets most confidently wrong"))
  files = ["confusion.png", "top_losses.png", "evaluation.json"]
  if trained.config.model == "linear":  # chapter 4's pixel similarity: what each class's weights look for
    kernel = trained.variables["params"]["dense0"]["kernel"]
    whose = f" of member 0 (seed {trained.config.seed})" if members and best is None else ""
    interpret.save_png(run_dir / "weights.png", interpret.weight_templates_figure(
        kernel[best or 0] if members else kernel, names,
        title=f"{name}: weight templates{whose} (red: ink there raises the class)"))
    files.insert(2, "weights.png")

  evaluation = {
      "run_dir": str(run_dir), "model": trained.config.model, "checkpoint_epoch": trained.epoch,
      "dataset": dataset.name, "class_names": list(names), "data_source": mnist.source, "test": test,
      "validation": valid, **(members or {}),
      "top_losses": [{"test_index": int(i), "label": int(mnist.test_labels[i]), "predicted": int(p),
                      "label_name": names[int(mnist.test_labels[i])], "predicted_name": names[int(p)],
                      "probability": float(q), "loss": float(l)}
                     for i, p, q, l in zip(top.indices, top.predicted, top.probability, top.losses)], "files": files}
  report.write_json(run_dir / "evaluation.json", evaluation)
  return evaluation


def write_evaluation(trained: train_state.Trained, mnist: data.Mnist, test_logits, valid_logits, valid_labels,
                     say=print) -> dict:
  """Writes the report of `trained` from its logits (`split_logits`'s) into its run; returns evaluation.json's
  contents. `jaxmnist train` hands in the model and logits it holds; `jaxmnist evaluate` restores them."""
  run_dir, dataset = trained.run_dir, datasets.get(trained.config.dataset)
  names = dataset.class_names
  valid, members = None, None
  if trained.num_members:  # an ensemble's report is its own, a sweep's (never combined) its best member's
    member_logits = test_logits
    test_logits = None if trained.config.sweep else np.asarray(ensemble.combine(member_logits))
    member_valid = None if valid_logits is None else [  # each member on its own split
        float(np.mean(logits.argmax(-1) == labels)) for logits, labels in zip(valid_logits, valid_labels)]
    members = member_report(trained, member_logits, test_logits, mnist.test_labels, member_valid)
    if "best_member" in members:
      best = members["best_member"]
      test_logits, valid = member_logits[best], split_report(valid_logits[best], valid_labels[best], names)
  elif valid_logits is not None:
    valid = split_report(valid_logits, valid_labels, names)
  test = split_report(test_logits, mnist.test_labels, names)

  try:
    evaluation = write_report(run_dir, trained, mnist, test_logits, test, valid, members)
  except OSError as e:  # a full disk, a read-only folder, a quota: the run itself is complete
    raise errors.WriteFailed(
        f"Could not write the evaluation report of {run_dir}: {errors.why_not_written(e)}. The run itself is kept "
        f"(its checkpoints, metrics.csv and summary.json); each of the report's files is the new one or the one "
        f"before, never half-written. Make room (or make the folder writable), then write the report with "
        f"`jaxmnist evaluate {run_dir}`.") from e
  if members and "best_member" in members:
    say(f"evaluation of a sweep of {trained.num_members} x {trained.config.model} on {dataset.title} "
        f"({trained.checkpoint_line}):")
    say("\n".join(report.sweep_table({**members, "config": configs.config_to_dict(trained.config),
                                      "epochs_completed": trained.epoch}, with_test=True)))
  elif members:
    say(f"evaluation of an ensemble of {trained.num_members} x {trained.config.model} on {dataset.title} "
        f"({trained.checkpoint_line}):")
    for m in members["members"]:
      say(f"  member {m['member']} (seed {m['seed']}): test accuracy {m['test_accuracy']:.4f}, validation "
          f"accuracy {report.format_accuracy(m['valid_accuracy'])} (on its own split)")
    say(f"  ensemble: test accuracy {test['accuracy']:.4f}; the members disagree on "
        f"{members['disagreement']:.2%} of the test images")
  else:
    say(f"evaluation of {trained.config.model} on {dataset.title} ({trained.checkpoint_line}):")
    say(f"  test accuracy {test['accuracy']:.4f}, validation accuracy "
        f"{report.format_accuracy(valid and valid['accuracy'])}")
  say(interpret.metrics_table_markdown(test["per_class"], test["accuracy"]))
  return evaluation


def evaluate_run(run_dir, mnist: data.Mnist, say=print) -> dict:
  """Restores the run in `run_dir` (trained on `mnist`) and writes its report; returns evaluation.json's contents."""
  trained = train_state.load_trained(Path(run_dir))
  data.check_dataset(trained.config.dataset, mnist)
  data.check_same_data(trained.data, data.describe(mnist), trained.run_dir)
  return write_evaluation(trained, mnist, *split_logits(trained, mnist), say=say)


def main(args: argparse.Namespace) -> None:
  started = time.perf_counter()
  config = runs.read_config(args.run_dir)  # a wrong directory fails before any data is loaded
  runs.check_dataset_flag(args.run_dir, config, args.dataset)
  cache_dir = process.open_caches(args.cache_dir)
  mnist = data.load_with_log(config.dataset, args.source, args.data_dir, cache_dir, not args.unverified)
  evaluation = evaluate_run(args.run_dir, mnist)
  summary = runs.read_summary(args.run_dir) or {}
  if "test_accuracy" in summary:
    same = "the same as" if summary["test_accuracy"] == evaluation["test"]["accuracy"] else "NOT the same as"
    print(f"  ({same} summary.json's test accuracy, {summary['test_accuracy']:.4f})")
  print(f"files: {args.run_dir}/{{{', '.join(evaluation['files'])}}} ({time.perf_counter() - started:.1f} s)")
