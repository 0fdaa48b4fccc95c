"""Export a trained model as one self-contained file: uint8 images in, float32 logits out.

The file is a serialized `jax.export.Exported`: the model in eval mode (BatchNorm's running
statistics, no dropout) with its parameters baked in as constants, its batch size symbolic, lowered
for CPU, CUDA GPUs and TPUs at once. Running it needs jax and flatbuffers, not jaxmnist or flax.

Synopsis:
  exported = export.export_inference("cnn", steps.eval_variables(state))
  export.write_artifact("cnn.jaxexport", exported)

  # Anywhere with `pip install jax flatbuffers` (this jax release or one up to ~6 months newer):
  import numpy as np
  from jax import export
  with open("cnn.jaxexport", "rb") as f:
    exp = export.deserialize(bytearray(f.read()))
  logits_Bx10 = exp.call(images_Bx28x28x1)  # np.uint8 pixels 0..255, any batch size B >= 1
  digits_B = np.asarray(logits_Bx10).argmax(axis=-1)

  onnx_bytes = export.export_onnx("cnn", variables)  # optional: pip install 'jaxmnist[onnx]'
"""

from pathlib import Path
from typing import Callable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import export

from jaxmnist import ensemble, errors, models, report, steps, train_state

IMAGE_SHAPE = (28, 28, 1)
# One file for every backend: lowering for all three costs a few hundred bytes and nothing at run time.
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
ONNX_OPSET = 23  # jax2onnx 0.17's default; onnxruntime >= 1.24 runs it

ModelSpec = Union[str, nn.Module, Callable[..., jax.Array]]  # a name in models.MODELS, a module, an apply fn

_FLATBUFFERS_HINT = ("jax.export reads and writes artifacts with the flatbuffers package, which jax does "
                     "not install: pip install flatbuffers")
_ONNX_HINT = "ONNX export needs jax2onnx (and onnxruntime to run the result): pip install 'jaxmnist[onnx]'"


def portable_module(model: Union[str, nn.Module]) -> nn.Module:
  """The module to export, with XLA's native convolution wherever the choice was left to the backend.

  A CNN left at `conv_impl=None` picks im2col when traced on CPU, so the exporting machine, not the
  one that runs the file, would decide. The native convolution lowers to one StableHLO convolution
  that every backend (and ONNX's Conv) runs well; im2col only pays off inside training's `lax.scan`.
  """
  if isinstance(model, str):
    if model not in models.MODELS:
      raise errors.UserError(f"Unknown model {model!r}; choose one of {', '.join(models.MODELS)}.")
    model = models.build_model(model)
  if isinstance(model, (models.CNN, models.FastCNN)) and model.conv_impl is None:
    model = model.clone(conv_impl="xla")
  return model


def inference_fn(model: ModelSpec, variables) -> Callable[[jax.Array], jax.Array]:
  """uint8 images [B,28,28,1] -> float32 logits [B,10] in eval mode, the variables closed over."""
  apply_fn = model if callable(model) and not isinstance(model, nn.Module) else portable_module(model).apply
  variables = variables if "params" in variables else {"params": variables}  # bare params, as steps accepts
  # Host copies: constants baked from arrays committed to some device (or sharded over a mesh) would tie
  # the export to that placement.
  variables = jax.device_get(variables)

  def logits_of(images_BxHxWxC: jax.Array) -> jax.Array:
    return apply_fn(variables, steps.images_to_inputs(images_BxHxWxC), train=False)

  return logits_of


def _check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
  unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
  if unknown or not platforms:
    raise errors.UserError(f"Cannot export for platforms {list(platforms)}; choose from "
                           f"{', '.join(KNOWN_PLATFORMS)} ('cuda' and 'rocm', not 'gpu').")
  return tuple(platforms)


def export_inference(model: ModelSpec, variables,
                     platforms: Sequence[str] = DEFAULT_PLATFORMS) -> export.Exported:
  """Exports eval-mode inference with a symbolic batch size.

  Args:
    model: a name in `models.MODELS`, a flax module, or an apply function called as
      `apply_fn(variables, inputs, train=False)` (used as given: its convolution is the caller's).
    variables: `model.init`'s or `steps.eval_variables(state)`: params and, for CNNs, batch_stats.
    platforms: what the artifact can run on; several give one file for all of them.

  Returns:
    The `Exported`: in_avals `uint8[b,28,28,1]`, out_avals `float32[b,10]`.
  """
  batch, = export.symbolic_shape("b")
  images_spec = jax.ShapeDtypeStruct((batch, *IMAGE_SHAPE), jnp.uint8)
  return export.export(jax.jit(inference_fn(model, variables)),
                       platforms=_check_platforms(platforms))(images_spec)


