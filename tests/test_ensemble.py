"""Many models in one program (`--seeds`): each member is the model its seed trains alone, and the run's
files, resume, evaluate, predict, serve and export treat the members as one ensemble.

The yardstick is the single-seed run: tiny_ensemble_cli_run trains `tiny` with `--seeds=0,3` on the toy
files that tiny_cli_run trains seed 0 on, so its member 0 must be that run's model. The ensemble's
answers are checked against the members applied one at a time, outside jaxmnist.ensemble.
"""

import dataclasses
import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export as jax_export

from jaxmnist import (checkpoint, configs, ensemble, models, parallel, predict, programs, report, serve, steps,
                      train_state)
from jaxmnist.configs import PRESETS
from jaxmnist.optimizer import make_optimizer
from tests import serving
from tests.conftest import cli_output, make_separable

# Float tolerance between a member and its single-seed run: vmapped matmuls may sum in another order.
RTOL = 1e-5


def _members_probabilities(trained, images_uint8):
  """The ensemble's probabilities the long way, each member applied alone and their softmaxes averaged;
  and how many members' own top class is the ensemble's."""
  inputs = steps.images_to_inputs(jnp.asarray(images_uint8))
  members_KxNxC = np.stack([jax.nn.softmax(trained.model.apply(ensemble.member(trained.variables, k), inputs,
                                                               train=False)) for k in range(trained.num_members)])
  mean_NxC = members_KxNxC.mean(0)
  return mean_NxC, (members_KxNxC.argmax(-1) == mean_NxC.argmax(-1)).sum(0)


def _assert_close_trees(a, b, rtol=RTOL):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(1.0, float(np.abs(y).max())))


# ---- the vmapped epoch, in process, on every kind of model and loop ------------------------------------

# (Through train_and_evaluate, a grid of values and seeds against members trained alone: tests/test_sweep.py.)

def test_each_member_trains_as_its_seed_does_alone(monkeypatch):
  # BatchNorm, dropout, shifts and label smoothing (cnn_wide's recipe on a narrow net that compiles in a
  # second): every key and statistic a member keeps of its own.
  monkeypatch.setitem(models.MODELS, "narrow_cnn", functools.partial(models.CNN, widths=(4, 8), dense=16))
  config = dataclasses.replace(PRESETS["cnn_wide"], batch_size=16, model="narrow_cnn", seeds=(0, 5))
  images, labels = make_separable(40)
  images, labels = jnp.asarray(images[..., None]), jnp.asarray(labels)
  mesh = parallel.make_mesh(1)
  model = models.build_model(config.model)
  optimizer = make_optimizer(config, 3)
  # Each member its own training split, as each seed draws its own.
  indices = [jnp.asarray(np.random.default_rng(seed).permutation(40)[:36].astype(np.int32)) for seed in config.seeds]

  together = programs.Programs(config, model, optimizer, mesh)
  stacked = together.init()
  # The members' initial states, as seeds 0 and 5 alone start (the CLI test below checks the vmapped
  # initialisation against a single run's; here one compiled init and one single epoch keep it quick).
  # Members are sliced on the host: eager slices of each leaf's shape compile one by one.
  starts = [jax.device_put(ensemble.member(jax.device_get(stacked), k)) for k in range(2)]
  stacked, sums = jax.device_get(together.train_epoch(stacked, images, labels, jnp.stack(indices), 1))
  single_epoch = programs.Programs(configs.member_configs(config)[0], model, optimizer, mesh).train_epoch
  for k, seed in enumerate(config.seeds):
    alone, alone_sums = single_epoch(starts[k], images, labels, indices[k], 1, seed=jnp.asarray(seed))
    _assert_close_trees(ensemble.member(stacked, k), alone)
    _assert_close_trees(ensemble.member(sums, k), alone_sums)
  assert not np.allclose(*(np.asarray(jax.tree.leaves(ensemble.member(stacked.params, k))[0]) for k in (0, 1)))


def test_the_ensembles_probabilities_are_the_members_mean():
  member_logits = np.random.default_rng(0).standard_normal((3, 5, 10), np.float32) * 4  # jax's compiles, 1 s
  combined = ensemble.combine(member_logits)
  np.testing.assert_allclose(jax.nn.softmax(combined), jax.nn.softmax(member_logits).mean(0), rtol=1e-5)
  agreeing = ensemble.members_agreeing(member_logits, combined)
  np.testing.assert_array_equal(agreeing, (member_logits.argmax(-1) == combined.argmax(-1)[None]).sum(0))
  np.testing.assert_array_equal(ensemble.members_agreeing(member_logits[:1], member_logits[0]), np.ones(5))


