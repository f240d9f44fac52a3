"""The one training loop. A method (`jaxcd.methods.base.Method`) names its stages and plugs in
its state, steps, data and hooks; the loop owns everything else:

  per stage   resume (train state, method state, then grain's data state) or a fresh start,
              step dispatch with step t-1's metrics read after step t is dispatched, the stop on
              a non-finite loss/gradient/update, train rows and the progress bar, validation
              every `eval_every` steps with the best-F1 checkpoint, latest checkpoints every
              `checkpoint_every` steps, the method's hooks in between;
  at the end  the best checkpoint of each final stage evaluated on `eval_splits`.

A run resumes in the last stage that has a checkpoint (earlier stages are complete), and a later
stage saves a checkpoint before its first step, so a kill between stages resumes there.
Each step (next batch, its transfer, the dispatch, the late metrics read) runs under
`jax.transfer_guard("disallow")`: only explicit transfers (`device_put` of the batch,
`device_get` of the metrics), so an implicit one is an error instead of a silent stall. Hooks,
validation and saves run outside it.
Loop fields (`num_steps`, `eval_every`, `checkpoint_every`, `log_every`) are checked once here.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxcd import checkpointing, parallel, state as state_lib, storage, writers
from jaxcd.data import source_from_config
from jaxcd.data.normalize import make_normalizer
from jaxcd.errors import ConfigError, TrainingError
from jaxcd.methods import get_method
from jaxcd.methods.base import Loop, Method, ModelInference, Run, RunMeta, Stage

LOOP_FIELDS = ("num_steps", "eval_every", "checkpoint_every", "log_every")


def check_loop_config(config) -> None:
  """One-line ConfigErrors for the loop's own fields (0 = only at a stage's end)."""
  for name in LOOP_FIELDS:
    value = config.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      raise ConfigError(f"config.{name} must be an integer >= 0, got {value!r}")
  if config.keep_checkpoints < 1:
    raise ConfigError(f"config.keep_checkpoints must be >= 1, got {config.keep_checkpoints}")


def check_config(config) -> Method:
  """The method of `config` after checking the loop's fields and the method's own."""
  check_loop_config(config)
  method = get_method(config)
  method.check_config()
  return method


class LossWatch:
  """Reads step t-1's metrics after step t is dispatched (never stalls the device) and stops the
  run with a clear message on a non-finite loss, gradient or update. The loop drains it before
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
  """Writes a `train` row every `log_every` steps and at the stage's last step, with the
  learning rate (the stage's schedule restarts at its offset) and pairs/s since the last row."""

  def __init__(self, config, writer, sched, bar, stage: Stage, start: int,
               fields: Callable[[int], dict]):
    self.writer, self.bar, self.fields = writer, bar, fields
    # The stage's whole schedule read once: logging a row then needs no device round trip.
    self.lrs = jax.device_get(jax.jit(jax.vmap(sched))(jnp.arange(stage.steps)))
    self.log_every, self.batch_size = config.log_every, config.input.batch_size
    self.last, self.offset = stage.last, stage.offset
    self.t_last, self.n_last = time.perf_counter(), stage.offset + start

  def __call__(self, row: dict | None) -> None:
    if row is None or not due(row["step"], self.log_every, row["step"] == self.last):
      return
    now = time.perf_counter()
    rate = (row["step"] - self.n_last) * self.batch_size / max(now - self.t_last, 1e-9)
    self.t_last, self.n_last = now, row["step"]
    lr = float(self.lrs[row["step"] - self.offset - 1])
    self.writer.write({**row, "split": "train", **self.fields(row["step"]), "lr": lr,
                       "pairs_per_s": round(rate, 2)})
    self.bar.set_postfix(loss=f"{row['loss']:.4f}")


def due(step: int, every: int, last: bool) -> bool:
  return last or (every > 0 and step % every == 0)


def checkpointer(config, workdir: str, stage: Stage) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(storage.join(workdir, stage.directory),
                                    keep=config.keep_checkpoints,
                                    async_save=bool(config.async_checkpoints))


