"""The functional core: a train state pytree, the loss, per-example accuracy, and jit-able steps.

Every function here is pure; `jaxmnist.train` jits them where it uses them, so tests can call them
plain. A whole epoch of steps is one `lax.scan`, so the host is involved once per epoch.
"""

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

ApplyFn = Callable[..., jax.Array]


class TrainState(NamedTuple):
  """Everything that changes during training; a plain pytree."""

  step: jax.Array  # int32 scalar: optimizer updates so far
  params: Any
  opt_state: Any


def create_train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def images_to_inputs(images_BxHxWxC: jax.Array) -> jax.Array:
  """uint8 pixels to float32 in [0, 1], as the post's `.float()/255`."""
  return images_BxHxWxC.astype(jnp.float32) / 255.0


def cross_entropy_loss(logits_BxC: jax.Array, labels_B: jax.Array, weights_B: jax.Array) -> jax.Array:
  """Softmax cross-entropy averaged over the examples whose weight is 1 (nn.CrossEntropyLoss's mean)."""
  losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)
  return jnp.sum(losses_B * weights_B) / jnp.maximum(jnp.sum(weights_B), 1.0)


def is_correct(logits_C: jax.Array, label: jax.Array) -> jax.Array:
  """One example: does the highest logit name the label? (The post's sigmoid first changes nothing.)"""
  return jnp.argmax(logits_C) == label


batch_is_correct = jax.vmap(is_correct)


def _check_batch(images_BxHxWxC, labels_B, weights_B) -> None:
  chex.assert_rank(images_BxHxWxC, 4)
  chex.assert_type(images_BxHxWxC, jnp.uint8)
  chex.assert_shape(labels_B, (images_BxHxWxC.shape[0],))  # flat [B] labels, not [B, 1]
  chex.assert_type(labels_B, jnp.int32)
  chex.assert_shape(weights_B, labels_B.shape)


def train_step(state: TrainState, images_BxHxWxC, labels_B, weights_B, *, apply_fn: ApplyFn,
               optimizer: optax.GradientTransformation):
  """One SGD step on a batch; examples of weight 0 are padding and count for nothing.

  Returns:
    The new state and sums over the batch: loss_sum, correct, count.
  """
  _check_batch(images_BxHxWxC, labels_B, weights_B)
  inputs = images_to_inputs(images_BxHxWxC)

  def loss_fn(params):
    logits_BxC = apply_fn({"params": params}, inputs)
    return cross_entropy_loss(logits_BxC, labels_B, weights_B), logits_BxC

  (loss, logits_BxC), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
  count = jnp.sum(weights_B)
  metrics = {
      "loss_sum": loss * count,
      "correct": jnp.sum(batch_is_correct(logits_BxC, labels_B) * weights_B),
      "count": count,
  }
  return new_state, metrics


def padded_batches(indices_N: jax.Array, batch_size: int):
  """Cuts indices into [num_batches, batch_size], padding the last batch with weight-0 examples.

  The padding keeps every batch the same shape (no recompilation for the short last batch) while
  the weights make the last step average over its real examples only, as PyTorch's DataLoader does.
  """
  num_examples = indices_N.shape[0]
  num_batches = -(-num_examples // batch_size)
  pad = num_batches * batch_size - num_examples
  padded = jnp.concatenate([indices_N, jnp.zeros((pad,), indices_N.dtype)])
  weights = (jnp.arange(num_batches * batch_size) < num_examples).astype(jnp.float32)
  return padded.reshape(num_batches, batch_size), weights.reshape(num_batches, batch_size)


def shuffled_batches(key, train_indices_T: jax.Array, batch_size: int):
  """This epoch's batches: a seeded permutation of the training indices, cut by `padded_batches`."""
  return padded_batches(jax.random.permutation(key, train_indices_T), batch_size)


def train_epoch(state: TrainState, images_NxHxWxC, labels_N, train_indices_T, key, *, batch_size: int,
                apply_fn: ApplyFn, optimizer: optax.GradientTransformation):
  """One pass over `train_indices_T` in a seeded random order, all steps in one `lax.scan`.

  Returns:
    The new state and the epoch's sums: loss_sum, correct, count.
  """
  images_NxHxWxC, labels_N = jnp.asarray(images_NxHxWxC), jnp.asarray(labels_N)
  batch_indices, batch_weights = shuffled_batches(key, train_indices_T, batch_size)

  def body(state, batch):
    indices_B, weights_B = batch
    return train_step(state, images_NxHxWxC[indices_B], labels_N[indices_B], weights_B,
                      apply_fn=apply_fn, optimizer=optimizer)

  state, metrics = jax.lax.scan(body, state, (batch_indices, batch_weights))
  return state, jax.tree.map(jnp.sum, metrics)


def train_step_at(state: TrainState, sums: dict, images_NxHxWxC, labels_N, batch_indices, batch_weights,
                  i, *, apply_fn: ApplyFn, optimizer: optax.GradientTransformation):
  """Step `i` of an epoch cut by `shuffled_batches`, adding its metrics to `sums`.

  The per-batch form of `train_epoch`, for a Python loop over one jitted step: the batch is picked
  and gathered on the device, and the metrics stay there until the epoch ends.
  """
  state, metrics = train_step(state, images_NxHxWxC[batch_indices[i]], labels_N[batch_indices[i]],
                              batch_weights[i], apply_fn=apply_fn, optimizer=optimizer)
  return state, jax.tree.map(jnp.add, sums, metrics)


def zero_sums() -> dict:
  return {"loss_sum": jnp.zeros(()), "correct": jnp.zeros(()), "count": jnp.zeros(())}


def count_correct(params, images_NxHxWxC, labels_N, indices_M, *, batch_size: int,
                  apply_fn: ApplyFn) -> jax.Array:
  """How many of the examples `indices_M` the model classifies correctly (an int32 count)."""
  images_NxHxWxC, labels_N = jnp.asarray(images_NxHxWxC), jnp.asarray(labels_N)
  batch_indices, batch_weights = padded_batches(indices_M, batch_size)

  def body(total, batch):
    indices_B, weights_B = batch
    logits_BxC = apply_fn({"params": params}, images_to_inputs(images_NxHxWxC[indices_B]))
    correct_B = batch_is_correct(logits_BxC, labels_N[indices_B]) & (weights_B > 0)
    return total + jnp.sum(correct_B, dtype=jnp.int32), None

  total, _ = jax.lax.scan(body, jnp.zeros((), jnp.int32), (batch_indices, batch_weights))
  return total
