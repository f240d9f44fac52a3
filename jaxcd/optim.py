"""Optimizers and learning-rate schedules from a config's `optim` block."""
from typing import Any

import jax
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


# --- per-group learning rates (SemiCD / RCL: the backbone at lr / 10) ---------------------------

def backbone_multipliers(params: Any, prefix: str, mult: float, block: str = "config.rcl") -> Any:
  """A pytree like `params`: `mult` for the leaves under the top-level key `prefix`, else 1
  (`block`: the config block whose `backbone_params` / `backbone_lr_mult` errors name)."""
  if mult == 1:
    return jax.tree_util.tree_map(lambda _: 1.0, params)
  if prefix not in params:
    raise ConfigError(f"{block}.backbone_params: the model has no parameters under {prefix!r} "
                      f"(top level: {', '.join(sorted(params))}); set backbone_lr_mult=1")
  return {k: jax.tree_util.tree_map(lambda _, m=(mult if k == prefix else 1.0): m, v)
          for k, v in params.items()}


def group_lr_grads(grads: Any, params: Any, multipliers: Any, weight_decay: float) -> Any:
  """Gradients that make `make_optimizer`'s SGD (which adds weight_decay * p, then
  momentum) update each leaf as torch's SGD with lr * m for that leaf: m * g + (m - 1) * wd * p
  becomes m * (g + wd * p) once the decay is added, and momentum is linear."""
  return jax.tree_util.tree_map(
      lambda g, p, m: g if m == 1.0 else g * m + (m - 1.0) * weight_decay * p,
      grads, params, multipliers)


def with_group_lr(tx: optax.GradientTransformation, multipliers: Any,
                  weight_decay: float) -> optax.GradientTransformation:
  """`tx` with per-leaf learning-rate multipliers (`group_lr_grads`); the same state as `tx`."""
  def update(grads, state, params=None):
    return tx.update(group_lr_grads(grads, params, multipliers, weight_decay), state, params)
  return optax.GradientTransformation(tx.init, update)
