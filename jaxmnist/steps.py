"""The functional core: a train state pytree, the loss, per-example accuracy, and jit-able steps.

Every function here is pure; `jaxmnist.programs` jits them where it uses them, so tests can call them
plain. A whole epoch of steps is one `lax.scan`, so the host is involved once per epoch.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import optax

ApplyFn = Callable[..., jax.Array]
AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]  # (key, inputs_BxHxWxC) -> inputs


class TrainState(NamedTuple):
  """Everything that changes during training; a plain pytree."""

  step: jax.Array  # int32 scalar: optimizer updates so far
  params: Any
  opt_state: Any
  batch_stats: Any = None  # BatchNorm running statistics; {} for models without BatchNorm


def create_train_state(variables, optimizer: optax.GradientTransformation) -> TrainState:
  """From `model.init`'s variables (or bare params, for models without BatchNorm)."""
  params = variables["params"] if "params" in variables else variables
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                    batch_stats=variables.get("batch_stats", {}) if "params" in variables else {})


def eval_variables(state: TrainState) -> dict:
  """What `model.apply` needs in eval mode: the parameters and, if any, the running statistics."""
  return {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}


def images_to_inputs(images_BxHxWxC: jax.Array) -> jax.Array:
  """uint8 pixels to float32 in [0, 1], as the post's `.float()/255`."""
  return images_BxHxWxC.astype(jnp.float32) / 255.0


