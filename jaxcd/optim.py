"""Optimizers and learning-rate schedules from a config's `optim` block."""
import optax

from jaxcd.errors import ConfigError


def make_schedule(o, num_steps: int) -> optax.Schedule:
  decay_steps = max(num_steps - o.warmup_steps, 1)
  if o.schedule == "constant":
    sched = optax.constant_schedule(o.lr)
  elif o.schedule in ("poly", "linear"):
    power = o.poly_power if o.schedule == "poly" else 1.0
    sched = optax.polynomial_schedule(o.lr, 0.0, power, decay_steps)
  elif o.schedule == "cosine":
    sched = optax.cosine_decay_schedule(o.lr, decay_steps)
  else:
    raise ConfigError(f"config.optim.schedule: unknown schedule {o.schedule!r}")
  if o.warmup_steps:
    warm = optax.linear_schedule(0.0, o.lr, o.warmup_steps)
    sched = optax.join_schedules([warm, sched], [o.warmup_steps])
  return sched


def make_optimizer(o, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  sched = make_schedule(o, num_steps)
  parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip else []
  if o.name == "adamw":
    parts.append(optax.adamw(sched, weight_decay=o.weight_decay))
  elif o.name in ("adam", "sgd"):
    # torch-style weight decay: L2 term added to the gradient before the update rule.
    if o.weight_decay:
      parts.append(optax.add_decayed_weights(o.weight_decay))
    parts.append(optax.adam(sched) if o.name == "adam" else
                 optax.sgd(sched, momentum=o.momentum or None))
  else:
    raise ConfigError(f"config.optim.name: unknown optimizer {o.name!r}")
  return optax.chain(*parts), sched
