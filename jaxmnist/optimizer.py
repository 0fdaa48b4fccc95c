"""The optax optimizer and learning-rate schedule that a Config asks for.

Synopsis:
  from jaxmnist import optimizer
  tx = optimizer.make_optimizer(config, optimizer.steps_per_epoch(config, num_train))
  state = steps.create_train_state(variables, tx)

The post's presets get plain `optax.sgd(lr)`, torch.optim.SGD's update without momentum or decay;
the recipes beyond the post add Adam(W), momentum, weight decay and one-cycle or cosine schedules.
"""

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