def test_config_json_keeps_the_seeds(tmp_path):
  config = dataclasses.replace(PRESETS["cnn_fast"], seeds=(3, 7, 11), seed=3)
  assert configs.config_from_dict(json.loads(json.dumps(dataclasses.asdict(config))), "config.json") == config
  with pytest.raises(configs.UserError, match="seeds must be a list of whole numbers"):
    configs.config_from_dict({**dataclasses.asdict(config), "seeds": [1, "x"]}, "config.json")
  with pytest.raises(configs.UserError, match="the seeds of an ensemble must differ"):
    configs.validate_config(dataclasses.replace(config, seeds=(1, 1)))
  assert configs.post_result(dataclasses.replace(PRESETS["mlp3"], seeds=(0, 1))) is not None  # the post's recipe


# ---- a real ensemble run through the CLI ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ensemble_run(tiny_ensemble_cli_run):
  return tiny_ensemble_cli_run.run_dir


def test_member_0_is_the_model_that_seed_0_trains_alone(ensemble_run, tiny_cli_run):
  lines = report.read_metrics_csv(ensemble_run / "metrics.csv")
  alone = report.read_metrics_csv(tiny_cli_run.run_dir / "metrics.csv")
  member_0 = [line for line in lines if line["member"] == 0]
  assert [line["epoch"] for line in member_0] == [row["epoch"] for row in alone] == [1, 2, 3]
  for line, row in zip(member_0, alone):
    for name in ("train_loss", "train_accuracy", "valid_accuracy"):
      assert line[name] == pytest.approx(row[name], rel=RTOL), name
  trained, single = train_state.load_trained(ensemble_run), train_state.load_trained(tiny_cli_run.run_dir)
  _assert_close_trees(ensemble.member(trained.variables, 0), single.variables)
  summary = json.loads((ensemble_run / "summary.json").read_text())
  single_summary = json.loads((tiny_cli_run.run_dir / "summary.json").read_text())
  assert abs(summary["members"][0]["test_accuracy"] - single_summary["test_accuracy"]) <= 0.02  # 2 of 100
  # ... and member 1 is another model (seed 3), not a copy.
  assert not np.allclose(*(jax.tree.leaves(ensemble.member(trained.variables, k))[0] for k in (0, 1)))


def test_the_run_reads_as_one_ensemble(ensemble_run, tiny_ensemble_cli_run):
  out = tiny_ensemble_cli_run.result.stdout
  assert "parallelism: 2 members on one device, one after another (a CPU), in one compiled program" in out
  assert "member 1 (seed 3): validation" in out and "ensemble of 2 (mean of the members' probabilities)" in out
  with open(ensemble_run / "metrics.csv") as f:
    assert f.readline().strip() == "epoch,member,seed,train_loss,train_accuracy,valid_accuracy,seconds"
  lines = report.read_metrics_csv(ensemble_run / "metrics.csv")
  assert [(line["epoch"], line["seed"]) for line in lines] == [(e, s) for e in (1, 2, 3) for s in (0, 3)]
  summary = json.loads((ensemble_run / "summary.json").read_text())
  assert [m["seed"] for m in summary["members"]] == [0, 3]
  tests = [m["test_accuracy"] for m in summary["members"]]
  assert summary["member_test_accuracy"]["mean"] == pytest.approx(np.mean(tests))
  assert summary["member_test_accuracy"]["std"] == pytest.approx(np.std(tests, ddof=1))
  assert summary["test_accuracy"] == summary["ensemble_test_accuracy"] >= 0.9
  assert (ensemble_run / "accuracy.png").stat().st_size > 10_000


def test_evaluate_reports_the_members_and_the_ensemble(ensemble_run):
  evaluation = json.loads((ensemble_run / "evaluation.json").read_text())
  summary = json.loads((ensemble_run / "summary.json").read_text())
  assert evaluation["test"]["accuracy"] == summary["ensemble_test_accuracy"]
  assert [m["seed"] for m in evaluation["members"]] == [0, 3]
  for m, s in zip(evaluation["members"], summary["members"]):
    assert m["test_accuracy"] == s["test_accuracy"] and m["valid_accuracy"] == pytest.approx(s["valid_accuracy"])
  assert 0 <= evaluation["disagreement"] <= 1
  assert sum(evaluation["members_agreeing_with_ensemble"].values()) == evaluation["test"]["num_examples"]