def cross_entropy_loss(logits_BxC: jax.Array, labels_B: jax.Array, weights_B: jax.Array,
                       label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy averaged over the examples whose weight is 1 (nn.CrossEntropyLoss's mean).

  With label_smoothing a > 0 the target puts 1 - a on the label and a/C on every class (optax's); an array
  (a sweep member's) always takes that path, where 0 gives the one-hot target.
  """
  if isinstance(label_smoothing, jax.Array) or label_smoothing:
    targets_BxC = optax.smooth_labels(jax.nn.one_hot(labels_B, logits_BxC.shape[-1]), label_smoothing)
    losses_B = optax.softmax_cross_entropy(logits_BxC, targets_BxC)
  else:
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


def train_step(state: TrainState, images_BxHxWxC, labels_B, weights_B, key=None, *, apply_fn: ApplyFn,
               optimizer: optax.GradientTransformation, label_smoothing: float = 0.0,
               augment: Optional[AugmentFn] = None):
  """One optimizer step on a batch; examples of weight 0 are padding and count for nothing. `key` drives
  augmentation and dropout (models without either ignore it).

  Returns:
    The new state and sums over the batch: loss_sum, correct, count.
  """
  _check_batch(images_BxHxWxC, labels_B, weights_B)
  inputs = images_to_inputs(images_BxHxWxC)
  key = jax.random.key(0) if key is None else key
  augment_key, dropout_key = jax.random.split(key)
  if augment is not None:
    inputs = augment(augment_key, inputs)
  has_stats = bool(state.batch_stats)

  def loss_fn(params):
    variables = {"params": params, **({"batch_stats": state.batch_stats} if has_stats else {})}
    out = apply_fn(variables, inputs, train=True, rngs={"dropout": dropout_key},
                   mutable=["batch_stats"] if has_stats else False)
    logits_BxC, updates = out if has_stats else (out, {})
    loss = cross_entropy_loss(logits_BxC, labels_B, weights_B, label_smoothing)
    return loss, (logits_BxC, updates.get("batch_stats", state.batch_stats))

  (loss, (logits_BxC, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state, batch_stats)
  count = jnp.sum(weights_B)
  return new_state, {"loss_sum": loss * count, "correct": jnp.sum(batch_is_correct(logits_BxC, labels_B) * weights_B),
                     "count": count}


def padded_batches(indices_N: jax.Array, batch_size: int):
  """Cuts indices into [num_batches, batch_size], padding the last batch with weight-0 examples.

  The padding keeps every batch the same shape (no recompilation for the short last batch) while
  the weights make the last step average over its real examples only, as PyTorch's DataLoader does.
  Padding repeats the first indices, so BatchNorm sees real images there, not one image many times.
  """
  num_examples = indices_N.shape[0]
  num_batches = -(-num_examples // batch_size)
  positions = jnp.arange(num_batches * batch_size)
  padded = indices_N[positions % num_examples]
  weights = (positions < num_examples).astype(jnp.float32)
  return padded.reshape(num_batches, batch_size), weights.reshape(num_batches, batch_size)


def epoch_key(seed: int, epoch) -> jax.Array:
  """The shuffling key of an epoch: derived inside the jit from plain integers, so every process of
  a multi-host job computes the same one without transferring keys."""
  return jax.random.fold_in(jax.random.split(jax.random.key(seed))[1], epoch)


def init_key(seed: int) -> jax.Array:
  return jax.random.split(jax.random.key(seed))[0]


def shuffled_batches(key, train_indices_T: jax.Array, batch_size: int):
  """This epoch's batches: a seeded permutation of the training indices, cut by `padded_batches`."""
  return padded_batches(jax.random.permutation(key, train_indices_T), batch_size)


def _constrain(tree, sharding):
  return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)


def gather_batches(images_NxHxWxC, labels_N, batch_indices_SxB, batch_weights_SxB, sharding=None):
  """Gathers [steps, batch] examples at once, split along the batch axis when `sharding` says so: with the
  training set sharded over devices, the epoch's only data movement (each step then reads its device's slice)."""
  images_NxHxWxC, labels_N = jnp.asarray(images_NxHxWxC), jnp.asarray(labels_N)
  return _constrain((images_NxHxWxC[batch_indices_SxB], labels_N[batch_indices_SxB], batch_weights_SxB), sharding)


def step_keys(epoch_key_: jax.Array, num_steps: int) -> jax.Array:
  """One key per step of the epoch, for augmentation and dropout (independent of the shuffle)."""
  return jax.random.split(jax.random.fold_in(epoch_key_, 1), num_steps)


def train_epoch(state: TrainState, images_NxHxWxC, labels_N, train_indices_T, key, *, batch_size: int,
                apply_fn: ApplyFn, optimizer: optax.GradientTransformation, sharding=None, **step_options):
  """One pass over `train_indices_T` in a seeded random order, all steps in one `lax.scan`. With `sharding`
  (several devices) the batches are gathered once and split over them; else each step gathers its own (no epoch copy).

  Returns:
    The new state and the epoch's sums: loss_sum, correct, count.
  """
  images_NxHxWxC, labels_N = jnp.asarray(images_NxHxWxC), jnp.asarray(labels_N)
  batch_indices, batch_weights = shuffled_batches(key, train_indices_T, batch_size)
  keys = step_keys(key, batch_indices.shape[0])
  step = functools.partial(train_step, apply_fn=apply_fn, optimizer=optimizer, **step_options)
  if sharding is None:
    def body(state, xs):
      indices_B, weights_B, step_key = xs
      return step(state, images_NxHxWxC[indices_B], labels_N[indices_B], weights_B, step_key)

    state, metrics = jax.lax.scan(body, state, (batch_indices, batch_weights, keys))
  else:
    batches = gather_batches(images_NxHxWxC, labels_N, batch_indices, batch_weights, sharding)
    state, metrics = jax.lax.scan(lambda state, xs: step(state, *xs[0], xs[1]), state, (batches, keys))
  return state, jax.tree.map(jnp.sum, metrics)


def eval_logits(variables, images_NxHxWxC, indices_M, *, batch_size: int, apply_fn: ApplyFn,
                sharding=None) -> jax.Array:
  """Eval-mode logits [M, C] of the examples `indices_M`, a batch at a time in one scan, padded as `padded_batches`
  pads; with `sharding` (several devices) gathered at once and split over the devices, else gathered step by step."""
  images_NxHxWxC = jnp.asarray(images_NxHxWxC)
  batch_indices, _ = padded_batches(indices_M, batch_size)

  def logits_of(images_BxHxWxC):
    return apply_fn(variables, images_to_inputs(images_BxHxWxC), train=False)

  if sharding is None:
    _, logits_SxBxC = jax.lax.scan(lambda _, indices_B: (None, logits_of(images_NxHxWxC[indices_B])), None,
                                   batch_indices)
  else:
    batches = _constrain(images_NxHxWxC[batch_indices], sharding)
    _, logits_SxBxC = jax.lax.scan(lambda _, images_BxHxWxC: (None, logits_of(images_BxHxWxC)), None, batches)
  return logits_SxBxC.reshape(-1, logits_SxBxC.shape[-1])[:indices_M.shape[0]]
