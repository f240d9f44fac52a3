"""Pieces every trainer shares: train state, optimizer, normalisation, sharded state creation,
the jitted evaluation pass, and the training loop's bookkeeping (NaN stop, progress, logs)."""
import math
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxcd import losses, metrics as metrics_lib, parallel
from jaxcd.data import pipeline
from jaxcd.errors import ConfigError, TrainingError
from jaxcd.models import get_model


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  def variables(self) -> dict[str, Any]:
    return variables_of(self.params, self.batch_stats)


def variables_of(params, batch_stats) -> dict[str, Any]:
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def compute_dtype(config) -> Any:
  if config.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"config.dtype must be 'float32' or 'bfloat16', not {config.dtype!r}")
  return jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32


def build_model(config) -> nn.Module:
  kwargs = {k: v for k, v in config.model.items() if k != "name"}
  return get_model(config.model.name, dtype=compute_dtype(config), **kwargs)


def make_normalizer(config) -> Callable[[jax.Array], jax.Array]:
  mean = np.asarray(config.data.mean, np.float32)
  std = np.asarray(config.data.std, np.float32)
  if mean.shape != (config.data.num_bands,) or std.shape != (config.data.num_bands,):
    raise ConfigError(f"config.data.mean/std need {config.data.num_bands} values "
                      f"(config.data.num_bands), got {mean.shape[0]} and {std.shape[0]}")
  if np.any(std <= 0):
    raise ConfigError("config.data.std must be positive")
  order = tuple(int(i) for i in config.data.get("band_order", ()) or ())
  if order and sorted(order) != list(range(len(mean))):
    raise ConfigError(f"config.data.band_order={order} must be a permutation of the "
                      f"{len(mean)} band indices 0..{len(mean) - 1}")

  def normalize(x_BxHxWxC: jax.Array) -> jax.Array:
    if x_BxHxWxC.shape[-1] != mean.shape[0]:
      raise ConfigError(f"images have {x_BxHxWxC.shape[-1]} bands but config.data.num_bands="
                        f"{mean.shape[0]}")
    if order:
      x_BxHxWxC = x_BxHxWxC[..., order]
    return (x_BxHxWxC.astype(jnp.float32) - mean) / std
  return normalize


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


def make_loss(config) -> Callable[[dict, jax.Array], tuple[jax.Array, dict]]:
  lc = config.loss
  name = lc.get("name", "ce")
  if name == "ce":
    def loss_fn(outputs, labels):
      ce = losses.cross_entropy(outputs["logits"], labels, class_weights=tuple(lc.class_weights),
                                ignore_label=lc.ignore_label)
      return ce, {}
    return loss_fn
  fn = getattr(losses, f"{name}_loss", None)
  if fn is None:
    raise ConfigError(f"config.loss.name: unknown loss {name!r}")
  kwargs = {k: v for k, v in lc.items() if k != "name"}

  def named_loss(outputs, labels):
    out = fn(outputs, labels, **kwargs)  # a loss returns a scalar or (scalar, dict of parts)
    return out if isinstance(out, tuple) else (out, {})
  return named_loss


def create_state(model: nn.Module, tx: optax.GradientTransformation, sample_shape, seed: int,
                 mesh, abstract: bool = False) -> TrainState:
  """Initialises the state directly replicated on the mesh (eval_shape -> shardings -> jit).
  With abstract=True returns only its ShapeDtypeStructs (with shardings), e.g. to restore into."""
  def init(key):
    x = jnp.zeros(sample_shape, jnp.float32)
    variables = model.init({"params": key, "dropout": key}, x, x, train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))
  # An "rbg" key for initialisation only: XLA compiles the init program ~3x faster than with
  # threefry (11 s -> 3.4 s for FC-Siam-diff on CPU), and init runs once per run.
  key = jax.random.key(seed, impl="rbg")
  shapes = jax.eval_shape(init, key)
  shardings = jax.tree_util.tree_map(lambda _: parallel.replicated(mesh), shapes)
  if abstract:
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
  return jax.jit(init, out_shardings=shardings)(key)


def init_pretrained(state: TrainState, config) -> TrainState:
  """Loads `config.init.backbone` (a local weights file) into the model's backbone, if set."""
  if not config.init.get("backbone"):
    return state
  from jaxcd import convert
  params, batch_stats = convert.init_backbone_variables(
      config, jax.device_get(state.params), jax.device_get(state.batch_stats))
  sharding = jax.tree_util.tree_leaves(state.params)[0].sharding
  return state.replace(params=jax.device_put(params, sharding),
                       batch_stats=jax.device_put(batch_stats, sharding))


def restore_trained(config, workdir: str, sample_shape_, mesh, prefer: str = "best"):
  """(model, state, meta, step, which) of a trained run, for evaluation and prediction."""
  from jaxcd import checkpointing
  model = build_model(config)
  tx, _ = make_optimizer(config.optim, config.num_steps)
  abstract = create_state(model, tx, sample_shape_, config.seed, mesh, abstract=True)
  state, meta, step, which = checkpointing.restore_for_inference(workdir, abstract, prefer)
  return model, state, meta, step, which


def apply_model(model, params, batch_stats, a, b, *, train: bool, rng=None):
  """Returns (outputs, new_batch_stats)."""
  variables = variables_of(params, batch_stats)
  if not train:
    return model.apply(variables, a, b, train=False), batch_stats
  mutable = ["batch_stats"] if batch_stats else []
  out, upd = model.apply(variables, a, b, train=True, rngs={"dropout": rng}, mutable=mutable)
  return out, upd.get("batch_stats", batch_stats)


