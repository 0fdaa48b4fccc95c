"""Trains one of the post's models on MNIST (or Fashion-MNIST) and reports validation and test accuracy.

Synopsis:
  python -m jaxmnist.train --model=mlp3                 # the post's setup: SGD, lr 0.01, 400 epochs
  python -m jaxmnist.train --model=linear --epochs=5 --workdir=runs/linear
  python -m jaxmnist.train --model=cnn --dataset=fashion_mnist
  summary = train.train_and_evaluate(config, "runs/mlp3", data.load_mnist())   # the same, from Python

`train_and_evaluate` checks its arguments, then runs three phases: `set_up` (the data on the devices,
the state built or restored, the compiled epoch), `run_epochs` (metrics, checkpoints, Ctrl-C) and
`finish` (the test set, summary.json, accuracy.png). `run` is the `jaxmnist train` command around them.
"""

import contextlib
import datetime
import math
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxmnist import (checkpoint, configs, data, datasets, ensemble, errors, evaluate, flags, models, parallel, process,
                      report, runs, steps, train_state)
from jaxmnist.configs import Config
from jaxmnist.errors import Interrupted, TrainingDiverged
from jaxmnist.loops import make_epoch_fn
from jaxmnist.optimizer import make_optimizer, steps_per_epoch


def _epoch_row(epoch: int, sums: dict, valid_correct, num_valid: int, seconds: float, seeds=()) -> dict:
  """metrics.csv's row of an epoch. An ensemble's row holds the members' means, and each member's own
  metrics under "members"."""
  if seeds:
    members = [{"member": k, "seed": seed, **_epoch_row(epoch, ensemble.member(sums, k),
                                                        valid_correct[k] if num_valid else None, num_valid, seconds)}
               for k, seed in enumerate(seeds)]
    def mean(name):
      return None if num_valid == 0 and name == "valid_accuracy" else float(np.mean([m[name] for m in members]))
    return {"epoch": epoch, **{name: mean(name) for name in ("train_loss", "train_accuracy", "valid_accuracy")},
            "seconds": round(seconds, 4),
            "members": [{name: m[name] for name in report.MEMBER_FIELDS} for m in members]}
  return {
      "epoch": epoch,
      "train_loss": float(sums["loss_sum"]) / float(sums["count"]),
      "train_accuracy": float(sums["correct"]) / float(sums["count"]),
      "valid_accuracy": int(valid_correct) / num_valid if num_valid else None,  # None: --valid-fraction=0
      "seconds": round(seconds, 4),
  }


def _divergence_message(config: Config, row: dict, workdir: Path) -> str:
  diverged = [m["seed"] for m in row.get("members", ()) if not math.isfinite(m["train_loss"])]
  whose = f" (the members of seed {', '.join(map(str, diverged))})" if diverged else ""
  return (f"Training diverged: the mean training loss became {row['train_loss']}{whose} in epoch "
          f"{row['epoch']} of {config.model} with learning rate {config.learning_rate}. The step "
          f"size is too large for this model; try a smaller one, e.g. --lr={config.learning_rate / 10:g}. "
          f"The metrics of the finished epochs are in {workdir / 'metrics.csv'}.")


@contextlib.contextmanager
def stop_after_epoch_on_ctrl_c(say):
  """The first Ctrl-C (SIGINT) asks the loop to stop after the running epoch and save; a second stops at once.

  Yields a dict whose "requested" turns True. (Signals can only be handled in the main thread;
  elsewhere Ctrl-C keeps its default behaviour.)
  """
  flag = {"requested": False}
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handler(signum, frame):
    del signum, frame
    if flag["requested"]:
      raise KeyboardInterrupt
    flag["requested"] = True
    say("\nCtrl-C: stopping after this epoch to save a checkpoint (Ctrl-C again stops at once).")

  previous = signal.signal(signal.SIGINT, handler)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGINT, previous)