def serialize(exported: export.Exported) -> bytes:
  """The artifact's bytes (StableHLO and the calling convention, weights included)."""
  try:
    return bytes(exported.serialize())
  except ImportError as e:
    raise errors.UserError(_FLATBUFFERS_HINT) from e


def write_artifact(path, exported: Union[export.Exported, bytes]) -> int:
  """Writes an `Exported` (or ready bytes, as from `export_onnx`) atomically; returns the size.

  A temporary name in the same folder, then os.replace: a reader, or a server polling the path, never
  sees half a file, and a failed write leaves an older artifact in place.
  """
  blob = exported if isinstance(exported, (bytes, bytearray)) else serialize(exported)
  report.write_replacing(path, lambda partial: partial.write_bytes(blob))
  return len(blob)


def read_artifact(path) -> export.Exported:
  """Loads an artifact written by `write_artifact`; `.call(images_uint8)` runs it."""
  try:
    return export.deserialize(bytearray(Path(path).read_bytes()))
  except ImportError as e:
    raise errors.UserError(_FLATBUFFERS_HINT) from e


def export_onnx(model: ModelSpec, variables, opset: int = ONNX_OPSET) -> bytes:
  """The same inference as ONNX: input "images" uint8 [B,28,28,1], output "logits" float32 [B,10].

  jax2onnx is imported here, not at the top: it is an optional extra, and its first conversion in a
  process imports all its plugins (about half a minute on a small CPU).
  """
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(_ONNX_HINT) from e
  images_spec = jax.ShapeDtypeStruct(("B", *IMAGE_SHAPE), jnp.uint8)
  proto = jax2onnx.to_onnx(inference_fn(model, variables), [images_spec], model_name="jaxmnist", opset=opset,
                           input_names=["images"], output_names=["logits"])
  return proto.SerializeToString()


def run_model(trained: train_state.Trained, onnx: bool = False) -> ModelSpec:
  """What a run exports: its model, or for an ensemble every member in one function that returns the
  ensemble's logits (the log of the members' mean probabilities, jaxmnist.ensemble). For ONNX the members
  are applied one by one: jax2onnx's BatchNorm cannot be vmapped."""
  if not trained.seeds:
    return trained.config.model
  return ensemble.ensemble_apply(portable_module(trained.config.model).apply, unrolled=onnx)


def main(args) -> None:
  """`jaxmnist export RUN_DIR [--out PATH] [--onnx]`: the run's newest checkpoint as an artifact."""
  trained = train_state.load_trained(args.run_dir)
  out = Path(args.out) if args.out else trained.run_dir / "model.jaxexport"
  if not out.parent.is_dir():
    raise errors.UserError(f"--out {out}: the folder {out.parent} does not exist. Create it or choose another path.")
  what = f"an ensemble of {len(trained.seeds)} x {trained.config.model}" if trained.seeds else trained.config.model
  size = _write_or_explain(out, export_inference(run_model(trained), trained.variables))
  print(f"exported {what} ({trained.checkpoint_line}) to {out}: {size:,} bytes, "
        f"uint8 [B,28,28,1] -> float32 logits [B,10], for {', '.join(DEFAULT_PLATFORMS)}")
  if args.onnx:
    onnx_path = out.with_suffix(".onnx")
    size = _write_or_explain(onnx_path, export_onnx(run_model(trained, onnx=True), trained.variables))
    print(f"exported {what} as ONNX (opset {ONNX_OPSET}) to {onnx_path}: {size:,} bytes")


def _write_or_explain(path: Path, exported) -> int:
  try:
    return write_artifact(path, exported)
  except OSError as e:  # a full disk, a read-only folder, a quota
    raise errors.WriteFailed(f"Could not write {path}: {errors.why_not_written(e)}. The run is unchanged, and an "
                             f"older artifact at that path is kept as it was. Make room (or make the folder "
                             f"writable), or choose another --out, and export again.") from e
