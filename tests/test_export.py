"""Exported artifacts: run in a fresh process with only jax and numpy, they match `model.apply`."""

import dataclasses
import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export as jax_export

from jaxmnist import cli, errors, export, models, train_state
from jaxmnist.configs import PRESETS
from tests import training_outcomes

BATCH_SIZES = (1, 7, 100)
ATOL = 1e-5  # the artifact's native convolution against im2col, which model.apply uses on CPU


# Runs in `python -I`: the editable install would still find jaxmnist, so the child blocks it first;
# if loading or calling the artifact needed any jaxmnist (or flax) code, this would fail.
CHILD = textwrap.dedent("""
  import json, sys
  sys.modules["jaxmnist"] = None
  try:
    import jaxmnist
    jaxmnist_importable = True
  except ImportError:
    jaxmnist_importable = False
  import numpy as np
  from jax import export
  artifact, inputs, outputs = sys.argv[1:]
  with open(artifact, "rb") as f:
    exp = export.deserialize(bytearray(f.read()))
  batches = np.load(inputs)
  np.savez(outputs, **{name: np.asarray(exp.call(images)) for name, images in batches.items()})
  loaded = sorted({m.split(".")[0] for m in sys.modules if sys.modules[m] is not None})
  print(json.dumps({"jaxmnist_importable": jaxmnist_importable, "in_avals": str(exp.in_avals),
                    "out_avals": str(exp.out_avals), "platforms": list(exp.platforms), "loaded": loaded}))
""")


def _with_batchnorm_stats(variables, seed=1):
  """Running statistics far from init's zeros and ones, so that eval mode visibly depends on them."""
  rng = np.random.default_rng(seed)  # numpy: jax.random would compile for every shape

  def stat(path, x):
    if path[-1].key == "mean":
      return jnp.asarray(0.1 * rng.standard_normal(x.shape), jnp.float32)
    return jnp.asarray(rng.uniform(0.5, 2.0, x.shape), jnp.float32)

  return {**variables, "batch_stats": jax.tree_util.tree_map_with_path(stat, variables["batch_stats"])}


@functools.lru_cache(maxsize=None)  # init compiles: once per model for the whole module, as one program
def model_and_variables(name, seed=0):
  model = models.build_model(name)
  variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))
  if "batch_stats" in variables:
    variables = _with_batchnorm_stats(variables, seed + 1)
  return model, variables


def random_batches(seed=0):
  rng = np.random.default_rng(seed)
  return {f"b{n}": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8) for n in BATCH_SIZES}


@functools.lru_cache(maxsize=None)
def _jitted_apply(model):
  return jax.jit(model.apply, static_argnames="train")  # one program, not an op-by-op compile each


def expected_logits(model, variables, images):
  return np.asarray(_jitted_apply(model)(variables, images.astype(np.float32) / 255.0, train=False))


def clear_mask(logits_Bx10) -> np.ndarray:
  """Where the top two logits are apart by more than the comparison's tolerance can blur."""
  top2 = np.sort(logits_Bx10, axis=-1)[:, -2:]
  return top2[:, 1] - top2[:, 0] > 4 * ATOL


def _assert_same_logits(logits_Bx10, expected_Bx10) -> np.ndarray:
  """Returns the examples whose predicted digit was compared too."""
  assert logits_Bx10.shape == expected_Bx10.shape and logits_Bx10.dtype == np.float32
  np.testing.assert_allclose(logits_Bx10, expected_Bx10, rtol=1e-5, atol=ATOL)
  # Random pixels give close logits: compare the predicted digit where the top two are not a near tie.
  clear = clear_mask(expected_Bx10)
  np.testing.assert_array_equal(logits_Bx10.argmax(-1)[clear], expected_Bx10.argmax(-1)[clear])
  return clear


def _assert_mostly_compared(clear_masks) -> None:
  # Over all of a test's batches (108 examples): in one batch of 7, one near tie is 1/7 already.
  fraction = float(np.concatenate(clear_masks).mean())
  training_outcomes.assert_clears("export_clear", {"clear_fraction": fraction})


