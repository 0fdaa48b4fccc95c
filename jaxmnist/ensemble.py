"""Many models as one: the members of an ensemble, stacked along a leading axis and mapped over together.

Synopsis:
  jaxmnist train --model=cnn_fast --seeds=10        # ten members, one compiled program
  logits_MxBxC = ensemble.member_logits(model.apply, variables_M, inputs_BxHxWxC)
  logits_BxC = ensemble.combine(logits_MxBxC)       # the ensemble: the mean of the members' probabilities
  apply = ensemble.ensemble_apply(model.apply)      # apply(variables_M, inputs, train=False) -> logits

A stacked train state is the members' TrainStates with one more leading axis, so the epoch, the
evaluation and the checkpoint are the single model's, mapped over the members (`over_members`: vmapped
on a GPU or TPU, one member after another on a CPU, in one compiled program either way). Every member
draws its split, its initialisation, its shuffling, dropout and augmentation from its own seed exactly
as `--seed=s` does alone; the members only share the compiled program and the data on the device.

An ensemble's logits are log(mean_k softmax(logits_k)): their softmax is the mean of the members'
probabilities, so predict, serve, evaluate and export treat an ensemble as one model.
"""

import jax
import jax.numpy as jnp


def over_members(fn, in_axes, at_once: int | None = None):
  """`fn` mapped over the members: the arguments whose `in_axes` entry is 0 carry a leading member axis.

  at_once=None: `jax.vmap`, every member in the same operations (a GPU or TPU, which one small model leaves nearly
  idle; members spread over devices). at_once=k: `jax.lax.map`, k members vmapped at a time, the groups in turn (a
  CPU, whose cores one model already fills: vmapped members only make bigger operations, no faster per member).
  """
  if at_once is None:
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    axes = (in_axes,) * len(args) if isinstance(in_axes, int) else in_axes

    def one(member_args):
      given = iter(member_args)
      return fn(*(next(given) if axis == 0 else arg for arg, axis in zip(args, axes)))
    member_args = tuple(arg for arg, axis in zip(args, axes) if axis == 0)
    return jax.lax.map(one, member_args, batch_size=at_once if at_once > 1 else None)
  return mapped


def member_logits(apply_fn, variables_M, inputs_BxHxWxC: jax.Array, unrolled: bool = False) -> jax.Array:
  """Eval-mode logits [M, B, C] of every member for the same inputs. `unrolled`: one call per member instead of
  `jax.vmap`, the same numbers, for converters whose own primitives have no batching rule (jax2onnx's BatchNorm)."""
  if unrolled:
    num_members = jax.tree.leaves(variables_M)[0].shape[0]
    return jnp.stack([apply_fn(member(variables_M, k), inputs_BxHxWxC, train=False) for k in range(num_members)])
  return jax.vmap(lambda variables: apply_fn(variables, inputs_BxHxWxC, train=False))(variables_M)


def combine(member_logits_MxBxC: jax.Array) -> jax.Array:
  """The ensemble's logits [B, C]: the log of the members' mean probabilities (computed in log space)."""
  log_probabilities = jax.nn.log_softmax(member_logits_MxBxC, axis=-1)
  return jax.nn.logsumexp(log_probabilities, axis=0) - jnp.log(member_logits_MxBxC.shape[0])


def ensemble_apply(apply_fn, unrolled: bool = False):
  """`apply_fn` for stacked variables: `(variables_M, inputs, train=False) -> the ensemble's logits [B, C]`."""
  def apply(variables_M, inputs_BxHxWxC, train: bool = False):
    if train:
      raise ValueError("an ensemble is applied in eval mode only; each member trains under vmap")
    return combine(member_logits(apply_fn, variables_M, inputs_BxHxWxC, unrolled))
  return apply


def members_agreeing(member_logits_MxBxC, ensemble_logits_BxC):
  """How many members [B] pick the ensemble's class (numpy or jax arrays)."""
  return (member_logits_MxBxC.argmax(-1) == ensemble_logits_BxC.argmax(-1)[None]).sum(0)


def member(tree, k: int):
  """Member k's slice of a stacked pytree."""
  return jax.tree.map(lambda leaf: leaf[k], tree)
