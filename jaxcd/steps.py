"""The jitted steps every method composes: the sharded train step, the evaluation step
(a confusion matrix per batch) and the pass of an evaluation step over a whole split."""
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcd import metrics as metrics_lib, parallel, sliding, writers
from jaxcd.data import pipeline
from jaxcd.errors import ConfigError
from jaxcd.state import TrainState, apply_model


def make_train_step(model, tx, loss_fn, normalize, base_key, mesh, state_shardings, apply=None):
  """Jitted (state, batch) -> (state, metrics): the state donated, the batch split over `data`.
  `apply(params, batch_stats, a, b, rng, step) -> (outputs, batch_stats)` replaces the one
  training-mode call of the model (e.g. RCR: labeled and unlabeled halves, auxiliary decoders)."""
  if apply is None:
    def apply(params, batch_stats, a, b, rng, step):
      return apply_model(model, params, batch_stats, a, b, train=True, rng=rng)
  # The key as host data: a device array closed over would be read back when the step is traced,
  # an implicit transfer inside the loop's transfer guard.
  key_data, key_impl = jax.device_get(jax.random.key_data(base_key)), jax.random.key_impl(base_key)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(key_data, impl=key_impl), state.step)
    a, b = normalize(batch["image_a"]), normalize(batch["image_b"])

    def lossf(params):
      out, bs = apply(params, state.batch_stats, a, b, rng, state.step)
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


def eval_batches(config, source, mesh) -> Iterator[dict[str, jax.Array]]:
  """Global evaluation batches of `source` (every pair once, padded; see `pipeline.eval_dataset`):
  a split smaller than `input.eval_batch_size` is padded only up to the device count."""
  ds = pipeline.eval_dataset(source, global_batch_size=config.input.eval_batch_size,
                             process_index=jax.process_index(), process_count=jax.process_count(),
                             multiple=mesh.devices.size)
  return (parallel.to_global(b, mesh) for b in ds)


def evaluate(eval_step: Callable, params, batch_stats, source, config, mesh,
             desc: str = "eval", num_classes: int | None = None,
             score: Callable[[Any, Any], Any] | None = None) -> dict:
  """Metrics of (params, batch_stats) over a whole split, every example counted once.

  Pairs within the evaluation window (`sliding.eval_window`) go whole through `eval_step`, in
  batches of pairs of one size. Larger ones (for a fixed-size model: any other size) are scored
  as `jaxcd.predict` maps them: `score(a, b)` (the change score of these variables) over blended
  sliding windows, change where > 0.5, so a large image never meets the device whole and both
  tools count the same pixels alike.
  """
  parallel.check_batch_size(config.input.eval_batch_size, "input.eval_batch_size")
  k = num_classes or config.model.num_classes
  acc = metrics_lib.ConfusionAccumulator(k)
  window = sliding.eval_window(config)
  whole, windowed = [], []
  for (h, w), idx in pipeline.size_groups(source):
    if window.needs_windows(h, w):
      windowed += idx
    else:
      whole.append(source if len(idx) == len(source) else pipeline.Subset(source, idx))
  if windowed and (score is None or k != 2):
    raise ConfigError(f"{len(windowed)} evaluation pairs exceed the {window.tile}x{window.tile} "
                      "evaluation window (config.input.eval_tile) and this evaluation has no "
                      "binary change score to slide over them")
  batch = config.input.eval_batch_size
  total = sum(pipeline.eval_num_batches(len(s), batch) for s in whole) + len(windowed)
  bar = writers.progress(config, total, 0, desc, leave=False)
  for src in whole:
    for gb in eval_batches(config, src, mesh):
      acc.add(eval_step(params, batch_stats, gb), int(np.prod(gb["label"].shape)))
      bar.update(1)
  if windowed:
    predict_fn = sliding.sharded_predict_fn(score, mesh)
    ignore = int(config.loss.ignore_label)
    for i in windowed:
      rec = source[i]
      prob_HxW = sliding.sliding_window_predict(predict_fn, rec["image_a"], rec["image_b"],
                                                window.tile, window.overlap, batch,
                                                fixed_size=window.fixed)
      acc.add(metrics_lib.confusion_matrix(prob_HxW > 0.5, rec["label"], 2, ignore),
              rec["label"].size)
      bar.update(1)
  bar.close()
  return metrics_lib.metrics_from_confusion(acc.result())