def make_run(config, workdir: str, method: Method) -> Run:
  mesh = parallel.make_mesh()
  parallel.allow_grain_workers()
  parallel.check_batch_size(config.input.batch_size)
  parallel.check_batch_size(config.input.eval_batch_size, "input.eval_batch_size")
  writer = writers.MetricWriter(workdir, enabled=jax.process_index() == 0)
  if not method.trains:
    return Run(config, workdir, mesh, None, None, None, None, (), writer, None)
  train_src = source_from_config(config.data, "train")
  val_src = source_from_config(config.data, "val")
  preflight(config, train_src, val_src)
  model = method.build_model()
  normalize = make_normalizer(config)
  return Run(config, workdir, mesh, model, normalize, train_src, val_src,
             state_lib.sample_shape(train_src, config), writer,
             ModelInference(method, model, normalize, mesh))


def preflight(config, train_src, val_src) -> None:
  """Checks before the first step what would otherwise fail mid-run (CDCluster's pseudo-label
  epochs start after the warm-up): a batch larger than the training split, and the first pair of
  each split decoded with the config's options (band count, label encoding, image sizes)."""
  n, batch = len(train_src), config.input.batch_size
  if n < batch:
    raise ConfigError(f"input.batch_size: the global batch {batch} is larger than the {n} "
                      f"training pairs of {train_src!r}; lower --config.input.batch_size")
  for src in (train_src, val_src):
    if len(src) == 0:
      continue
    bands = src[0]["image_a"].shape[-1]
    if bands != config.data.num_bands:
      raise ConfigError(f"config.data.num_bands is {config.data.num_bands} but the images of "
                        f"{src!r} have {bands} bands")


def train_and_evaluate(config, workdir: str, method: Method | None = None) -> dict:
  """Trains `config.method` (or the given `Method` instance), writing WORKDIR/metrics.jsonl,
  TensorBoard logs and checkpoints; returns the final metrics per split of the best-validation
  checkpoint (earlier final stages' as `<stage>_<split>`)."""
  if method is None:
    method = check_config(config)
  else:
    check_loop_config(config)
    method.check_config()
  storage.check_workdir(workdir)
  run = make_run(config, workdir, method)
  try:
    stages = method.stages(run) if method.trains else []
    for stage in stages:
      if stage.steps < 1:
        raise ConfigError(f"stage {stage.name!r} has {stage.steps} steps (config.num_steps or "
                          "the method's stage lengths must give >= 1)")
    first = 0  # the last stage with a checkpoint: the ones before it are complete
    for i, stage in enumerate(stages):
      if checkpointing.latest_step(storage.join(workdir, stage.directory)) is not None:
        first = i
    for i, stage in enumerate(stages):
      if i >= first:
        run_stage(run, method, stage, save_at_start=i > 0)
    return final_evaluation(run, method, stages)
  finally:
    method.close()
    run.writer.close()


def run_stage(run: Run, method: Method, stage: Stage, save_at_start: bool = False) -> None:
  ck = checkpointer(run.config, run.workdir, stage)
  try:
    _run_stage(run, method, stage, ck, save_at_start)
  finally:
    ck.close()  # also on an error or an interrupt: the save in flight is committed


def _run_stage(run: Run, method: Method, stage: Stage, ck: checkpointing.Checkpointer,
               save_at_start: bool) -> None:
  c, workdir = run.config, run.workdir
  tx, sched = method.optimizer(run, stage)
  state = method.init_state(run, stage, tx)
  watch = LossWatch(workdir)
  loop = Loop(stage, state, method.data(run, stage), RunMeta(), ck, sync=lambda: None,
              save=lambda step: None)

  def sync():
    log(watch.drain())

  def save(step: int):
    sync()
    ck.save(step, loop.state, loop.data, loop.meta.to_json(),
            extra=method.checkpoint_extra(loop, best=False))
    run.writer.flush()  # a resumed run finds the rows up to its checkpoint
  loop.sync, loop.save = sync, save

  # The newest checkpoint that reads back whole; corrupt ones are renamed aside with a warning.
  restored = ck.restore(checkpointing.abstract_like(loop.state))
  start, resumed = 0, restored is not None
  if resumed:
    loop.state, meta, step = restored
    loop.meta = RunMeta.from_json(meta)
    method.restore(run, loop, ck.restore_extra(step))
    ck.restore_data(step, loop.data)
    run.writer.truncate_after(step)
    start = step - stage.offset
    logging.info("resumed %s from %s at step %d", stage.name, ck.workdir, step)

  bar = writers.progress(c, stage.last, stage.offset + start, stage.name)
  log = TrainLogger(c, run.writer, sched, bar, stage, start,
                    fields=lambda g: method.row_fields(stage, g))
  if not resumed and save_at_start:
    save(stage.offset)  # a run killed from here on resumes in this stage
  method.start(run, loop, resumed=resumed)
  train_step = method.train_step(run, stage, loop.state, tx)

  for s in range(start + 1, stage.steps + 1):
    g = stage.offset + s
    with jax.transfer_guard("disallow"):
      batch = parallel.to_global(next(loop.data), run.mesh)
      loop.state, m = train_step(loop.state, batch)
      log(watch.push(g, m))
    bar.update(1)
    last = s == stage.steps
    if due(s, stage.eval_every, last) or method.eval_now(stage, s):
      sync()  # never evaluate or save a state whose loss is not finite
      validate(run, method, loop, g, bar)
    if method.after_step(run, loop, s):
      continue  # the hook saved a checkpoint
    if due(s, c.checkpoint_every, last):
      save(g)
  sync()
  bar.close()


