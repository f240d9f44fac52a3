"""Supervised training of any registered network: a sharded, jitted step on a data-parallel mesh,
validation every `eval_every` steps keeping the best F1, orbax checkpoints with automatic resume,
and a final evaluation of the best checkpoint on `eval_splits`."""
import logging

import jax

from jaxcd import checkpointing, parallel, writers
from jaxcd.data import pipeline, source_from_config
from jaxcd.methods import common


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains, writes WORKDIR/metrics.jsonl, checkpoints and TensorBoard logs; returns the final
  metrics per split of the best checkpoint."""
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.input.batch_size)
  is_main = jax.process_index() == 0
  train_src = source_from_config(config.data, "train")
  val_src = source_from_config(config.data, "val")

  model = common.build_model(config)
  tx, sched = common.make_optimizer(config.optim, config.num_steps)
  normalize = common.make_normalizer(config)
  state = common.create_state(model, tx, common.sample_shape(train_src, config), config.seed, mesh)
  state = common.init_pretrained(state, config)
  state_sh = jax.tree_util.tree_map(lambda x: x.sharding, state)

  ds = pipeline.train_dataset(
      train_src, global_batch_size=config.input.batch_size, seed=config.seed,
      augment=config.input.augment, crop_size=config.input.crop_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=config.input.worker_count, prefetch=config.input.prefetch)
  it = iter(ds)

  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  writer = writers.MetricWriter(workdir, enabled=is_main)
  meta = {"best_f1": -1.0, "best_step": None}
  start = 0
  if ckpt.latest_step() is not None:
    state, data_state, meta, start = ckpt.restore(checkpointing.abstract_like(state))
    if data_state is not None:
      it.set_state(pipeline.state_from_json(data_state["grain"]))
    writer.truncate_after(start)
    logging.info("resumed from %s/checkpoints/%d", workdir, start)

  train_step = common.make_train_step(model, tx, common.make_loss(config), normalize,
                                      jax.random.key(config.seed), mesh, state_sh)
  eval_step = common.make_eval_step(model, normalize, config.model.num_classes,
                                    config.loss.ignore_label, mesh)
  watch = common.LossWatch(workdir)
  bar = common.progress(config, config.num_steps, start, "train")
  log = common.TrainLogger(config, writer, sched, bar, start)

  for step in range(start + 1, config.num_steps + 1):
    batch = parallel.to_global(next(it), mesh)
    state, m = train_step(state, batch)
    log(watch.push(step, m))
    bar.update(1)
    is_last = step == config.num_steps
    if step % config.eval_every == 0 or is_last:
      log(watch.drain())  # never evaluate or save a state whose loss is not finite
      res = common.evaluate(eval_step, state.params, state.batch_stats, val_src, config, mesh, "val")
      writer.write({"step": step, "split": "val", **res})
      if res["f1"] > meta["best_f1"]:
        meta = {**meta, "best_f1": res["f1"], "best_step": step}
        ckpt.save(step, state, None, meta, best=True)
      if is_main and config.progress:
        bar.write(f"step {step}: val f1 {res['f1']:.4f} (best {meta['best_f1']:.4f} @ step {meta['best_step']})")
    if step % config.checkpoint_every == 0 or is_last:
      log(watch.drain())
      ckpt.save(step, state, {"grain": pipeline.state_to_json(it.get_state())}, meta)
  log(watch.drain())
  bar.close()

  # Final evaluation with the best validation checkpoint (val labels choose it; test never does).
  final = {}
  best_step = ckpt.best_step()
  if best_step is not None:
    state, _, _, _ = ckpt.restore(checkpointing.abstract_like(state), which=checkpointing.BEST)
  for split in config.eval_splits:
    src = source_from_config(config.data, split)
    res = common.evaluate(eval_step, state.params, state.batch_stats, src, config, mesh, split)
    writer.write({"step": int(state.step), "split": split, "checkpoint": "best", **res})
    final[split] = res
    if is_main:
      logging.info("%s: f1 %.4f iou %.4f kappa %.4f (checkpoint step %d)", split, res["f1"],
                   res["iou"], res["kappa"], int(state.step))
  writer.close()
  ckpt.close()
  return final
