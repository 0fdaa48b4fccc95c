"""Trains one of the post's models on MNIST (or Fashion-MNIST) and reports validation and test accuracy.

Synopsis:
  python -m jaxmnist.train --model=mlp3                 # the post's setup: SGD, lr 0.01, 400 epochs
  python -m jaxmnist.train --model=linear --epochs=5 --workdir=runs/linear
  python -m jaxmnist.train --model=cnn --dataset=fashion_mnist
"""

import argparse
import contextlib
import dataclasses
import datetime
import math
import os
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax.sharding import Mesh

from jaxmnist import augment, checkpoint, data, datasets, models, parallel, report, steps
from jaxmnist.configs import POST_RESULTS, PRESETS, Config
from jaxmnist.errors import Interrupted, TrainingDiverged, UserError

RUN_FILES = ("config.json", "metrics.csv", "summary.json", "accuracy.png")


def validate_config(config: Config, num_examples: int) -> None:
  """Raises UserError, with the fix, for a config that cannot train."""
  problems = []
  if config.model not in models.MODELS:
    problems.append(f"unknown model {config.model!r} (choose one of {', '.join(models.MODELS)})")
  if not config.learning_rate > 0 or not math.isfinite(config.learning_rate):
    problems.append(f"the learning rate must be a positive number, got {config.learning_rate}")
  if config.epochs < 1:
    problems.append(f"epochs must be at least 1, got {config.epochs}")
  if not 0 <= config.valid_fraction < 1:
    problems.append(f"the validation fraction must lie in [0, 1) (0: train on all examples), "
                    f"got {config.valid_fraction}")
  num_train = num_examples - int(num_examples * config.valid_fraction)
  if 0 <= config.valid_fraction < 1 and not 1 <= config.batch_size <= num_train:
    problems.append(f"the batch size must be between 1 and the {num_train} training examples, "
                    f"got {config.batch_size}")
  if config.init not in models.INIT_SCHEMES:
    problems.append(f"unknown init {config.init!r} (choose one of {', '.join(models.INIT_SCHEMES)})")
  if config.loop not in LOOPS:
    problems.append(f"unknown loop {config.loop!r} (choose one of {', '.join(LOOPS)})")
  if config.optimizer not in OPTIMIZERS:
    problems.append(f"unknown optimizer {config.optimizer!r} (choose one of {', '.join(OPTIMIZERS)})")
  if config.schedule not in SCHEDULES:
    problems.append(f"unknown schedule {config.schedule!r} (choose one of {', '.join(SCHEDULES)})")
  if config.augment not in augment.AUGMENTATIONS:
    problems.append(f"unknown augmentation {config.augment!r} (choose one of {', '.join(augment.AUGMENTATIONS)})")
  if not (0 <= config.adam_b1 < 1 and 0 <= config.adam_b2 < 1):
    problems.append(f"the Adam betas must lie in [0, 1), got {config.adam_b1} and {config.adam_b2}")
  if not 0 <= config.momentum < 1:
    problems.append(f"momentum must lie in [0, 1), got {config.momentum}")
  if config.weight_decay < 0:
    problems.append(f"weight decay must be >= 0, got {config.weight_decay}")
  if not 0 <= config.label_smoothing < 1:
    problems.append(f"label smoothing must lie in [0, 1), got {config.label_smoothing}")
  if config.eval_batch_size < 1:
    problems.append(f"the evaluation batch size must be at least 1, got {config.eval_batch_size}")
  if config.dataset not in datasets.DATASETS:
    problems.append(f"unknown dataset {config.dataset!r} (choose one of {', '.join(datasets.DATASETS)})")
  if config.checkpoint_every < 0:
    problems.append(f"--checkpoint-every must be a number of epochs >= 0 (0: never), got {config.checkpoint_every}")
  if config.keep_checkpoints < 1:
    problems.append(f"--keep-checkpoints must be at least 1, got {config.keep_checkpoints}")
  if problems:
    raise UserError("Invalid settings: " + "; ".join(problems) + ". Fix the flags and run again "
                    "(`python -m jaxmnist.train --help` lists them).")