def validate(run: Run, method: Method, loop: Loop, step: int, bar) -> None:
  extra = method.before_eval(run, loop, step)
  st = loop.state
  res = run.inference.evaluate(st.params, st.batch_stats, method.head(loop.meta), run.val_src,
                               "val")
  fields = method.row_fields(loop.stage, step)
  run.writer.write({"step": step, "split": "val", **fields, **res, **extra})
  meta = loop.meta
  if res["f1"] > meta.best_f1:
    meta.best_f1, meta.best_step, meta.best_fields = res["f1"], step, fields
    loop.checkpointer.save(step, st, None, meta.to_json(), best=True,
                           extra=method.checkpoint_extra(loop, best=True))
  if run.is_main and run.config.progress:
    where = "".join(f" {k} {v}" for k, v in fields.items())
    bar.write(f"step {step}{where}: val f1 {res['f1']:.4f} (best {meta.best_f1:.4f} @ step "
              f"{meta.best_step})")


def final_evaluation(run: Run, method: Method, stages: list[Stage]) -> dict:
  """Each final stage's best checkpoint (the latest if it has none, or only a corrupt one) on the
  method's final splits; val labels chose it, test labels only score it. The last final stage's
  best is also WORKDIR/best, where `jaxcd.evaluate` and `jaxcd.predict` look."""
  c = run.config
  finals = [s for s in stages if s.final]
  results: list[tuple[str, dict]] = []
  if not method.trains:
    results.append(("", _evaluate_splits(run, method, method.load_predictor(run.workdir, ()),
                                         {"step": 0})))
  for stage in finals:
    ck = checkpointer(c, run.workdir, stage)
    tx, _ = method.optimizer(run, stage)
    abstract = method.abstract_state(run.model, tx, run.sample_shape, run.mesh)
    state, meta, step, _ = ck.restore_best(abstract)
    meta = RunMeta.from_json(meta)
    if stage is finals[-1] and stage.directory:
      checkpointing.Checkpointer(run.workdir).save(step, state, None, meta.to_json(), best=True)
    predictor = run.inference.bind(state.params, state.batch_stats, method.head(meta))
    row = {"step": int(step), "checkpoint": "best", **meta.best_fields}
    results.append((stage.name, _evaluate_splits(run, method, predictor, row)))
    ck.close()
  final = dict(results[-1][1]) if results else {}
  for name, res in results[:-1]:
    final.update({f"{name}_{split}": m for split, m in res.items()})
  return final


def _evaluate_splits(run: Run, method: Method, predictor, row: dict[str, Any]) -> dict:
  out = {}
  for split in dict.fromkeys(method.final_splits()):  # ordered, without repeats
    src = source_from_config(run.config.data, split)
    res = predictor.evaluate(src, split)
    run.writer.write({**row, "split": split, "pairs": len(src), **res})
    out[split] = res
    if run.is_main:
      logging.info("%s: f1 %.4f iou %.4f kappa %.4f (%s)", split, res["f1"], res["iou"],
                   res["kappa"], ", ".join(f"{k} {v}" for k, v in row.items()))
  return out