def _interrupted_message(epoch: int, config: Config, workdir: Path, saved: bool) -> str:
  if not saved:
    return (f"Interrupted after epoch {epoch} of {config.epochs}; checkpoints were off (--checkpoint-every=0), "
            f"so the run cannot be resumed. {workdir / 'metrics.csv'} holds the finished epochs.")
  return (f"Interrupted after epoch {epoch} of {config.epochs}; its checkpoint is saved in "
          f"{workdir / checkpoint.CHECKPOINT_DIR}. Continue the run with `jaxmnist train --resume {workdir}`.")


def _checkpoint_due(config: Config, epoch: int, stop_requested: bool) -> bool:
  return epoch % config.checkpoint_every == 0 or epoch == config.epochs or stop_requested


def _write_failed_message(config: Config, workdir: Path, error: BaseException) -> str:
  lines = report.read_metrics_csv(workdir / "metrics.csv") if (workdir / "metrics.csv").is_file() else []
  finished = len({line["epoch"] for line in lines})  # an ensemble's has a line per member
  saved = checkpoint.saved_epochs(workdir / checkpoint.CHECKPOINT_DIR)
  said = (f"Could not write the run's files in {workdir}: {errors.why_not_written(error)}. Kept: "
          + (f"metrics.csv with the {finished} finished epoch(s)" if finished else "no finished epoch"))
  if not saved:
    return (said + ", and no complete checkpoint, so the run cannot resume. Make room (or make the folder "
            "writable), then train again in a new --workdir.")
  return (said + f", and the complete checkpoint(s) of epoch {', '.join(map(str, saved))}. Make room (or make the "
          f"folder writable), then continue with `jaxmnist train --resume {workdir}`.")


class Training(NamedTuple):
  """What `set_up` builds for the epochs: the data on the devices, the compiled programs, where to start."""

  arrays: dict  # parallel.place_data's: the images, labels and the split's indices, on the devices
  train_epoch: Callable  # (state, images, labels, train_indices, epoch) -> (state, sums)
  # (eval variables, images, labels, indices) -> the number classified correctly ([M] for an ensemble's
  # stacked variables and indices)
  count_correct: Callable
  count_test: Callable  # (eval variables) -> the test set's correct count; for an ensemble (members [M], ensemble)
  data_info: dict  # data.describe(mnist): what checkpoints record, so a resume uses the same data
  state: steps.TrainState  # new, or the checkpoint's to resume from
  rows: list  # the metrics of the epochs already finished (a resumed run's)


def set_up(config: Config, workdir: Path, mnist: data.Mnist, mesh: Mesh, resume: bool, say) -> Training:
  """Checks the data against the config, writes config.json, places the data, builds or restores the state."""
  configs.check_batch_fits(config, len(mnist.train_labels))
  data.check_dataset(config.dataset, mnist)
  say(f"parallelism: {parallel.layout_line(config, mesh)}")
  if parallel.is_main_process() and not resume:
    report.write_json(workdir / "config.json", configs.config_to_dict(config))
  arrays = parallel.place_data(mnist, config, mesh)
  model = models.build_model(config.model, config.init)
  num_train = arrays["train_indices"].shape[-1]  # an ensemble's are [members, examples]
  optimizer = make_optimizer(config, steps_per_epoch(config, num_train))
  image_shape = mnist.train_images.shape[1:]
  data_info = data.describe(mnist)
  rows = []
  if resume:
    restored = train_state.restore_train_state(config, model, optimizer, mesh, workdir, image_shape)
    data.check_same_data(restored.data, data_info, workdir)
    # Fresh buffers for the epoch function to donate: under jax 0.5 (orbax-checkpoint 0.11, tensorstore 0.1.86)
    # restored arrays can share memory that XLA does not own, and donating them corrupted the heap.
    state, rows = jax.tree.map(lambda x: x.copy(), restored.state), list(restored.rows)
    say(f"resuming from the {checkpoint.describe(restored)} of {config.epochs}")
  else:
    state = train_state.init_train_state(config, model, optimizer, mesh, image_shape)
  count_correct, count_test = _evaluation_fns(config, model, mesh, arrays)
  return Training(arrays=arrays, train_epoch=make_epoch_fn(config, model.apply, optimizer, mesh),
                  count_correct=count_correct, count_test=count_test, data_info=data_info, state=state, rows=rows)


