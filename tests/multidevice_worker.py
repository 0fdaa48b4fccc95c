"""Runs in a subprocess with 8 simulated CPU devices (XLA_FLAGS set by tests/test_parallel.py) and
prints, as JSON, what the tests assert on. A subprocess, because the device count is fixed when
the first JAX computation starts.

  python tests/multidevice_worker.py FOLDER   # FOLDER: where its `jaxmnist train` runs write (cli_runs)
"""

import contextlib
import dataclasses
import io
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jaxmnist import configs, data, ensemble, models, parallel, steps  # noqa: E402
from jaxmnist.programs import Programs, place_data  # noqa: E402
from jaxmnist.configs import PRESETS  # noqa: E402
from jaxmnist.optimizer import make_optimizer  # noqa: E402
from tests.conftest import make_separable, write_idx_dir  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


def train_params(mesh, epochs=2):
  config = dataclasses.replace(PRESETS["tiny"], model="mlp2", batch_size=32)
  programs = Programs(config, models.build_model(config.model), make_optimizer(config, 8), mesh)
  state = programs.init()
  images, labels = make_separable(300)
  images = parallel.shard_dataset(images[..., None], mesh)
  labels = parallel.shard_dataset(labels, mesh)
  indices = parallel.replicate(np.arange(250, dtype=np.int32), mesh)  # 250 = 7 x 32 + 26
  for epoch in range(1, epochs + 1):
    state, sums = programs.train_epoch(state, images, labels, indices, epoch)
  return state, jax.device_get(sums)


def train_placed(config, mesh, mnist, state=None, epoch_fn=None, epochs=2):
  """`config` (one model or an ensemble) trained on `mnist` placed on `mesh` as `jaxmnist train` places it,
  from `state` (default: its own initial state) with `epoch_fn` (default: its own)."""
  programs = Programs(config, models.build_model(config.model), make_optimizer(config, 8), mesh)
  arrays = place_data(mnist, config, mesh)
  state = programs.init() if state is None else state
  epoch_fn = epoch_fn or programs.train_epoch
  for epoch in range(1, epochs + 1):
    state, _ = epoch_fn(state, arrays["images"], arrays["labels"], arrays["train_indices"], epoch,
                        seed=jnp.asarray(config.seeds or config.seed))
  return state


ALONE = (0, 2, 7)  # the members compared with their seed trained alone


def ensemble_reports(mesh8, mesh1, sizes=(8, 3)):
  """Ensembles on 8 devices against some of their seeds (ALONE) trained alone on one device."""
  images, labels = make_separable(300)
  mnist = data.Mnist(images[..., None], labels, images[:50, ..., None], labels[:50], source="toy", verified=False)
  base = dataclasses.replace(PRESETS["tiny"], model="mlp2", batch_size=32)
  # Alone: each seed's own split and seed, from its initial state (the vmapped initialisation is checked
  # against a single run's by tests/test_ensemble.py), with one compiled single-model epoch for all.
  largest = dataclasses.replace(base, seeds=tuple(range(max(sizes))))
  members = configs.member_configs(largest)
  model, optimizer = models.build_model(base.model), make_optimizer(base, 8)
  starts = Programs(largest, model, optimizer, mesh1).init()
  epoch_fn = Programs(members[0], model, optimizer, mesh1).train_epoch
  # Three seeds alone, not every member: the first, one inside the smaller ensemble and the last of the
  # larger (a member's place in the stack is what could go wrong; each seed alone trains the same way).
  alone = {k: train_placed(members[k], mesh1, mnist, ensemble.member(starts, k), epoch_fn) for k in ALONE}
  reports = {}
  for size in sizes:
    config = dataclasses.replace(base, seeds=tuple(range(size)))
    stacked = train_placed(config, mesh8, mnist)
    compared = [k for k in ALONE if k < size]
    reports[f"ensemble_of_{size}"] = {
        "layout": Programs(config, model, optimizer, mesh8).layout.describe(),
        "params_spec": list(jax.tree.leaves(stacked.params)[0].sharding.spec),
        "params_shard_shape": list(jax.tree.leaves(stacked.params)[0].addressable_shards[0].data.shape),
        "members_compared": compared,
        "params_max_diff_vs_alone": max(max_difference(ensemble.member(stacked.params, k), alone[k].params)
                                        for k in compared),
        "params_max_abs": max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(alone[0].params)),
    }
  return reports


def cli_runs(folder: Path) -> dict:
  """`jaxmnist train` on the toy IDX files through the CLI's own main in this process, which sees 8 devices:
  tiny alone, as an ensemble of 8 and as a sweep of 8, a batch that does not split over 8 devices, and 2 of the
  8 devices. One process for all of them (and for the rest of this worker), not a start-up and import of jax each."""
  from jaxmnist import cli  # pylint: disable=g-import-not-at-top

  idx_dir = write_idx_dir(folder / "idx")
  common = ["train", "--no-progress", "--source=dir", f"--data-dir={idx_dir}", "--unverified", "--model=tiny"]
  runs = {"tiny": ["--no-evaluate", f"--workdir={folder / 'tiny'}"], "ensemble_of_8": ["--seeds=8", f"--workdir={folder / 'ensemble'}"],
          "batch_30": ["--batch-size=30", f"--workdir={folder / 'batch30'}"],
          "sweep_of_8": ["--lr=0.05,0.1", "--seeds=4", "--no-evaluate", f"--workdir={folder / 'sweep'}"],
          "two_of_eight": ["--num-devices=2", "--epochs=1", "--no-evaluate", f"--workdir={folder / 'two'}"]}
  results = {}
  for name, args in runs.items():
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        cli.main(common + args)
      except SystemExit as e:
        code = 0 if e.code is None else e.code
    results[name] = {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
  return results


def max_difference(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  mesh8, mesh1 = parallel.make_mesh(), parallel.make_mesh(1)
  images = parallel.shard_dataset(np.zeros((100, 28, 28, 1), np.uint8), mesh8)  # padded to 104
  batches = jax.jit(lambda i, l, idx: steps.gather_batches(
      i, l, *steps.shuffled_batches(jax.random.key(0), idx, 32), sharding=parallel.batch_sharding(mesh8)))(
          images, parallel.shard_dataset(np.zeros(100, np.int32), mesh8),
          parallel.replicate(np.arange(90, dtype=np.int32), mesh8))
  state8, sums8 = train_params(mesh8)
  state1, sums1 = train_params(mesh1)
  print(json.dumps({
      "device_count": jax.device_count(),
      "dataset_shape": images.shape,
      "dataset_shard_shapes": sorted({s.data.shape for s in images.addressable_shards}),
      "dataset_devices": len({s.device for s in images.addressable_shards}),
      "batch_spec": list(batches[0].sharding.spec),
      "batch_shard_shapes": sorted({s.data.shape for s in batches[0].addressable_shards}),
      "batch_devices": len({s.device for s in batches[0].addressable_shards}),
      "params_spec": list(jax.tree.leaves(state8.params)[0].sharding.spec),
      "steps": [int(state8.step), int(state1.step)],
      "params_max_diff_8_vs_1": max_difference(state8.params, state1.params),
      "params_max_abs": max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(state1.params)),
      "loss_sum": [float(sums8["loss_sum"]), float(sums1["loss_sum"])],
      # 8 members spread one per device; 3 do not divide 8, so they train data parallel
      **ensemble_reports(mesh8, mesh1),
      "cli": cli_runs(Path(sys.argv[1])),
  }))


if __name__ == "__main__":
  main()