def test_predict_answers_with_the_ensemble_and_says_how_many_agree(ensemble_run, tmp_path, capsys):
  images = [serving.drawing(strokes) for strokes in (serving.SEVEN, serving.ONE, serving.ZERO)]
  paths = []
  for i, png in enumerate(images):
    paths.append(tmp_path / f"{i}.png")
    paths[-1].write_bytes(png)
  answer = json.loads(cli_output(capsys, "predict", ensemble_run, *paths, "--json"))
  assert answer["members"] == 2
  trained = train_state.load_trained(ensemble_run)
  from jaxmnist import preprocess  # pylint: disable=g-import-not-at-top
  expected, agreeing = _members_probabilities(trained, preprocess.to_mnist_batch(paths))
  for prediction, expected_C, agreeing_ in zip(answer["predictions"], expected, agreeing):
    np.testing.assert_allclose(prediction["probabilities"], expected_C, atol=2e-6)
    # (0 is possible: two members torn between two classes can leave a third on top of their mean)
    assert prediction["members_agreeing"] == agreeing_
  assert "of 2 members agree" in cli_output(capsys, "predict", ensemble_run, paths[0])


def test_export_bakes_every_member_into_one_artifact(ensemble_run, tmp_path, capsys):
  out = cli_output(capsys, "export", ensemble_run, f"--out={tmp_path / 'ensemble.jaxexport'}")
  assert "an ensemble of 2 x mlp3" in out
  images = make_separable(8, seed=4)[0][..., None]
  logits = np.asarray(jax_export.deserialize(bytearray((tmp_path / "ensemble.jaxexport").read_bytes())).call(images))
  trained = train_state.load_trained(ensemble_run)
  np.testing.assert_allclose(jax.nn.softmax(logits), _members_probabilities(trained, images)[0], atol=2e-6)


def test_serve_answers_with_the_ensemble(ensemble_run):
  trained = train_state.load_trained(ensemble_run)
  assert serve.health(trained)["members"] == 2
  answer = serve.predict_picture(serving.drawing(), predict.outputs_fn(trained), members=2)
  from jaxmnist import preprocess  # pylint: disable=g-import-not-at-top
  expected, agreeing = _members_probabilities(trained, preprocess.to_mnist(serving.drawing())[None])
  np.testing.assert_allclose(answer["probabilities"], expected[0], atol=2e-6)
  assert answer["members"] == 2 and answer["members_agreeing"] == agreeing[0]


def test_an_ensemble_resumes_bit_identical(ensemble_run, tiny_ensemble_cli_run, tmp_path, capsys):
  # As if killed after its checkpoint of epoch 1: the later checkpoints and the summary gone. Resumed through
  # the CLI's main in this process (tests/test_checkpoint.py resumes across processes and signals).
  shutil.copytree(ensemble_run, tmp_path / "run")
  (tmp_path / "run" / "summary.json").unlink()
  for epoch in checkpoint.saved_epochs(tmp_path / "run" / checkpoint.CHECKPOINT_DIR)[1:]:
    shutil.rmtree(tmp_path / "run" / checkpoint.CHECKPOINT_DIR / str(epoch))
  idx_dir = tiny_ensemble_cli_run.idx_dir
  out = cli_output(capsys, "train", f"--resume={tmp_path / 'run'}", "--source=dir", f"--data-dir={idx_dir}",
                   "--unverified", "--no-progress", "--no-evaluate")
  assert "resuming from the checkpoint of epoch 1 of 3" in out
  def without_seconds(run):
    return [{k: v for k, v in line.items() if k != "seconds"} for line in report.read_metrics_csv(run / "metrics.csv")]
  assert without_seconds(tmp_path / "run") == without_seconds(ensemble_run)
  resumed, uninterrupted = train_state.load_trained(tmp_path / "run"), train_state.load_trained(ensemble_run)
  for a, b in zip(jax.tree.leaves(resumed.variables), jax.tree.leaves(uninterrupted.variables), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit for bit, every member