def make_train_step(model, tx, loss_fn, normalize, base_key, mesh, state_shardings):
  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(base_key, state.step)
    a, b = normalize(batch["image_a"]), normalize(batch["image_b"])

    def lossf(params):
      out, bs = apply_model(model, params, state.batch_stats, a, b, train=True, rng=rng)
      loss, aux = loss_fn(out, batch["label"])
      return loss, (bs, aux)

    (loss, (bs, aux)), grads = jax.value_and_grad(lossf, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(step=state.step + 1, params=params, batch_stats=bs, opt_state=opt_state)
    # update_norm: a finite loss at step t does not make the state after update t finite.
    return new, {"loss": loss, "grad_norm": optax.tree_utils.tree_norm(grads),
                 "update_norm": optax.tree_utils.tree_norm(updates), **aux}

  return jax.jit(step, in_shardings=(state_shardings, parallel.data_sharded(mesh)),
                 out_shardings=(state_shardings, parallel.replicated(mesh)), donate_argnums=(0,))


def make_predict_fn(model, normalize):
  """Jitted (params, batch_stats, a, b) -> change-class probabilities BxHxWxK (float32)."""
  @jax.jit
  def predict(params, batch_stats, a, b):
    out, _ = apply_model(model, params, batch_stats, normalize(a), normalize(b), train=False)
    return jax.nn.softmax(out["logits"].astype(jnp.float32), axis=-1)
  return predict


def make_eval_step(model, normalize, num_classes: int, ignore_label: int, mesh):
  def step(params, batch_stats, batch):
    out, _ = apply_model(model, params, batch_stats, normalize(batch["image_a"]),
                         normalize(batch["image_b"]), train=False)
    pred = jnp.argmax(out["logits"], axis=-1)
    return metrics_lib.confusion_matrix(pred, batch["label"], num_classes, ignore_label,
                                        valid=batch["valid"][:, None, None])
  return jax.jit(step, out_shardings=parallel.replicated(mesh))


def evaluate(eval_step, params, batch_stats, source, config, mesh, desc: str = "eval") -> dict:
  """Metrics of (params, batch_stats) over a whole split, every example counted once."""
  parallel.check_batch_size(config.input.eval_batch_size, "input.eval_batch_size")
  ds = pipeline.eval_dataset(source, global_batch_size=config.input.eval_batch_size,
                             process_index=jax.process_index(), process_count=jax.process_count())
  acc = metrics_lib.ConfusionAccumulator(config.model.num_classes)
  n_batches = math.ceil(len(source) / config.input.eval_batch_size)
  show = config.progress and jax.process_index() == 0
  for batch in tqdm(ds, total=n_batches, desc=desc, leave=False, disable=not show):
    gb = parallel.to_global(batch, mesh)
    cm = eval_step(params, batch_stats, gb)
    acc.add(cm, int(np.prod(gb["label"].shape)))
  return metrics_lib.metrics_from_confusion(acc.result())


class LossWatch:
  """Reads step t-1's metrics after step t is dispatched (never stalls the device) and stops the
  run with a clear message on a non-finite loss, gradient or update. Trainers drain it before
  every save, so no checkpoint ever holds a state made by a non-finite update."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.pending: tuple[int, dict] | None = None

  def push(self, step: int, metrics: dict) -> dict | None:
    done, self.pending = self.pending, (step, metrics)
    return self._check(done) if done else None

  def drain(self) -> dict | None:
    done, self.pending = self.pending, None
    return self._check(done) if done else None

  def _check(self, item) -> dict:
    step, m = item
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    bad = [k for k in ("loss", "grad_norm", "update_norm") if k in m and not math.isfinite(m[k])]
    if bad:
      raise TrainingError(
          f"non-finite {bad[0]} ({m[bad[0]]}) at step {step}: stopped; the checkpoints in "
          f"{self.workdir} are from before it and stay valid (try a lower config.optim.lr)")
    return {"step": step, **m}


class TrainLogger:
  """Writes a `train` row every `config.log_every` steps (and at the last step) with the
  learning rate and the pairs/s since the previous row; `fields(step)` adds method columns.
  Steps are global; a run in stages passes its stage's `last` step and `offset` (the global step
  before it: the schedule restarts there)."""

  def __init__(self, config, writer, sched, bar, start: int,
               fields: Callable[[int], dict] = lambda step: {}, last: int | None = None,
               offset: int = 0):
    self.writer, self.sched, self.bar, self.fields = writer, sched, bar, fields
    self.log_every, self.batch_size = config.log_every, config.input.batch_size
    self.last = config.num_steps if last is None else last
    self.offset = offset
    self.t_last, self.n_last = time.perf_counter(), start

  def __call__(self, row: dict | None) -> None:
    if row is None or (row["step"] % self.log_every and row["step"] != self.last):
      return
    now = time.perf_counter()
    rate = (row["step"] - self.n_last) * self.batch_size / max(now - self.t_last, 1e-9)
    self.t_last, self.n_last = now, row["step"]
    lr = float(self.sched(row["step"] - self.offset - 1))
    self.writer.write({**row, "split": "train", **self.fields(row["step"]), "lr": lr,
                       "pairs_per_s": round(rate, 2)})
    self.bar.set_postfix(loss=f"{row['loss']:.4f}")


def progress(config, total: int, initial: int, desc: str):
  show = config.progress and jax.process_index() == 0
  return tqdm(total=total, initial=initial, desc=desc, disable=not show, dynamic_ncols=True)


def sample_shape(source, config) -> tuple[int, ...]:
  rec = source[0]
  h, w, c = rec["image_a"].shape
  if c != config.data.num_bands:
    raise ConfigError(f"config.data.num_bands={config.data.num_bands} but {rec['id']} has {c} bands")
  size = config.input.crop_size or None
  return (1, size or h, size or w, c)

