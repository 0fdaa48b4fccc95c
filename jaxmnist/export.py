"""Export a trained model as one self-contained file: uint8 images in, float32 logits out.

The file is a serialized `jax.export.Exported`: the model in eval mode with its parameters baked in as
constants, its batch size symbolic, lowered for CPU, CUDA GPUs and TPUs at once. Running it needs jax and
flatbuffers, not jaxmnist or flax. A model named by a string uses XLA's native convolution: one StableHLO
convolution, which every backend (and ONNX's Conv) runs well; im2col only pays off inside training's scan.

Synopsis:
  export.write_artifact("cnn.jaxexport", export.export_inference("cnn", steps.eval_variables(state)))

  # Anywhere with `pip install jax flatbuffers` (this jax release or one up to ~6 months newer):
  with open("cnn.jaxexport", "rb") as f:
    exp = jax.export.deserialize(bytearray(f.read()))
  logits_Bx10 = exp.call(images_Bx28x28x1)  # np.uint8 pixels 0..255, any batch size B >= 1

  onnx_bytes = export.export_onnx("cnn", variables)  # optional: pip install 'jaxmnist[onnx]'
"""

from pathlib import Path
from typing import Callable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import export

from jaxmnist import ensemble, errors, models, report, runs, steps, train_state
from jaxmnist.configs import IMAGE_SHAPE

# One file for every backend: lowering for all three costs a few hundred bytes and nothing at run time.
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
ONNX_OPSET = 23  # jax2onnx 0.17's default; onnxruntime >= 1.24 runs it

ModelSpec = Union[str, nn.Module, Callable[..., jax.Array]]  # a name in models.MODELS, a module, an apply fn


def inference_fn(model: ModelSpec, variables) -> Callable[[jax.Array], jax.Array]:
  """uint8 images [B,28,28,1] -> float32 logits [B,10] in eval mode, the variables closed over."""
  if isinstance(model, str):
    model = models.build_model(model, conv_impl="xla")
  apply_fn = model.apply if isinstance(model, nn.Module) else model
  # Host copies: constants baked from arrays committed to a device (or sharded) would tie the export to that placement.
  variables = jax.device_get(variables)
  def logits_of(images_BxHxWxC: jax.Array) -> jax.Array:
    return apply_fn(variables, steps.images_to_inputs(images_BxHxWxC), train=False)
  return logits_of


def export_inference(model: ModelSpec, variables, platforms: Sequence[str] = DEFAULT_PLATFORMS) -> export.Exported:
  """Eval-mode inference, `uint8[b,28,28,1]` -> `float32[b,10]`, for `platforms` in one file. A module or an
  `apply_fn(variables, inputs, train=False)` given as `model` is used as given (its convolution is the caller's)."""
  if not platforms or set(platforms) - set(KNOWN_PLATFORMS):
    raise errors.UserError(f"Cannot export for platforms {list(platforms)}; choose from "
                           f"{', '.join(KNOWN_PLATFORMS)} ('cuda' and 'rocm', not 'gpu').")
  images_spec = jax.ShapeDtypeStruct((*export.symbolic_shape("b"), *IMAGE_SHAPE), jnp.uint8)
  return export.export(jax.jit(inference_fn(model, variables)), platforms=tuple(platforms))(images_spec)


def serialize(exported: export.Exported) -> bytes:
  """The artifact's bytes (StableHLO and the calling convention, weights included)."""
  try:
    return bytes(exported.serialize())
  except ImportError as e:
    raise errors.UserError("jax.export reads and writes artifacts with the flatbuffers package, which jax does "
                           "not install: pip install flatbuffers") from e


def write_artifact(path, exported: Union[export.Exported, bytes]) -> int:
  """Writes an `Exported` (or ready bytes, as from `export_onnx`) atomically, so that a reader never sees half
  a file and a failed write leaves an older artifact in place; returns the size."""
  blob = exported if isinstance(exported, (bytes, bytearray)) else serialize(exported)
  report.write_replacing(path, lambda partial: partial.write_bytes(blob))
  return len(blob)


def export_onnx(model: ModelSpec, variables, opset: int = ONNX_OPSET) -> bytes:
  """The same inference as ONNX: input "images" uint8 [B,28,28,1], output "logits" float32 [B,10]. jax2onnx is
  an optional extra, imported here: its first conversion imports all its plugins (half a minute on a small CPU)."""
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError("ONNX export needs jax2onnx (and onnxruntime to run the result): "
                           "pip install 'jaxmnist[onnx]'") from e
  images_spec = jax.ShapeDtypeStruct(("B", *IMAGE_SHAPE), jnp.uint8)
  proto = jax2onnx.to_onnx(inference_fn(model, variables), [images_spec], model_name="jaxmnist", opset=opset,
                           input_names=["images"], output_names=["logits"])
  return proto.SerializeToString()


def run_model(trained: train_state.Trained, onnx: bool = False) -> ModelSpec:
  """What a run exports: its model, or a function of every member that returns the ensemble's logits (for
  ONNX the members are applied one by one: jax2onnx's BatchNorm cannot be vmapped)."""
  return trained.config.model if not trained.num_members else ensemble.ensemble_apply(
      models.build_model(trained.config.model, conv_impl="xla").apply, unrolled=onnx)


def main(args) -> None:
  """`jaxmnist export RUN_DIR [--out PATH] [--onnx]`: the run's newest checkpoint as an artifact."""
  out = Path(args.out) if args.out else Path(args.run_dir) / "model.jaxexport"
  if not out.parent.is_dir():  # said before the restore
    raise errors.UserError(f"--out {out}: the folder {out.parent} does not exist. Create it or choose another path.")
  member = runs.chosen_member(args.run_dir, runs.read_config(args.run_dir), args.member)
  trained = train_state.load_trained(args.run_dir, member=member)
  what = f"an ensemble of {trained.num_members} x " * bool(trained.num_members) + trained.config.model
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