def _run_in_fresh_python(artifact, batches, tmp_path):
  inputs, outputs = tmp_path / "inputs.npz", tmp_path / "logits.npz"
  np.savez(inputs, **batches)
  result = subprocess.run([sys.executable, "-I", "-c", CHILD, str(artifact), str(inputs), str(outputs)],
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  with np.load(outputs) as logits:
    return json.loads(result.stdout.strip().splitlines()[-1]), dict(logits)


# The convolutional net's artifact in a fresh process: tests/test_model_life.py's, on the real trained cnn.
@pytest.mark.parametrize("name", ["linear"])
def test_artifact_runs_with_only_jax_and_matches_model_apply(name, tmp_path):
  model, variables = model_and_variables(name)
  artifact = tmp_path / f"{name}.jaxexport"
  size = export.write_artifact(artifact, export.export_inference(name, variables))
  assert size == artifact.stat().st_size
  batches = random_batches()

  info, logits = _run_in_fresh_python(artifact, batches, tmp_path)

  assert not info["jaxmnist_importable"]
  assert not {"jaxmnist", "flax", "optax", "chex"} & set(info["loaded"])
  assert info["in_avals"] == "(ShapedArray(uint8[b,28,28,1]),)"
  assert info["out_avals"] == "(ShapedArray(float32[b,10]),)"
  assert tuple(info["platforms"]) == export.DEFAULT_PLATFORMS
  _assert_mostly_compared([_assert_same_logits(logits[key], expected_logits(model, variables, images))
                           for key, images in batches.items()])


def test_eval_mode_uses_the_running_statistics():
  model, variables = model_and_variables("cnn")
  images = random_batches()["b7"]
  logits = export.inference_fn("cnn", variables)(images)
  _assert_same_logits(np.asarray(logits), expected_logits(model, variables, images))  # 7: too few for a fraction
  shifted = {**variables, "batch_stats": jax.tree.map(lambda x: x + 0.5, variables["batch_stats"])}
  assert np.abs(np.asarray(logits) - expected_logits(model, shifted, images)).max() > 100 * ATOL


@pytest.mark.parametrize("name", ["mlp2", "cnn"])
def test_declared_signature_is_a_symbolic_batch_of_uint8_images(name):
  exported = export.export_inference(name, model_and_variables(name)[1])
  (images,), (logits,) = exported.in_avals, exported.out_avals
  assert images.dtype == jnp.uint8 and images.shape[1:] == (28, 28, 1)
  assert jax_export.is_symbolic_dim(images.shape[0]) and str(images.shape[0]) == "b"
  assert logits.dtype == jnp.float32 and logits.shape == (images.shape[0], 10)
  assert exported.platforms == export.DEFAULT_PLATFORMS


def test_cnn_exports_the_native_convolution_whatever_the_backend():
  variables = model_and_variables("cnn")[1]
  assert "stablehlo.convolution" in export.export_inference("cnn", variables).mlir_module()
  # An explicit choice is the caller's and is kept.
  im2col = models.build_model("cnn").clone(conv_impl="im2col")
  assert "stablehlo.convolution" not in export.export_inference(im2col, variables).mlir_module()


def test_several_platforms_cost_only_bytes():
  variables = model_and_variables("mlp2")[1]
  one = export.serialize(export.export_inference("mlp2", variables, platforms=("cpu",)))
  several = export.serialize(export.export_inference("mlp2", variables))
  assert 0 < len(several) - len(one) < 2_000


def test_write_artifact_replaces_atomically(tmp_path, monkeypatch):
  path = tmp_path / "model.bin"
  assert export.write_artifact(path, b"old") == 3

  def failing_replace(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr(os, "replace", failing_replace)
  with pytest.raises(OSError, match="disk full"):
    export.write_artifact(path, b"new contents")
  assert path.read_bytes() == b"old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_bad_requests_are_user_errors(monkeypatch):
  variables = model_and_variables("linear")[1]
  with pytest.raises(errors.UserError, match="not 'gpu'"):
    export.export_inference("linear", variables, platforms=("cpu", "gpu"))
  exported = export.export_inference("linear", variables, platforms=("cpu",))
  monkeypatch.setitem(sys.modules, "jax._src.export.serialization", None)  # as without flatbuffers
  with pytest.raises(errors.UserError, match="pip install flatbuffers"):
    export.serialize(exported)
  monkeypatch.setitem(sys.modules, "jax2onnx", None)
  with pytest.raises(errors.UserError, match=r"pip install 'jaxmnist\[onnx\]'"):
    export.export_onnx("linear", variables)


def _onnx_session(ort, onnx_bytes):
  session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
  (images_in,), (logits_out,) = session.get_inputs(), session.get_outputs()
  assert (images_in.name, images_in.type, images_in.shape) == ("images", "tensor(uint8)", ["B", 28, 28, 1])
  assert (logits_out.name, logits_out.type, logits_out.shape) == ("logits", "tensor(float)", ["B", 10])
  return session


def test_onnx_export_matches_model_apply_and_an_ensembles_combined_logits():
  # One test for the optional extra: a machine without it skips once, and jax2onnx's plugins import once.
  pytest.importorskip("jax2onnx", reason="the optional extra: pip install 'jaxmnist[onnx]'")
  ort = pytest.importorskip("onnxruntime", reason="the optional extra: pip install 'jaxmnist[onnx]'")
  for name in ("linear", "cnn"):
    model, variables = model_and_variables(name)
    session = _onnx_session(ort, export.export_onnx(name, variables))
    _assert_mostly_compared([_assert_same_logits(session.run(None, {"images": images})[0],
                                                 expected_logits(model, variables, images))
                             for images in random_batches().values()])
  members = [model_and_variables("cnn", seed)[1] for seed in (0, 1)]  # BatchNorm statistics per member
  model = models.build_model("cnn")
  trained = train_state.Trained(run_dir=None, config=dataclasses.replace(PRESETS["cnn"], seeds=(0, 1)), model=model,
                                variables=jax.tree.map(lambda *leaves: jnp.stack(leaves), *members), epoch=2,
                                checkpoint_line="", data={})
  session = _onnx_session(ort, export.export_onnx(export.run_model(trained, onnx=True), trained.variables))
  for images in random_batches().values():
    expected = np.log(np.mean([jax.nn.softmax(expected_logits(model, v, images)) for v in members], axis=0))
    np.testing.assert_allclose(session.run(None, {"images": images})[0], expected, rtol=1e-5, atol=ATOL)


def test_export_into_a_missing_folder_is_one_paragraph_before_the_restore(tiny_cli_run, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["export", str(tiny_cli_run.run_dir), f"--out={tmp_path / 'missing' / 'model.jaxexport'}"])
  stderr = capsys.readouterr().err
  assert exit_info.value.code == 2 and "does not exist" in stderr and "Traceback" not in stderr
  assert not (tmp_path / "missing").exists()