def prepare_workdir(workdir: Path) -> None:
  """Creates the run directory, refusing one that already holds a run (never overwrite results)."""
  if workdir.exists() and not workdir.is_dir():
    raise UserError(f"--workdir {workdir} is a file, not a directory. Choose another path.")
  existing = [name for name in RUN_FILES if (workdir / name).exists()]
  if existing:
    raise UserError(f"--workdir {workdir} already holds a run ({', '.join(existing)}); jaxmnist never "
                    f"overwrites results. Choose a new --workdir, or leave it out for a fresh one.")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create --workdir {workdir}: {e.strerror}. Choose a writable path.") from e


LOOPS = ("scan", "python")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle", "onecycle_torch", "cosine")


def steps_per_epoch(config: Config, num_train: int) -> int:
  return -(-num_train // config.batch_size)


def torch_onecycle_schedule(total_steps: int, peak_value: float, pct_start: float = 0.3,
                            div_factor: float = 25.0, final_div_factor: float = 1e4) -> optax.Schedule:
  """torch.optim.lr_scheduler.OneCycleLR's rate (its defaults, two phases, cosine annealing), step by step.

  Up from peak/div_factor to the peak at step pct_start * total_steps - 1, then down to
  peak/div_factor/final_div_factor at the last step. (optax's cosine_onecycle_schedule puts the peak
  one step later and ends one step later.)
  """
  initial, final = peak_value / div_factor, peak_value / div_factor / final_div_factor
  peak_step = float(pct_start * total_steps) - 1
  last_step = total_steps - 1

  def cosine(start, end, fraction):
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * fraction) + 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warming = step <= peak_step
    up = cosine(initial, peak_value, jnp.clip(step / peak_step, 0.0, 1.0))
    down = cosine(peak_value, final, jnp.clip((step - peak_step) / (last_step - peak_step), 0.0, 1.0))
    return jnp.where(warming, up, down)

  return schedule


def learning_rate_schedule(config: Config, total_steps: int) -> optax.Schedule:
  if config.schedule == "onecycle_torch":
    return torch_onecycle_schedule(total_steps, config.learning_rate)
  if config.schedule == "onecycle":
    # fastai's fit_one_cycle defaults: warm up over the first 25% from lr/25, anneal to lr/1e5.
    return optax.cosine_onecycle_schedule(total_steps, config.learning_rate, pct_start=0.25,
                                          div_factor=25.0, final_div_factor=1e5)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(config.learning_rate, total_steps)
  return optax.constant_schedule(config.learning_rate)


def make_optimizer(config: Config, steps_per_epoch_: int) -> optax.GradientTransformation:
  """The post's presets get optax.sgd(lr): torch.optim.SGD without momentum or decay."""
  if config.schedule == "constant" and config.optimizer == "sgd" and not config.momentum:
    lr = config.learning_rate  # a float, exactly the post's optimizer
  else:
    lr = learning_rate_schedule(config, config.epochs * steps_per_epoch_)
  betas = {"b1": config.adam_b1, "b2": config.adam_b2}
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=config.weight_decay, **betas)
  if config.optimizer == "adam":
    core = optax.adam(lr, **betas)
  else:
    core = optax.sgd(lr, momentum=config.momentum or None, nesterov=config.nesterov)
  return optax.chain(optax.add_decayed_weights(config.weight_decay), core) if config.weight_decay else core


def step_options(config: Config) -> dict:
  return {"label_smoothing": config.label_smoothing, "augment": augment.AUGMENTATIONS[config.augment]}


def make_epoch_fn(config: Config, apply_fn, optimizer, mesh: Mesh):
  """A compiled `epoch(state, images, labels, train_indices, epoch) -> (state, sums)` for config.loop.

  `epoch(..., seed=s)` runs the same program for another seed (benchmarks over seeds compile once).

  Both loops run the same steps on the same batches, split over the mesh's devices; they differ
  only in how often the host dispatches work (once per epoch, or once per batch).
  """
  # One device needs no sharding constraints; the scan then gathers each batch inside its step.
  sharding = parallel.batch_sharding(mesh) if mesh.size > 1 else None
  # The seed is an argument, not a constant baked into the program: every seed of a config shares one
  # compiled epoch, and XLA's persistent cache serves it to the next process (the seed sweeps of
  # experiments/ compile once).
  seed = jnp.asarray(config.seed)
  options = step_options(config)
  if config.loop == "scan":
    train_epoch = partial(steps.train_epoch, batch_size=config.batch_size, apply_fn=apply_fn,
                          optimizer=optimizer, sharding=sharding, **options)
    jitted = jax.jit(lambda state, images, labels, indices, epoch, seed:
                     train_epoch(state, images, labels, indices, steps.epoch_key(seed, epoch)), donate_argnums=0)
    return lambda state, images, labels, indices, epoch, seed=seed: jitted(state, images, labels, indices, epoch,
                                                                          seed)
  cut = jax.jit(lambda images, labels, indices, epoch, seed: steps.epoch_batches(
      images, labels, indices, steps.epoch_key(seed, epoch), batch_size=config.batch_size, sharding=sharding))
  keys_for = jax.jit(lambda epoch, seed, num_steps: steps.step_keys(steps.epoch_key(seed, epoch), num_steps),
                     static_argnums=2)
  step = jax.jit(partial(steps.train_step_at, apply_fn=apply_fn, optimizer=optimizer, **options),
                 donate_argnums=(0, 1))

  def epoch_fn(state, images, labels, indices, epoch, seed=seed):
    batches = cut(images, labels, indices, epoch, seed)
    keys = keys_for(epoch, seed, batches[0].shape[0])
    sums = jax.device_put(steps.zero_sums(), parallel.replicated(mesh))
    for i in range(batches[0].shape[0]):
      state, sums = step(state, sums, batches, keys, i)
    return state, sums

  return epoch_fn