def _evaluation_fns(config: Config, model, mesh: Mesh, arrays: dict):
  """The compiled validation count, and the test count (an ensemble's: each member's and the ensemble's)."""
  split_batches = mesh.size > 1 and not parallel.spreads_members(config, mesh)
  # Evaluation batches are rounded up to split evenly over the devices; accuracy does not change. Vmapped
  # members evaluate that many examples between them, so they need one model's memory.
  at_once = parallel.members_at_once(config, mesh)
  per_step = ensemble.eval_batch_size(config.eval_batch_size, len(config.seeds), at_once)
  eval_batch_size = -(-per_step // mesh.size) * mesh.size
  count = partial(steps.count_correct, batch_size=eval_batch_size, apply_fn=model.apply,
                  sharding=parallel.batch_sharding(mesh) if split_batches else None)
  count_correct = jax.jit(ensemble.over_members(count, (0, None, None, 0), at_once) if config.seeds else count)
  images, labels, indices = arrays["test_images"], jnp.asarray(arrays["test_labels"]), arrays["test_indices"]
  if mesh.size == 1:
    # The evaluation report's own program, called as it calls it (jaxmnist.evaluate.split_logits, from host
    # arrays): the report that follows in this process finds it compiled.
    program = evaluate.logits_program(model, config.eval_batch_size, len(config.seeds), at_once, False)
    host_images, host_indices, host_labels = jax.device_get((images, indices, labels))
    test_logits = lambda variables: program(variables, jnp.asarray(host_images), jnp.asarray(host_indices))
    if config.seeds:
      counts = jax.jit(ensemble.test_counts)
      return count_correct, lambda variables: counts(test_logits(variables), labels)
    return count_correct, lambda variables: int(np.sum(np.asarray(test_logits(variables)).argmax(-1) == host_labels))
  if not config.seeds:
    return count_correct, lambda variables: count_correct(variables, images, labels, indices)
  logits_of = ensemble.over_members(partial(steps.eval_logits, batch_size=eval_batch_size, apply_fn=model.apply),
                                    (0, None, None), at_once)
  count_test = jax.jit(lambda variables, images, labels, indices: ensemble.test_counts(
      logits_of(variables, images, indices), labels[indices]))
  return count_correct, lambda variables: count_test(variables, images, labels, indices)


def run_epochs(config: Config, workdir: Path, training: Training, mnist: data.Mnist, progress: bool, say):
  """The epochs from the first unfinished one to the last; returns the state, every epoch's metrics and
  the seconds they took. Saves checkpoints as due, stops after an epoch on Ctrl-C."""
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top  (slow import, kept off --help's path)

  writes = parallel.is_main_process()
  arrays, state, rows = training.arrays, training.state, list(training.rows)
  num_valid, first_epoch = arrays["valid_indices"].shape[-1], len(rows) + 1  # [M, V] for an ensemble
  bar = tqdm(range(first_epoch, config.epochs + 1), desc=config.model, unit="epoch", initial=first_epoch - 1,
             total=config.epochs, disable=not (progress and writes), file=sys.stderr, dynamic_ncols=True)
  saves = writes and config.checkpoint_every > 0  # 0: never (benchmarks); then nothing can resume or evaluate
  saver = checkpoint.Saver(workdir / checkpoint.CHECKPOINT_DIR, config.keep_checkpoints) if saves else None
  started = time.perf_counter()
  try:
    with stop_after_epoch_on_ctrl_c(say) as stop:
      for epoch in bar:
        epoch_start = time.perf_counter()
        state, sums = training.train_epoch(state, arrays["images"], arrays["labels"], arrays["train_indices"], epoch)
        valid_correct = training.count_correct(steps.eval_variables(state), arrays["images"], arrays["labels"],
                                               arrays["valid_indices"]) if num_valid else None
        sums, valid_correct = jax.device_get((sums, valid_correct))  # the one host sync per epoch
        rows.append(_epoch_row(epoch, sums, valid_correct, num_valid, time.perf_counter() - epoch_start,
                               config.seeds))
        if writes:
          report.write_metrics_csv(workdir / "metrics.csv", rows)
        if not math.isfinite(rows[-1]["train_loss"]):  # no checkpoint of a diverged state: the earlier ones stay
          if writes:
            report.write_json(workdir / "summary.json", {
                "status": "diverged", "config": configs.config_to_dict(config), "epochs_completed": epoch,
                "dataset": config.dataset, "data_source": mnist.source})
          raise TrainingDiverged(_divergence_message(config, rows[-1], workdir))
        if saver and _checkpoint_due(config, epoch, stop["requested"]):
          saver.save(epoch, state, rows, training.data_info)
        bar.set_postfix(loss=f"{rows[-1]['train_loss']:.4f}",
                        val_acc=report.format_accuracy(rows[-1]["valid_accuracy"]))
        if stop["requested"] and epoch < config.epochs:
          raise Interrupted(_interrupted_message(epoch, config, workdir, saved=saver is not None))
  finally:
    bar.close()
    if saver:
      saver.close()  # waits for the last write: a checkpoint that was started is finished
  return state, rows, time.perf_counter() - started


def _ensemble_summary(config: Config, rows: list, test_correct, num_test: int) -> dict:
  """An ensemble's accuracies: each member's, their mean and sample std, and the ensemble's test accuracy.

  The ensemble has no validation accuracy of its own: each member holds out its own split, on which the
  others trained. Its "test_accuracy" is the ensemble's (the model that evaluate, predict and serve use);
  its "valid_accuracy" is the members' mean.
  """
  member_test, ensemble_test = jax.device_get(test_correct)
  members = [{**m, "test_accuracy": int(correct) / num_test} for m, correct in zip(rows[-1]["members"], member_test)]
  def spread(values):
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
  valid = [m["valid_accuracy"] for m in members if m["valid_accuracy"] is not None]
  return {"members": members, "member_test_accuracy": spread([m["test_accuracy"] for m in members]),
          "member_valid_accuracy": spread(valid) if valid else None,
          "ensemble_test_accuracy": int(ensemble_test) / num_test, "test_accuracy": int(ensemble_test) / num_test}


def finish(config: Config, workdir: Path, mnist: data.Mnist, training: Training, state, rows: list,
           train_seconds: float, mesh: Mesh) -> dict:
  """Counts the test set right and writes summary.json and accuracy.png; returns the summary."""
  first_epoch = len(training.rows) + 1
  test_correct = training.count_test(steps.eval_variables(state))
  num_test = len(mnist.test_labels)
  summary = {
      "status": "finished",
      "config": configs.config_to_dict(config),
      "epochs_completed": config.epochs,
      "valid_accuracy": rows[-1]["valid_accuracy"],
      **(_ensemble_summary(config, rows, test_correct, num_test) if config.seeds
         else {"test_accuracy": int(test_correct) / num_test}),
      "train_seconds": round(train_seconds, 3),
      # The first epoch of this process includes compilation.
      "first_epoch_seconds": rows[first_epoch - 1]["seconds"] if first_epoch <= len(rows) else None,
      "resumed_from_epoch": first_epoch - 1 if training.rows else None,
      "steady_epoch_seconds": round(float(np.median([r["seconds"] for r in rows[first_epoch:]]
                                                     or [rows[-1]["seconds"]])), 4),
      "dataset": config.dataset,
      "data_source": mnist.source,
      "data_verified": mnist.verified,
      "data_sha256": training.data_info["sha256"],
      "device": str(jax.devices()[0].device_kind),
      "platform": jax.default_backend(),
      "num_devices": int(mesh.size),
      "parallelism": parallel.layout_line(config, mesh),
      "num_processes": jax.process_count(),
      "jax_version": jax.__version__,
      "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
  }
  if parallel.is_main_process():
    report.write_json(workdir / "summary.json", summary)
    what = f"{len(config.seeds)} x {config.model}" if config.seeds else config.model
    report.plot_accuracy(workdir / "accuracy.png", rows, f"jaxmnist {what} on "
                         f"{datasets.get(config.dataset).title}", configs.post_result(config))
  return summary


def train_checked(config: Config, workdir: Path, mnist: data.Mnist, mesh: Mesh, progress: bool = True,
                  resume: bool = False) -> dict:
  """The three phases, for settings already checked (`train_and_evaluate` and `run` check them once)."""
  say = print if parallel.is_main_process() else (lambda *_: None)
  try:
    training = set_up(config, workdir, mnist, mesh, resume, say)
    state, rows, seconds = run_epochs(config, workdir, training, mnist, progress, say)
    return finish(config, workdir, mnist, training, state, rows, seconds, mesh)
  except (OSError, checkpoint.SaveFailed) as e:  # a full disk, a read-only folder, a quota
    raise errors.WriteFailed(_write_failed_message(config, workdir, e)) from e


def train_and_evaluate(config: Config, workdir, mnist: data.Mnist, progress: bool = True,
                       mesh: Mesh | None = None, resume: bool = False) -> dict:
  """Trains `config` on `mnist` over the devices of `mesh` (default: all), writing into `workdir`.

  With `resume`, continues the run in `workdir` from its newest intact checkpoint; the result is
  bit-identical to a run that was never interrupted (every key derives from the seed and the epoch).

  Returns:
    The summary that is also written to workdir/summary.json (by process 0 only).
  Raises:
    UserError: for invalid settings, an unusable workdir, or nothing to resume.
    TrainingDiverged: when the loss turns NaN or inf (the metrics so far are kept).
    Interrupted: after Ctrl-C, once the running epoch's checkpoint is saved.
    WriteFailed: when the run's files cannot be written (what was kept is said).
  """
  workdir, mesh = Path(workdir), mesh or parallel.make_mesh()
  configs.validate_config(config)
  if not parallel.spreads_members(config, mesh):
    parallel.check_divisible(config.batch_size, mesh)
  if parallel.is_main_process() and not resume:
    runs.prepare_workdir(workdir)
  return train_checked(config, workdir, mnist, mesh, progress, resume)


def run(args) -> dict:
  """`jaxmnist train` and `python -m jaxmnist.train`: train (or resume), then write the evaluation report."""
  config = flags.config_from_args(args)
  resume = args.resume is not None
  if resume:
    train_state.check_resumable(args.resume)
  configs.validate_config(config)  # before any data is fetched; the batch is checked against the data later
  xla_cache_limit = process.xla_cache_limit_bytes()
  process.maybe_initialize_distributed(args.distributed)
  mesh = parallel.make_mesh(args.num_devices)
  if not parallel.spreads_members(config, mesh):
    parallel.check_divisible(config.batch_size, mesh)
  writes = parallel.is_main_process()
  say = print if writes else (lambda *_: None)
  workdir = Path(args.resume) if resume else Path(args.workdir or runs.default_workdir(config))
  if writes and not resume:
    runs.prepare_workdir(workdir)
  cache_dir = data.cache_dir_from_flag(args.cache_dir)
  process.enable_compilation_cache(cache_dir, xla_cache_limit)
  mnist = data.load_with_log(config.dataset, args.source, args.data_dir, cache_dir, not args.unverified, say)
  say(f"devices: {mesh.size} x {jax.devices()[0].device_kind} ({jax.default_backend()}, "
      f"{jax.process_count()} process(es)); run directory: {workdir}")
  summary = train_checked(config, workdir, mnist, mesh, progress=not args.no_progress, resume=resume)
  say("\n".join(report.comparison_lines(summary, configs.post_result(config))))
  files = ["config.json", "metrics.csv", "accuracy.png", "summary.json"]
  files += [f"{checkpoint.CHECKPOINT_DIR}/"] if config.checkpoint_every > 0 else []
  if writes and not args.no_evaluate and config.checkpoint_every > 0:
    files += evaluate.evaluate_run(workdir, mnist, say=say)["files"]
  say(f"files: {workdir}/{{{', '.join(files)}}}")
  return summary


def main(argv=None, prog: str = "python -m jaxmnist.train") -> None:
  errors.exit_with_message(lambda: run(flags.parse_train_args(argv, prog)))


if __name__ == "__main__":
  main()
