"""Trains one of the post's models on MNIST (or Fashion-MNIST) and reports validation and test accuracy.

Synopsis:
  python -m jaxmnist.train --model=mlp3                 # the post's setup: SGD, lr 0.01, 400 epochs
  python -m jaxmnist.train --model=linear --epochs=5 --workdir=runs/linear
  python -m jaxmnist.train --model=cnn --dataset=fashion_mnist
  summary = train.train_and_evaluate(config, "runs/mlp3", data.load_mnist())   # the same, from Python

`train_and_evaluate` checks its arguments (`check_and_prepare`), then runs three phases: `set_up` (the
compiled programs, jaxmnist.programs; the data on the devices; the state built or restored), `run_epochs`
(metrics, checkpoints, Ctrl-C) and `finish` (the test set, summary.json, accuracy.png, and for `jaxmnist
train` the evaluation report of the model in memory). `run` is the `jaxmnist train` command around them.
"""

import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from jaxmnist import (checkpoint, configs, data, datasets, errors, evaluate, flags, models, parallel, process, report,
                      runs, steps, train_state)
from jaxmnist.configs import Config
from jaxmnist.errors import Interrupted, TrainingDiverged
from jaxmnist.optimizer import make_optimizer, steps_per_epoch
from jaxmnist.programs import Layout, Programs, correct_counts, ensemble_correct, place_data


def _divergence_message(config: Config, row: dict, workdir: Path) -> str:
  diverged = [str(m["member"]) for m in row.get("members", ()) if not math.isfinite(m["train_loss"])]
  whose = f" (member {', '.join(diverged)}: metrics.csv names their values)" if diverged else ""
  return (f"Training diverged: the mean training loss became {row['train_loss']}{whose} in epoch "
          f"{row['epoch']} of {config.model} with learning rate {config.learning_rate}. The step "
          f"size is too large for this model; try a smaller one, e.g. --lr={config.learning_rate / 10:g}. "
          f"The metrics of the finished epochs are in {workdir / 'metrics.csv'}.")


def _interrupted_message(epoch: int, config: Config, workdir: Path, saved: bool) -> str:
  if not saved:
    return (f"Interrupted after epoch {epoch} of {config.epochs}; checkpoints were off (--checkpoint-every=0), "
            f"so the run cannot be resumed. {workdir / 'metrics.csv'} holds the finished epochs.")
  return (f"Interrupted after epoch {epoch} of {config.epochs}; its checkpoint is saved in "
          f"{workdir / checkpoint.CHECKPOINT_DIR}. Continue the run with `jaxmnist train --resume {workdir}`.")


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
  """What `set_up` builds for the epochs: the compiled programs, the data on the devices, where to start."""

  programs: Programs
  arrays: dict  # programs.place_data's: the images, labels and the splits' indices, on the devices
  data_info: dict  # data.describe(mnist): what checkpoints record, so a resume uses the same data
  state: steps.TrainState  # new, or the checkpoint's to resume from
  rows: list  # the metrics of the epochs already finished (a resumed run's)


def say(*lines) -> None:
  """Prints on process 0 only: one log for a job of several processes."""
  if parallel.is_main_process():
    print(*lines)


def set_up(config: Config, workdir: Path, mnist: data.Mnist, mesh: Mesh, resume: bool) -> Training:
  """Checks the data against the config, writes config.json, places the data, builds or restores the state."""
  configs.check_batch_fits(config, len(mnist.train_labels))
  data.check_dataset(config.dataset, mnist)
  arrays = place_data(mnist, config, mesh)
  optimizer = make_optimizer(config, steps_per_epoch(config, arrays["train_indices"].shape[-1]))  # [K, T] for K members
  programs = Programs(config, models.build_model(config.model, config.init), optimizer, mesh)
  say(f"parallelism: {programs.layout.describe()}")
  if parallel.is_main_process() and not resume:
    report.write_json(workdir / "config.json", configs.config_to_dict(config))
  data_info = data.describe(mnist)
  if not resume:
    return Training(programs, arrays, data_info, programs.init(), [])
  restored = train_state.restore_train_state(programs, workdir)
  data.check_same_data(restored.data, data_info, workdir)
  say(f"resuming from the {checkpoint.describe(restored)} of {config.epochs}")
  # Fresh buffers for the epoch to donate: under jax 0.5 (orbax-checkpoint 0.11, tensorstore 0.1.86) restored
  # arrays can share memory that XLA does not own, and donating them corrupted the heap.
  state = jax.tree.map(lambda x: x.copy(), restored.state)
  return Training(programs, arrays, data_info, state, list(restored.rows))