def _init_fn(model, optimizer, image_shape):
  def init(key):
    return steps.create_train_state(model.init(key, jnp.zeros((1, *image_shape), jnp.float32)), optimizer)
  return init


def init_train_state(config: Config, model, optimizer, mesh: Mesh, image_shape) -> steps.TrainState:
  """Parameters and optimizer state, created replicated on every device of the mesh in one jit.

  (Eager init would compile every initialiser op separately: ~0.8 s of start-up.)
  """
  init = _init_fn(model, optimizer, image_shape)
  return jax.jit(init, out_shardings=parallel.replicated(mesh))(steps.init_key(config.seed))


def abstract_train_state(config: Config, model, optimizer, mesh: Mesh, image_shape):
  """The TrainState's shapes and dtypes, replicated over `mesh`: the target a checkpoint restores onto."""
  shapes = jax.eval_shape(_init_fn(model, optimizer, image_shape), steps.init_key(config.seed))
  return checkpoint.abstract_like(shapes, parallel.replicated(mesh))


def place_data(mnist: data.Mnist, config: Config, mesh: Mesh) -> dict:
  """The images and labels on the devices, split along the examples; the split's indices replicated."""
  train_indices, valid_indices = data.split_train_valid(len(mnist.train_labels), config.valid_fraction,
                                                        config.seed)
  return {
      "images": parallel.shard_dataset(mnist.train_images, mesh),
      "labels": parallel.shard_dataset(mnist.train_labels, mesh),
      "test_images": parallel.shard_dataset(mnist.test_images, mesh),
      "test_labels": parallel.shard_dataset(mnist.test_labels, mesh),
      "train_indices": parallel.replicate(train_indices, mesh),
      "valid_indices": parallel.replicate(valid_indices, mesh),
      "test_indices": parallel.replicate(np.arange(len(mnist.test_labels), dtype=np.int32), mesh),
  }


def _epoch_row(epoch: int, sums: dict, valid_correct, num_valid: int, seconds: float) -> dict:
  return {
      "epoch": epoch,
      "train_loss": float(sums["loss_sum"]) / float(sums["count"]),
      "train_accuracy": float(sums["correct"]) / float(sums["count"]),
      "valid_accuracy": int(valid_correct) / num_valid if num_valid else None,  # None: --valid-fraction=0
      "seconds": round(seconds, 4),
  }


