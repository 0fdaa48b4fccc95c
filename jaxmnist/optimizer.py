"""The optax optimizer and learning-rate schedule that a Config asks for.

Synopsis:
  from jaxmnist import optimizer
  tx = optimizer.make_optimizer(config, optimizer.steps_per_epoch(config, num_train))
  state = steps.create_train_state(variables, tx)

The post's presets get plain `optax.sgd(lr)`, torch.optim.SGD's update without momentum or decay;
the recipes beyond the post add Adam(W), momentum, weight decay and one-cycle or cosine schedules.
"""

import dataclasses

import jax.numpy as jnp
import optax

from jaxmnist.configs import Config


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


def learning_rate_schedule(config: Config, total_steps: int, peak=None) -> optax.Schedule:
  """config.schedule's rate, peaking at `peak` (default config.learning_rate; an array for a sweep's member)."""
  peak = config.learning_rate if peak is None else peak
  if config.schedule == "onecycle_torch":
    return torch_onecycle_schedule(total_steps, peak)
  if config.schedule == "onecycle":
    # fastai's fit_one_cycle defaults: warm up over the first 25% from lr/25, anneal to lr/1e5.
    return optax.cosine_onecycle_schedule(total_steps, peak, pct_start=0.25, div_factor=25.0, final_div_factor=1e5)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(peak, total_steps)
  return optax.constant_schedule(peak)


OPTIMIZER_FIELDS = ("learning_rate", "momentum", "weight_decay")  # the sweepable fields the optimizer reads


def _optimizer(config: Config, steps_per_epoch_: int, values: dict) -> optax.GradientTransformation:
  """config's optimizer, with the numbers in `values` (a sweep member's arrays) in place of config's. Which
  transformations it chains depends on config alone, so every member of a sweep has the same state."""
  lr, momentum, weight_decay = (values.get(name, getattr(config, name)) for name in OPTIMIZER_FIELDS)
  if config.schedule == "constant" and config.optimizer == "sgd" and not config.momentum:
    rate = lr  # a float, exactly the post's optimizer
  else:
    rate = learning_rate_schedule(config, config.epochs * steps_per_epoch_, lr)
  betas = {"b1": config.adam_b1, "b2": config.adam_b2}
  if config.optimizer == "adamw":
    return optax.adamw(rate, weight_decay=weight_decay, **betas)
  if config.optimizer == "adam":
    core = optax.adam(rate, **betas)
  else:
    core = optax.sgd(rate, momentum=momentum if config.momentum else None, nesterov=config.nesterov)
  return optax.chain(optax.add_decayed_weights(weight_decay), core) if config.weight_decay else core


def make_optimizer(config: Config, steps_per_epoch_: int) -> optax.GradientTransformation:
  """The post's presets get optax.sgd(lr): torch.optim.SGD without momentum or decay. A sweep's is
  optax.inject_hyperparams of the same: its swept numbers are arrays in the optimizer state (`with_values` sets a
  member's), so the members share one compiled program. Its structure is that of the sweep's largest values: a
  momentum or decay of 0 in some members is the same update as none (a trace decayed by 0, a decay of 0)."""
  swept = [name for name, _ in config.sweep if name in OPTIMIZER_FIELDS]
  if not swept:
    return _optimizer(config, steps_per_epoch_, {})
  largest = dataclasses.replace(config, **{name: max(values) for name, values in config.sweep})
  return optax.inject_hyperparams(lambda **values: _optimizer(largest, steps_per_epoch_, values))(
      **{name: getattr(config, name) for name in swept})


def with_values(opt_state, values: dict):
  """A sweep member's optimizer state: its own swept numbers (OPTIMIZER_FIELDS' in `values`) in place of the
  first member's; the state as it is where nothing the optimizer reads is swept."""
  mine = {name: value for name, value in values.items() if name in OPTIMIZER_FIELDS}
  return opt_state._replace(hyperparams={**opt_state.hyperparams, **mine}) if mine else opt_state