def run_epochs(config: Config, workdir: Path, training: Training, mnist: data.Mnist, progress: bool):
  """The epochs from the first unfinished one to the last; returns the state, every epoch's metrics, the
  seconds they took and the last epoch's validation logits. Saves checkpoints as due, stops after an
  epoch on Ctrl-C."""
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top  (slow import, kept off --help's path)

  writes = parallel.is_main_process()
  programs, arrays, state, rows = training.programs, training.arrays, training.state, list(training.rows)
  num_valid, first_epoch = arrays["valid_indices"].shape[-1], len(rows) + 1  # [K, V] for an ensemble
  valid_logits = None
  bar = tqdm(range(first_epoch, config.epochs + 1), desc=config.model, unit="epoch", initial=first_epoch - 1,
             total=config.epochs, disable=not (progress and writes), file=sys.stderr, dynamic_ncols=True)
  saves = writes and config.checkpoint_every > 0  # 0: never (benchmarks); then nothing can resume or evaluate
  saver = checkpoint.Saver(workdir / checkpoint.CHECKPOINT_DIR, config.keep_checkpoints) if saves else None
  started = time.perf_counter()
  try:
    with process.stop_after_epoch_on_ctrl_c(say) as stop:
      for epoch in bar:
        epoch_start = time.perf_counter()
        state, sums = programs.train_epoch(state, arrays["images"], arrays["labels"], arrays["train_indices"], epoch)
        if num_valid:
          valid_logits = programs.logits(steps.eval_variables(state), arrays["images"], arrays["valid_indices"])
        sums, valid_logits = jax.device_get((sums, valid_logits))  # the one host sync per epoch
        valid_correct = correct_counts(valid_logits, arrays["valid_labels"]) if num_valid else None
        rows.append(report.epoch_row(epoch, sums, valid_correct, num_valid, time.perf_counter() - epoch_start,
                                     configs.member_labels(config) if programs.layout.num_members else ()))
        if writes:
          report.write_metrics_csv(workdir / "metrics.csv", rows)
        if not math.isfinite(rows[-1]["train_loss"]):  # no checkpoint of a diverged state: the earlier ones stay
          if writes:
            report.write_json(workdir / "summary.json", {
                "status": "diverged", "config": configs.config_to_dict(config), "epochs_completed": epoch,
                "dataset": config.dataset, "data_source": mnist.source})
          raise TrainingDiverged(_divergence_message(config, rows[-1], workdir))
        if saver and (epoch % config.checkpoint_every == 0 or epoch == config.epochs or stop["requested"]):
          saver.save(epoch, state, rows, training.data_info)
        bar.set_postfix(loss=f"{rows[-1]['train_loss']:.4f}",
                        val_acc=report.format_accuracy(rows[-1]["valid_accuracy"]))
        if stop["requested"] and epoch < config.epochs:
          raise Interrupted(_interrupted_message(epoch, config, workdir, saved=saver is not None))
  finally:
    bar.close()
    if saver:
      saver.close()  # waits for the last write: a checkpoint that was started is finished
  return state, rows, time.perf_counter() - started, valid_logits


def finish(config: Config, workdir: Path, mnist: data.Mnist, training: Training, epochs,
           with_report: bool) -> tuple[dict, dict | None]:
  """Counts the test set right, writes summary.json and accuracy.png, and with `with_report` the evaluation
  report of the model in memory (jaxmnist.evaluate); returns the summary and the report."""
  state, rows, train_seconds, valid_logits = epochs
  programs, arrays = training.programs, training.arrays
  variables = steps.eval_variables(state)
  test_logits = np.asarray(programs.logits(variables, arrays["test_images"], arrays["test_indices"]))
  num_test = len(mnist.test_labels)
  correct = correct_counts(test_logits, mnist.test_labels)
  summary = report.finished_summary(
      config, rows, training.rows, train_seconds, mnist, training.data_info,
      report.test_accuracies(rows, correct, ensemble_correct(test_logits, mnist.test_labels) if config.seeds
                             and not config.sweep else None, num_test, sweep=bool(config.sweep)),
      programs.layout.machine())
  if not parallel.is_main_process():
    return summary, None
  report.write_json(workdir / "summary.json", summary)
  what = (f"{'a sweep of ' * bool(config.sweep)}{programs.layout.num_members} x {config.model}"
          if programs.layout.num_members else config.model)
  report.plot_accuracy(workdir / "accuracy.png", rows, f"jaxmnist {what} on {datasets.get(config.dataset).title}",
                       configs.post_result(config))
  say("\n".join(report.comparison_lines(summary, configs.post_result(config))))
  if not with_report:
    return summary, None
  trained = train_state.Trained(run_dir=workdir, config=config, model=programs.model, variables=variables,
                                epoch=config.epochs, checkpoint_line=f"checkpoint of epoch {config.epochs}",
                                data=training.data_info, programs=programs)
  return summary, evaluate.write_evaluation(trained, mnist, test_logits, valid_logits, arrays["valid_labels"], say)


def check_and_prepare(config: Config, workdir: Path, mesh: Mesh, resume: bool) -> None:
  """What both entry points check before any data is fetched, then the run directory made (not on --resume)."""
  configs.validate_config(config)
  Layout.of(config, mesh).check_batch(config.batch_size)
  if configs.num_members(config):  # said before any data is fetched: "8 members (4 values of learning_rate x 2 seeds)"
    why = [f"{len(values)} values of {name}" for name, values in config.sweep]
    why += [f"{len(config.seeds)} seeds"] if config.seeds else []
    say(f"training {configs.num_members(config)} members ({' x '.join(why)})")
  if parallel.is_main_process() and not resume:
    runs.prepare_workdir(workdir)


def train_checked(config: Config, workdir: Path, mnist: data.Mnist, mesh: Mesh, progress: bool = True,
                  resume: bool = False, with_report: bool = False) -> tuple[dict, dict | None]:
  """The three phases, for settings that `check_and_prepare` passed; returns the summary and the report."""
  try:
    training = set_up(config, workdir, mnist, mesh, resume)
    epochs = run_epochs(config, workdir, training, mnist, progress)
    return finish(config, workdir, mnist, training, epochs, with_report)
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
  check_and_prepare(config, workdir, mesh, resume)
  return train_checked(config, workdir, mnist, mesh, progress, resume)[0]


def run(args) -> dict:
  """`jaxmnist train` and `python -m jaxmnist.train`: train (or resume), then write the evaluation report."""
  config = flags.config_from_args(args)
  resume = args.resume is not None
  if resume:
    train_state.check_resumable(args.resume)
  cache_dir = process.open_caches(args.cache_dir)
  process.maybe_initialize_distributed(args.distributed)
  mesh = parallel.make_mesh(args.num_devices)
  workdir = Path(args.resume) if resume else Path(args.workdir or runs.default_workdir(config))
  check_and_prepare(config, workdir, mesh, resume)  # before any data is fetched
  mnist = data.load_with_log(config.dataset, args.source, args.data_dir, cache_dir, not args.unverified, say)
  say(f"devices: {mesh.size} x {jax.devices()[0].device_kind} ({jax.default_backend()}, "
      f"{jax.process_count()} process(es)); run directory: {workdir}")
  with_report = not args.no_evaluate and config.checkpoint_every > 0
  summary, evaluation = train_checked(config, workdir, mnist, mesh, not args.no_progress, resume, with_report)
  files = ["config.json", "metrics.csv", "accuracy.png", "summary.json"]
  files += [f"{checkpoint.CHECKPOINT_DIR}/"] if config.checkpoint_every > 0 else []
  say(f"files: {workdir}/{{{', '.join(files + (evaluation['files'] if evaluation else []))}}}")
  return summary


def main(argv=None, prog: str = "python -m jaxmnist.train") -> None:
  errors.exit_with_message(lambda: run(flags.parse_train_args(argv, prog)))


if __name__ == "__main__":
  main()