def _divergence_message(config: Config, row: dict, workdir: Path) -> str:
  return (f"Training diverged: the mean training loss became {row['train_loss']} in epoch "
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


def check_same_data(saved: dict, current: dict, run_dir: Path) -> None:
  """UserError when a run's checkpoint is used with other data than it was trained on."""
  if saved["sha256"] != current["sha256"]:
    raise UserError(f"{run_dir} was trained on other data ({saved['source']}) than the data given now "
                    f"({current['source']}). Pass the data flags the run was trained with (--source, "
                    f"--data-dir, --unverified, --dataset).")


def check_dataset(config: Config, mnist: data.Mnist) -> None:
  """UserError when the arrays are another dataset than the config trains on."""
  if mnist.dataset != config.dataset:
    raise UserError(f"The run trains on {datasets.get(config.dataset).title} (dataset {config.dataset}), but "
                    f"the data given is {datasets.get(mnist.dataset).title} ({mnist.source}). Load "
                    f"--dataset={config.dataset}, or set the config's dataset to {mnist.dataset}.")


def _interrupted_message(epoch: int, config: Config, workdir: Path, saved: bool) -> str:
  if not saved:
    return (f"Interrupted after epoch {epoch} of {config.epochs}; checkpoints were off (--checkpoint-every=0), "
            f"so the run cannot be resumed. {workdir / 'metrics.csv'} holds the finished epochs.")
  return (f"Interrupted after epoch {epoch} of {config.epochs}; its checkpoint is saved in "
          f"{workdir / checkpoint.CHECKPOINT_DIR}. Continue the run with `jaxmnist train --resume {workdir}`.")


def _checkpoint_due(config: Config, epoch: int, stop_requested: bool) -> bool:
  return epoch % config.checkpoint_every == 0 or epoch == config.epochs or stop_requested


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
  """
  workdir, mesh = Path(workdir), mesh or parallel.make_mesh()
  writes = parallel.is_main_process()
  say = print if writes else (lambda *_: None)
  validate_config(config, len(mnist.train_labels))
  check_dataset(config, mnist)
  parallel.check_divisible(config.batch_size, mesh)
  if writes and not resume:
    prepare_workdir(workdir)
    report.write_json(workdir / "config.json", dataclasses.asdict(config))

  arrays = place_data(mnist, config, mesh)
  num_valid = len(arrays["valid_indices"])
  model = models.build_model(config.model, config.init)
  optimizer = make_optimizer(config, steps_per_epoch(config, len(arrays["train_indices"])))
  image_shape = mnist.train_images.shape[1:]
  data_info = data.describe(mnist)
  rows = []
  if resume:
    restored = checkpoint.restore_latest(workdir / checkpoint.CHECKPOINT_DIR,
                                         abstract_train_state(config, model, optimizer, mesh, image_shape))
    check_same_data(restored.data, data_info, workdir)
    state, rows = restored.state, list(restored.rows)
    say(f"resuming from the {checkpoint.describe(restored)} of {config.epochs}")
  else:
    state = init_train_state(config, model, optimizer, mesh, image_shape)
  train_epoch = make_epoch_fn(config, model.apply, optimizer, mesh)
  # Evaluation batches are rounded up to split evenly over the devices; accuracy does not change.
  eval_batch_size = -(-config.eval_batch_size // mesh.size) * mesh.size
  count_correct = jax.jit(partial(steps.count_correct, batch_size=eval_batch_size, apply_fn=model.apply,
                                  sharding=parallel.batch_sharding(mesh) if mesh.size > 1 else None))

  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

  first_epoch = len(rows) + 1
  bar = tqdm(range(first_epoch, config.epochs + 1), desc=config.model, unit="epoch", initial=first_epoch - 1,
             total=config.epochs, disable=not (progress and writes), file=sys.stderr, dynamic_ncols=True)
  saves = writes and config.checkpoint_every > 0  # 0: never (benchmarks); then nothing can resume or evaluate
  saver = checkpoint.Saver(workdir / checkpoint.CHECKPOINT_DIR, config.keep_checkpoints) if saves else None
  started = time.perf_counter()
  try:
    with stop_after_epoch_on_ctrl_c(say) as stop:
      for epoch in bar:
        epoch_start = time.perf_counter()
        state, sums = train_epoch(state, arrays["images"], arrays["labels"], arrays["train_indices"], epoch)
        valid_correct = count_correct(steps.eval_variables(state), arrays["images"], arrays["labels"],
                                      arrays["valid_indices"]) if num_valid else None
        sums, valid_correct = jax.device_get((sums, valid_correct))  # the one host sync per epoch
        row = _epoch_row(epoch, sums, valid_correct, num_valid, time.perf_counter() - epoch_start)
        rows.append(row)
        if writes:
          report.write_metrics_csv(workdir / "metrics.csv", rows)
        if not math.isfinite(row["train_loss"]):  # no checkpoint of a diverged state: the earlier ones stay
          bar.close()
          if writes:
            report.write_json(workdir / "summary.json", {
                "status": "diverged", "config": dataclasses.asdict(config), "epochs_completed": epoch,
                "dataset": config.dataset, "data_source": mnist.source})
          raise TrainingDiverged(_divergence_message(config, row, workdir))
        if saver and _checkpoint_due(config, epoch, stop["requested"]):
          saver.save(epoch, state, rows, data_info)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_acc=report.format_accuracy(row["valid_accuracy"]))
        if stop["requested"] and epoch < config.epochs:
          bar.close()
          raise Interrupted(_interrupted_message(epoch, config, workdir, saved=saver is not None))
  finally:
    if saver:
      saver.close()  # waits for the last write: a checkpoint that was started is finished
  bar.close()
  train_seconds = time.perf_counter() - started

  test_correct = count_correct(steps.eval_variables(state), arrays["test_images"], arrays["test_labels"],
                               arrays["test_indices"])
  summary = {
      "status": "finished",
      "config": dataclasses.asdict(config),
      "epochs_completed": config.epochs,
      "valid_accuracy": rows[-1]["valid_accuracy"],
      "test_accuracy": int(test_correct) / len(mnist.test_labels),
      "train_seconds": round(train_seconds, 3),
      # The first epoch of this process includes compilation.
      "first_epoch_seconds": rows[first_epoch - 1]["seconds"] if first_epoch <= len(rows) else None,
      "resumed_from_epoch": first_epoch - 1 if resume else None,
      "steady_epoch_seconds": round(float(np.median([r["seconds"] for r in rows[first_epoch:]]
                                                     or [rows[-1]["seconds"]])), 4),
      "dataset": config.dataset,
      "data_source": mnist.source,
      "data_verified": mnist.verified,
      "data_sha256": data_info["sha256"],
      "device": str(jax.devices()[0].device_kind),
      "platform": jax.default_backend(),
      "num_devices": int(mesh.size),
      "num_processes": jax.process_count(),
      "jax_version": jax.__version__,
      "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
  }
  if writes:
    report.write_json(workdir / "summary.json", summary)
    report.plot_accuracy(workdir / "accuracy.png", rows,
                         f"jaxmnist {config.model} on {datasets.get(config.dataset).title}", post_result(config))
  return summary


def post_result(config: Config):
  """The post's numbers for this model, which are MNIST's: None for any other dataset."""
  return POST_RESULTS.get(config.model) if config.dataset == datasets.DEFAULT else None


class ArgumentParser(argparse.ArgumentParser):
  """Refuses abbreviated and unknown flags with a UserError, so a typo is one paragraph and exit 2.

  (argparse would take `--data=idx` as `--data-dir=idx` without a word.)
  """

  def __init__(self, **kwargs):
    super().__init__(allow_abbrev=False, **kwargs)

  def error(self, message):
    raise UserError(f"{message}. `{self.prog} --help` lists the flags; flags cannot be abbreviated.")


# The Config fields a flag can set; on --resume they must agree with the run's own config.
RESULT_FLAGS = ("epochs", "learning_rate", "batch_size", "valid_fraction", "seed", "init", "loop", "optimizer",
                "momentum", "nesterov", "schedule", "weight_decay", "label_smoothing", "augment", "dataset")
CHECKPOINT_FLAGS = ("checkpoint_every", "keep_checkpoints")  # change no result: free on --resume too


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--dataset", help=f"{' or '.join(datasets.DATASETS)} (default {datasets.DEFAULT}; a run "
                      "that is resumed or evaluated uses the dataset it was trained on)")
  parser.add_argument("--source", default="auto", help="data source: auto, or for mnist one of "
                      f"{', '.join(datasets.MNIST.sources)}, for fashion_mnist one of "
                      f"{', '.join(datasets.FASHION_MNIST.sources)}")
  parser.add_argument("--data-dir", help="a directory with the dataset's four IDX files (gzipped or not); "
                      "when given, it is the source (unless --source says otherwise)")
  parser.add_argument("--unverified", action="store_true",
                      help="with --source=dir: accept IDX files that are not the canonical dataset")
  parser.add_argument("--cache-dir", help=f"where verified data is cached, a folder per dataset (default "
                      f"${data.CACHE_ENV_VAR} or ~/.cache/jaxmnist)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model", help=f"preset: {', '.join(PRESETS)} (default mlp3)")
  parser.add_argument("--epochs", type=int, help="override the preset's epochs (the post: 400)")
  parser.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, help="SGD learning rate")
  parser.add_argument("--batch-size", type=int, help="training batch size (the post: 256)")
  parser.add_argument("--valid-fraction", type=float, help="share of the 60k held out (the post: 0.2)")
  parser.add_argument("--seed", type=int, help="seed of the split, the initialisation and the shuffling")
  parser.add_argument("--init", help="torch (PyTorch nn.Linear's default, the preset) or flax")
  parser.add_argument("--loop", help="scan (the whole epoch in one jit, the preset) or python (a jitted step "
                      "per batch)")
  parser.add_argument("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (the post: sgd)")
  parser.add_argument("--momentum", type=float, help="SGD momentum (the post: 0)")
  parser.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
  parser.add_argument("--schedule", help=f"learning-rate schedule: {', '.join(SCHEDULES)} (the post: constant)")
  parser.add_argument("--weight-decay", type=float, help="weight decay (the post: 0)")
  parser.add_argument("--label-smoothing", type=float, help="label smoothing (the post: 0)")
  parser.add_argument("--augment", help=f"on-device augmentation: {', '.join(augment.AUGMENTATIONS)}")
  parser.add_argument("--checkpoint-every", type=int, help="save a checkpoint every N epochs (also at the end "
                      "and on Ctrl-C; default per preset; 0: never, so no resume and no evaluation)")
  parser.add_argument("--keep-checkpoints", type=int, help="how many of the newest checkpoints to keep (3)")
  parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest intact "
                      "checkpoint, with its own config; the result equals an uninterrupted run's")
  add_data_arguments(parser)
  parser.add_argument("--workdir", help="run directory (default runs/MODEL-DATE-TIME)")
  parser.add_argument("--num-devices", type=int, help="train on the first N devices (default: all, "
                      "data parallel; the global batch is split evenly over them)")
  parser.add_argument("--distributed", action="store_true", help="join a multi-host job first "
                      "(jax.distributed.initialize(); automatic when JAX_COORDINATOR_ADDRESS is set)")
  parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluation report after training")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_args(argv, prog: str = "python -m jaxmnist.train") -> argparse.Namespace:
  parser = ArgumentParser(
      prog=prog, description="Train one of the post's MNIST models (or any preset, on MNIST or Fashion-MNIST). "
      "Defaults reproduce the post's setup.")
  add_train_arguments(parser)
  return parser.parse_args(argv)


def _preset(name: str) -> Config:
  if name not in PRESETS:
    raise UserError(f"Unknown model {name!r}. Choose one of: {', '.join(PRESETS)}, e.g. --model=mlp3.")
  return PRESETS[name]


def _flag(name: str) -> str:
  return "--lr" if name == "learning_rate" else "--" + name.replace("_", "-")


def _given(args: argparse.Namespace, names) -> dict:
  return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def config_from_args(args: argparse.Namespace) -> Config:
  if args.resume:
    return resumed_config(args)
  return dataclasses.replace(_preset(args.model or "mlp3"), **_given(args, RESULT_FLAGS + CHECKPOINT_FLAGS))


def resumed_config(args: argparse.Namespace) -> Config:
  """The config of the run in args.resume; flags may repeat it, or change only how it checkpoints."""
  from jaxmnist import runs  # pylint: disable=g-import-not-at-top

  run_dir = Path(args.resume)
  saved = runs.read_config(run_dir)
  runs.check_resumable(run_dir)
  contradictions = [f"{_flag(name)}={value} (the run has {getattr(saved, name)})"
                    for name, value in _given(args, RESULT_FLAGS).items() if value != getattr(saved, name)]
  if args.model is not None and _preset(args.model).model != saved.model:
    contradictions.append(f"--model={args.model} (the run trains {saved.model})")
  if args.workdir is not None and Path(args.workdir).resolve() != run_dir.resolve():
    contradictions.append(f"--workdir={args.workdir} (a resumed run continues in {run_dir})")
  if contradictions:
    raise UserError(f"--resume {run_dir} continues that run with its own config, but these flags contradict "
                    f"it: {'; '.join(contradictions)}. Drop them to resume, or start a new run without --resume.")
  return dataclasses.replace(saved, **_given(args, CHECKPOINT_FLAGS))


XLA_CACHE_LIMIT_ENV_VAR = "JAXMNIST_XLA_CACHE_MB"
DEFAULT_XLA_CACHE_MB = 256  # one run's programs take 0.3 MB (`tiny`) to a few MB


def xla_cache_limit_bytes() -> int:
  """The compiled-program cache's cap: $JAXMNIST_XLA_CACHE_MB megabytes, or DEFAULT_XLA_CACHE_MB."""
  raw = os.environ.get(XLA_CACHE_LIMIT_ENV_VAR, "").strip()
  if not raw:
    return DEFAULT_XLA_CACHE_MB * 2**20
  try:
    megabytes = float(raw)
  except ValueError:
    megabytes = -1.0
  if not megabytes >= 0:
    raise UserError(f"${XLA_CACHE_LIMIT_ENV_VAR}={raw!r} is not a size in megabytes. Set it to a number "
                    f">= 0 (0 turns the compiled-program cache off), or unset it for {DEFAULT_XLA_CACHE_MB}.")
  return int(megabytes * 2**20)


def enable_compilation_cache(cache_dir: Path, limit_bytes: int) -> None:
  """Reuses compiled XLA programs across runs: a repeated command skips most of its compile time.

  The cache is capped: past the limit, jax evicts the least recently used programs as it writes
  new ones (its LRU cache, which needs `filelock`), so the folder never grows without bound.
  """
  if limit_bytes == 0:
    return
  jax.config.update("jax_compilation_cache_dir", str(cache_dir / "xla"))
  jax.config.update("jax_compilation_cache_max_size", limit_bytes)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run(args: argparse.Namespace) -> dict:
  """`jaxmnist train` and `python -m jaxmnist.train`: train (or resume), then write the evaluation report."""
  config = config_from_args(args)
  validate_config(config, 60000)  # fail before any data is fetched; rechecked against the real data
  xla_cache_limit = xla_cache_limit_bytes()
  parallel.maybe_initialize_distributed(args.distributed)
  mesh = parallel.make_mesh(args.num_devices)
  parallel.check_divisible(config.batch_size, mesh)
  writes = parallel.is_main_process()
  say = print if writes else (lambda *_: None)
  resume = args.resume is not None
  if resume:
    workdir = Path(args.resume)
  else:
    workdir = Path(args.workdir or default_workdir(config))
    if writes:
      prepare_workdir(workdir)
  cache_dir = Path(args.cache_dir) if args.cache_dir else data.default_cache_dir()
  enable_compilation_cache(cache_dir, xla_cache_limit)
  mnist = load_data(args, config.dataset, cache_dir, say)
  say(f"devices: {mesh.size} x {jax.devices()[0].device_kind} ({jax.default_backend()}, "
      f"{jax.process_count()} process(es)); run directory: {workdir}")
  summary = train_and_evaluate(config, workdir, mnist, progress=not args.no_progress, mesh=mesh, resume=resume)
  post = post_result(dataclasses.replace(config, model=args.model or config.model))
  say("\n".join(report.comparison_lines(summary, post)))
  files = ["config.json", "metrics.csv", "accuracy.png", "summary.json"]
  files += [f"{checkpoint.CHECKPOINT_DIR}/"] if config.checkpoint_every > 0 else []
  if writes and not args.no_evaluate and config.checkpoint_every > 0:
    from jaxmnist import evaluate  # pylint: disable=g-import-not-at-top

    evaluation = evaluate.evaluate_run(workdir, mnist, say=say)
    files += evaluation["files"]
  say(f"files: {workdir}/{{{', '.join(files)}}}")
  return summary


def default_workdir(config: Config) -> str:
  dataset = "" if config.dataset == datasets.DEFAULT else f"-{config.dataset}"
  return f"runs/{config.model}{dataset}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def load_data(args: argparse.Namespace, dataset: str, cache_dir: Path, say) -> data.Mnist:
  """`dataset` from the data flags in `args`, saying which source it came from."""
  load_start = time.perf_counter()
  mnist = data.load_mnist(args.source, args.data_dir, cache_dir, verify=not args.unverified, dataset=dataset)
  for note in mnist.notes:
    say(f"data: passed over {note}")
  say(f"data: {data.source_line(mnist)}, loaded in {time.perf_counter() - load_start:.2f} s")
  return mnist


def main(argv=None, prog: str = "python -m jaxmnist.train") -> None:
  exit_with_message(lambda: run(parse_args(argv, prog)))


def exit_with_message(command) -> None:
  """Runs a command; a user's mistake, a divergence or an interrupt becomes one paragraph and an exit code."""
  try:
    command()
  except (UserError, TrainingDiverged, Interrupted) as e:
    print(f"error: {e}" if not isinstance(e, Interrupted) else str(e), file=sys.stderr)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:
    print("interrupted: the metrics of the finished epochs and the last checkpoint are in the run directory.",
          file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  main()
