"""RCL: reliable contrastive learning for semi-supervised change detection (Wang et al.,
../shared/papers/rcl.txt; official code github VCISwang/RC-Change-Detection).

0. Split: `rcl.label_fraction` of the training split is labeled (drawn with `config.seed`, stored
   in WORKDIR/splits/, reused on resume, `jaxcd.data.semi`); the rest is unlabeled, or the
   unlabeled pairs come from another dataset (`rcl.unlabeled_data`, paper Table VI).
1. Stage 1 on the labeled pairs (`input.batch_size` per step): CE + lambda * L_ct
   (`losses.contrastive_loss`). Every pair (A, B) goes through the network together with its
   no-change companion (`rcl.nochange`: "perturb" = the paper's (A + eta, A + eta'), "same" = the
   code's (A, A) or (B, B)), built on the host after the weak augmentation so the two stay
   pixel-aligned. The companion enters L_ct only (paper eq. 7, Alg. 1) unless
   `rcl.nochange_ce` also trains it with CE towards an all-zero label (the official code's
   `target_l_aug`). Snapshots at steps E//3, 2E//3, E (WORKDIR/stage1/snapshots) and the
   best-validation model (WORKDIR/stage1/best).
2. Reliability: one jitted pass of the 3 snapshots and the best model over the unlabeled pairs.
   Stability of a pair = mean over snapshots of the 2-class mean IoU between the snapshot's
   argmax and the best model's argmax (classes absent from both maps are left out of the mean,
   as the code's nanmean). The `rcl.reliable_fraction` most stable pairs (ties: lower index first)
   are reliable, with the best model's argmax as pseudo-label; the rest become no-change pairs.
   Written to WORKDIR/splits/{reliable,unreliable}.txt and WORKDIR/pseudo_labels.npz; a
   `"split": "reliable"` row in metrics.jsonl has the counts, the mean stability of each half and,
   where the unlabeled pairs have ground truth, the IoU of each model's predictions on each half
   (paper Fig. 7; ground truth is only read for that row, never for training).
3. Stage 2, re-initialised (seed + 1, then `init.backbone` if set; `rcl.stage2_init="stage1"`
   starts instead from the stage-1 best model, a fresh optimizer state, for runs without
   pretrained weights where a random restart must relearn everything): batches of `rcl.n_labeled`
   labeled pairs + (input.batch_size - n_labeled) unlabeled ones from two grain pipelines;
   reliable pairs get their pseudo-label and the strong augmentation, unreliable ones are (A, A) or
   (B, B) with an all-zero label; CE + lambda * L_ct on all of them (the code's choice; Alg. 1
   skips L_ct for unreliable pairs, where it only asks for agreement with the companion).
   Checkpoints in WORKDIR/ (the standard layout: `jaxcd.evaluate` and `jaxcd.predict` load the
   final model).

`rcl.mode = "sup_only"` is the paper's "Sup. only" baseline: stage 1 with plain CE on the
labeled pairs (no companions, no L_ct), no stage 2. With no unlabeled pair (label_fraction 1 and
no `unlabeled_data`) an "rcl" run also stops after stage 1 (the paper's "Ours. pre" at 100%).
Without stage 2 the stage-1 best model is also saved as WORKDIR/best.

Optimiser: `config.optim` for both stages, the schedule spanning each stage. The official code
uses SGD (momentum 0.9, weight decay 1e-4, poly 0.9) with the backbone at lr / 10:
`rcl.backbone_lr_mult` scales the SGD gradient plus weight-decay term of the parameters under
`rcl.backbone_params`, which for (momentum) SGD is exactly a per-group learning rate and keeps the
optimizer state identical to `optim.make_optimizer`'s (so standard tools restore checkpoints).

Steps are global across stages: stage 1 is steps 1..S1, stage 2 is S1+1..S1+S2 (its state's own
counter and schedule restart at 0); every train/val/test row carries `stage`. A killed run resumes
in its stage: stage 2 reads its reliable set back from the workdir. Final rows: the best model of
each stage on `eval_splits`, with `"checkpoint": "best"` and its `stage`.
"""
import logging
import io as io_lib
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcd import checkpointing, losses, metrics as metrics_lib, parallel, state as state_lib
from jaxcd.optim import backbone_multipliers, with_group_lr
from jaxcd import steps as steps_lib, storage, writers
from jaxcd.data import augment as augment_lib, io, pipeline, semi, source_from_config
from jaxcd.errors import ConfigError, DataError
from jaxcd.methods import base

MODES = ("rcl", "sup_only")
STAGE2_INITS = ("reinit", "stage1")
STAGE1_DIR, PSEUDO_FILE = "stage1", "pseudo_labels.npz"
SNAPSHOT_DIR = os.path.join(STAGE1_DIR, "snapshots")


# --- config ------------------------------------------------------------------------------------

def _check_config(config) -> None:
  rc = config.rcl
  if rc.mode not in MODES:
    raise ConfigError(f"config.rcl.mode must be one of {', '.join(MODES)}, not {rc.mode!r}")
  if rc.stage2_init not in STAGE2_INITS:
    raise ConfigError(f"config.rcl.stage2_init must be one of {', '.join(STAGE2_INITS)}, not "
                      f"{rc.stage2_init!r}")
  if rc.nochange not in semi.NOCHANGE_MODES:
    raise ConfigError(f"config.rcl.nochange must be one of {', '.join(semi.NOCHANGE_MODES)}, "
                      f"not {rc.nochange!r}")
  if not 0 < rc.label_fraction <= 1:
    raise ConfigError(f"config.rcl.label_fraction must be in (0, 1], got {rc.label_fraction}")
  if not 0 <= rc.reliable_fraction <= 1:
    raise ConfigError(f"config.rcl.reliable_fraction must be in [0, 1], got {rc.reliable_fraction}")
  if rc.ct_weight < 0:
    raise ConfigError(f"config.rcl.ct_weight must be >= 0, got {rc.ct_weight}")
  if not 0 < rc.n_labeled < config.input.batch_size:
    raise ConfigError(f"config.rcl.n_labeled must be in [1, input.batch_size - 1] "
                      f"(= [1, {config.input.batch_size - 1}]), got {rc.n_labeled}")
  if int(config.model.num_classes) != 2:
    raise ConfigError(f"config.model.num_classes must be 2 for RCL, got {config.model.num_classes}")
  parse_steps_by_fraction(rc.steps_by_fraction)
  for name in ("stage1", "stage2"):
    if rc[f"{name}_steps"] < 0 or rc[f"{name}_epochs"] <= 0:
      raise ConfigError(f"config.rcl.{name}_steps must be >= 0 and config.rcl.{name}_epochs > 0")
  if rc.backbone_lr_mult <= 0:
    raise ConfigError(f"config.rcl.backbone_lr_mult must be > 0, got {rc.backbone_lr_mult}")
  if rc.backbone_lr_mult != 1 and config.optim.name != "sgd":
    raise ConfigError(f"config.rcl.backbone_lr_mult={rc.backbone_lr_mult} needs "
                      f"config.optim.name='sgd' (Adam is invariant to gradient scale), got "
                      f"{config.optim.name!r}")
  if rc.backbone_lr_mult != 1 and config.optim.grad_clip:
    raise ConfigError("config.rcl.backbone_lr_mult != 1 is exact only without clipping: set "
                      "config.optim.grad_clip=0")
  if rc.evals_per_stage <= 0 and config.eval_every <= 0:
    raise ConfigError("config.eval_every or config.rcl.evals_per_stage must be > 0")


def parse_steps_by_fraction(text: str) -> dict[float, int]:
  """`rcl.steps_by_fraction` "40:1800,100:1800" -> {40.0: 1800, 100.0: 1800} (percent: steps)."""
  out = {}
  for item in filter(None, (t.strip() for t in str(text).split(","))):
    try:
      pct, steps = item.split(":")
      pct, steps = float(pct), int(steps)
    except ValueError:
      raise ConfigError(f"config.rcl.steps_by_fraction: expected 'percent:steps,...', got "
                        f"{item!r} in {text!r}") from None
    if not 0 < pct <= 100 or steps < 3:
      raise ConfigError(f"config.rcl.steps_by_fraction: {item!r} needs a percent in (0, 100] and "
                        ">= 3 steps")
    out[pct] = steps
  return out


def stage_steps(rc, stage: int, pairs: int, per_step: int) -> int:
  """The steps of `rcl.steps_by_fraction` for this `rcl.label_fraction` if listed; else
  `rcl.stage{k}_steps` if > 0; else ceil(`rcl.stage{k}_epochs` * pairs / per_step): an epoch
  is one pass over the labeled pairs (stage 1) or the unlabeled pool (stage 2)."""
  by_fraction = parse_steps_by_fraction(rc.steps_by_fraction)
  pct = round(100 * float(rc.label_fraction), 6)
  if pct in by_fraction:
    return by_fraction[pct]
  fixed = int(rc[f"stage{stage}_steps"])
  if fixed > 0:
    return fixed
  return max(1, math.ceil(float(rc[f"stage{stage}_epochs"]) * pairs / per_step))


def snapshot_steps(steps: int) -> list[int]:
  """E//3, 2E//3, E (the official code's epochs), for E >= 3 stage-1 steps."""
  if steps < 3:
    raise ConfigError(f"stage 1 has {steps} steps: the 3 snapshots need >= 3 "
                      "(config.rcl.stage1_steps or stage1_epochs)")
  return [steps // 3, 2 * steps // 3, steps]


# --- the training step -------------------------------------------------------------------------

def packed_normalizer(normalize, bands: int):
  """Normalises a packed batch B x H x W x 2C [pair | companion] into the 2B images the network
  sees in one call: the B pairs' images, then the B companions' (`semi.RclAugment`)."""
  def norm(x_BxHxWx2C: jax.Array) -> jax.Array:
    x, companion = semi.split_companion(x_BxHxWx2C, bands)
    return jnp.concatenate([normalize(x), normalize(companion)])
  return norm


def make_loss(*, contrastive: bool, ct_weight: float, nochange_ce: bool, class_weights=(),
              ignore_label: int = 255):
  """(outputs, labels_BxHxW) -> (loss, parts). With `contrastive` the logits are 2B: the pairs,
  then their no-change companions (labelled all zero when `nochange_ce`)."""
  def ce(logits, labels):
    return losses.cross_entropy(logits, labels, class_weights=class_weights,
                                ignore_label=ignore_label)

  def loss_fn(outputs, labels):
    logits = outputs["logits"]
    if not contrastive:
      loss = ce(logits, labels)
      return loss, {"ce": loss}
    real, nochange = jnp.split(logits, 2, axis=0)
    ce_loss = (ce(logits, jnp.concatenate([labels, jnp.zeros_like(labels)])) if nochange_ce
               else ce(real, labels))
    ct = losses.contrastive_loss(real, nochange, labels, ignore_label=ignore_label)
    return ce_loss + ct_weight * ct, {"ce": ce_loss, "ct": ct}
  return loss_fn


# --- reliability -------------------------------------------------------------------------------

def pair_mean_iou(p_BxHxW: jax.Array, q_BxHxW: jax.Array) -> jax.Array:
  """Per pair, the mean over classes {0, 1} present in p or q of IoU(p == c, q == c)."""
  ious, present = [], []
  for c in (0, 1):
    pc, qc = p_BxHxW == c, q_BxHxW == c
    inter = jnp.sum(pc & qc, axis=(1, 2)).astype(jnp.float32)
    union = jnp.sum(pc | qc, axis=(1, 2)).astype(jnp.float32)
    ious.append(jnp.where(union > 0, inter / jnp.maximum(union, 1), 0.0))
    present.append((union > 0).astype(jnp.float32))
  return sum(ious) / jnp.maximum(sum(present), 1)


def make_stability_step(model, normalize, ignore_label: int, mesh):
  """Jitted (snapshot_variables, best_variables, batch) -> dict of per-pair, replicated:
  `stability` B, `ious` B x S (snapshot vs best), `pseudo` uint8 BxHxW (best argmax),
  `confusion` B x (S + 1) x 2 x 2 (each model vs the batch's label; snapshots, then best),
  `index`, `valid`."""
  def step(snapshots, best, batch):
    a, b = normalize(batch["image_a"]), normalize(batch["image_b"])
    pred = lambda v: jnp.argmax(model.apply(v, a, b, train=False)["logits"], axis=-1)
    best_pred = pred(best)
    preds = [pred(v) for v in snapshots]
    ious = jnp.stack([pair_mean_iou(p, best_pred) for p in preds], axis=1)
    cm = jax.vmap(lambda p, y: metrics_lib.confusion_matrix(p, y, 2, ignore_label))
    conf = jnp.stack([cm(p, batch["label"]) for p in preds + [best_pred]], axis=1)
    return {"stability": jnp.mean(ious, axis=1), "ious": ious,
            "pseudo": best_pred.astype(jnp.uint8), "confusion": conf,
            "index": batch["index"], "valid": batch["valid"]}
  return jax.jit(step, out_shardings=parallel.replicated(mesh))


def stability_pass(stability_step, snapshots, best, source, config, mesh) -> dict[str, np.ndarray]:
  """Runs `stability_step` over all of `source` (every pair once): arrays in source order. Every
  batch is dispatched before any result is read, so the device never waits for the host."""
  n = len(source)
  ds = pipeline.eval_dataset(source, global_batch_size=config.input.eval_batch_size,
                             process_index=jax.process_index(), process_count=jax.process_count())
  bar = writers.progress(config, pipeline.eval_num_batches(n, config.input.eval_batch_size), 0,
                         "reliability")
  pending = []
  for batch in ds:
    pending.append(stability_step(snapshots, best, parallel.to_global(batch, mesh)))
    bar.update(1)
  bar.close()
  out: dict[str, np.ndarray] = {}
  for r in jax.device_get(pending):
    keep = np.asarray(r["valid"], bool)
    idx = np.asarray(r["index"])[keep]
    for k in ("stability", "ious", "pseudo", "confusion"):
      v = np.asarray(r[k])[keep]
      if k not in out:
        out[k] = np.zeros((n,) + v.shape[1:], v.dtype)
      out[k][idx] = v
  return out


def rank_reliable(stability_N: np.ndarray, fraction: float) -> np.ndarray:
  """Boolean mask of the floor(fraction * N) most stable pairs (ties: lower index first)."""
  n = len(stability_N)
  k = int(math.floor(fraction * n + 1e-9))
  order = np.argsort(-np.asarray(stability_N, np.float64), kind="stable")
  mask = np.zeros(n, bool)
  mask[order[:k]] = True
  return mask


def _iou(cm_2x2: np.ndarray) -> float | None:
  if cm_2x2.sum() == 0:
    return None  # no ground truth
  return round(metrics_lib.metrics_from_confusion(cm_2x2)["iou"], 4)


def reliability_row(res: dict[str, np.ndarray], reliable: np.ndarray) -> dict[str, Any]:
  """Counts, mean stability and (where there is ground truth) IoU of each half."""
  row: dict[str, Any] = {"pairs": int(len(reliable)), "reliable": int(reliable.sum()),
                         "unreliable": int((~reliable).sum())}
  for name, m in (("reliable", reliable), ("unreliable", ~reliable)):
    row[f"stability_{name}"] = round(float(res["stability"][m].mean()), 4) if m.any() else None
    cm = res["confusion"][m].sum(axis=0).astype(np.int64) if m.any() else None
    # The best model's pseudo-labels (the last model), and each snapshot's predictions (Fig. 7).
    row[f"pseudo_iou_{name}"] = None if cm is None else _iou(cm[-1])
    row[f"snapshot_iou_{name}"] = None if cm is None else [_iou(c) for c in cm[:-1]]
  row["pseudo_iou_all"] = _iou(res["confusion"][:, -1].sum(axis=0).astype(np.int64))
  return row


def load_reliability(workdir: str) -> dict[str, np.ndarray] | None:
  path = storage.path(storage.join(workdir, PSEUDO_FILE))
  if not path.exists():
    return None
  with np.load(io_lib.BytesIO(path.read_bytes())) as z:
    return {k: z[k] for k in z.files}


# --- the method --------------------------------------------------------------------------------

class RCL(base.Method):
  """Stage 1 (WORKDIR/stage1/) -> reliability -> stage 2 (WORKDIR/), two stages of the loop."""
  name = "rcl"

  def check_config(self) -> None:
    _check_config(self.config)

  def resize_batch(self, pairs: int, multiple: int = 1) -> None:
    c = self.config
    c.rcl.n_labeled = base.share(int(c.rcl.n_labeled), int(c.input.batch_size), pairs,
                                 multiple)
    c.input.batch_size = pairs

  def stages(self, run: base.Run) -> list[base.Stage]:
    c, rc = self.config, self.config.rcl
    self.lab_idx, unl_idx = semi.labeled_split(run.workdir, run.train_src, rc.label_fraction,
                                               c.seed, write=run.is_main)
    if rc.unlabeled_data.get("name"):
      self.unl_src = source_from_config(rc.unlabeled_data, rc.unlabeled_split,
                                         where="config.rcl.unlabeled_data")
      self.unl_idx = np.arange(len(self.unl_src))
      self._check_unlabeled_source(run.train_src)
    else:
      self.unl_src, self.unl_idx = run.train_src, unl_idx
    self.contrastive = rc.mode == "rcl"
    self.semi = self.contrastive and len(self.unl_idx) > 0
    self.n_l = int(rc.n_labeled)
    self.n_u = int(c.input.batch_size) - self.n_l
    if self.semi:
      parallel.check_batch_size(self.n_l, "rcl.n_labeled")
      parallel.check_batch_size(self.n_u, "input.batch_size - rcl.n_labeled")
    steps1 = stage_steps(rc, 1, len(self.lab_idx), c.input.batch_size)
    steps2 = stage_steps(rc, 2, len(self.unl_idx), self.n_u) if self.semi else 0
    self.snaps = snapshot_steps(steps1) if self.semi else []
    self.snap_ck = (checkpointing.Checkpointer(storage.join(run.workdir, SNAPSHOT_DIR), keep=3,
                                               async_save=bool(c.async_checkpoints))
                    if self.semi else None)
    weak = augment_lib.make_augment(c.input.augment, c.input.crop_size)
    nochange = rc.nochange if self.contrastive else ""
    self.aug_labeled = semi.RclAugment(weak, None, nochange)
    self.aug_unlabeled = semi.RclAugment(
        weak, augment_lib.StrongAugment() if rc.strong_unlabeled else None, nochange)
    logging.info("rcl (%s): %d labeled / %d unlabeled pairs; stage 1 %d steps%s", rc.mode,
                 len(self.lab_idx), len(self.unl_idx), steps1,
                 f", stage 2 {steps2} steps" if self.semi else ", no stage 2")
    every = lambda steps: base.eval_every_auto(c, steps, rc.evals_per_stage)  # noqa: E731
    self.stage1 = base.Stage("stage1", steps1, 0, STAGE1_DIR, every(steps1), {"stage": 1})
    if not self.semi:
      return [self.stage1]
    return [self.stage1, base.Stage("stage2", steps2, steps1, "", every(steps2), {"stage": 2})]

  def _check_unlabeled_source(self, train_src) -> None:
    if len(self.unl_src) == 0:
      raise DataError("config.rcl.unlabeled_data: the unlabeled source has no pairs")
    u, t = self.unl_src[0], train_src[0]
    if u["image_a"].shape[-1] != t["image_a"].shape[-1]:
      raise ConfigError(f"config.rcl.unlabeled_data: {u['image_a'].shape[-1]} bands, the labeled "
                        f"pairs have {t['image_a'].shape[-1]}")
    if not self.config.input.crop_size and u["label"].shape != t["label"].shape:
      raise ConfigError(f"config.rcl.unlabeled_data: pairs of {u['label'].shape} but labeled ones "
                        f"of {t['label'].shape}: set config.input.crop_size")

  def _index(self, stage: base.Stage) -> int:
    return 1 if stage.name == "stage1" else 2

  def init_state(self, run, stage, tx):
    k = self._index(stage)
    state = state_lib.create_state(run.model, tx, run.sample_shape, self.config.seed + k - 1,
                                   run.mesh)
    state = state_lib.init_pretrained(state, self.config)
    if k == 2 and self.config.rcl.stage2_init == "stage1":
      best = self._stage1_best(run, checkpointing.abstract_like(state))[0]
      state = state.replace(params=best.params, batch_stats=best.batch_stats)
    return state

  def train_step(self, run, stage, state, tx):
    c, rc = self.config, self.config.rcl
    if rc.backbone_lr_mult != 1:
      tx = with_group_lr(tx, backbone_multipliers(state.params, rc.backbone_params,
                                                  rc.backbone_lr_mult, "config.rcl"),
                         c.optim.weight_decay)
    loss_fn = make_loss(contrastive=self.contrastive, ct_weight=rc.ct_weight,
                        nochange_ce=rc.nochange_ce, class_weights=tuple(c.loss.class_weights),
                        ignore_label=c.loss.ignore_label)
    norm = (packed_normalizer(run.normalize, int(c.data.num_bands)) if self.contrastive
            else run.normalize)
    key = jax.random.fold_in(jax.random.key(c.seed), self._index(stage))
    return steps_lib.make_train_step(run.model, tx, loss_fn, norm, key, run.mesh,
                                     base.shardings_of(state))

  def _stream(self, src, batch: int, stage: int, stream: int, aug):
    return base.train_stream(self.config, src, batch, semi.stream_seed(self.config.seed, stage,
                                                                       stream),
                             augment=aug, crop=False)

  def data(self, run, stage) -> pipeline.Streams:
    b = self.config.input.batch_size
    if self._index(stage) == 1:
      lab = pipeline.Subset(run.train_src, semi.tile_indices(self.lab_idx, b), semi.LABELED)
      return pipeline.Streams({"labeled": self._stream(lab, b, 1, 0, self.aug_labeled)})
    rel = self.reliability(run)
    pool = semi.UnlabeledPool(self.unl_src, rel["indices"], rel["reliable"], rel["pseudo_labels"])
    lab = pipeline.Subset(run.train_src, semi.tile_indices(self.lab_idx, self.n_l), semi.LABELED)
    unl = pipeline.Subset(pool, semi.tile_indices(np.arange(len(pool)), self.n_u))
    return pipeline.Streams({"labeled": self._stream(lab, self.n_l, 2, 0, self.aug_labeled),
                             "unlabeled": self._stream(unl, self.n_u, 2, 1, self.aug_unlabeled)},
                            groups=parallel.local_data_devices(run.mesh))

  def after_step(self, run, loop, step: int) -> bool:
    if self._index(loop.stage) == 1 and step in self.snaps:
      loop.sync()
      # A resumed run re-trains to the same state: an existing snapshot is kept.
      g = loop.stage.offset + step
      self.snap_ck.save(g, loop.state, None, {"stage": 1, "snapshot": g})
    return False

  def close(self) -> None:
    if getattr(self, "snap_ck", None) is not None:
      self.snap_ck.close()

  # --- reliability ---

  def _stage1_best(self, run, abstract):
    ck = checkpointing.Checkpointer(storage.join(run.workdir, STAGE1_DIR), keep=1)
    try:
      return ck.restore(abstract, which=checkpointing.BEST)
    finally:
      ck.close()

  def reliability(self, run: base.Run) -> dict[str, np.ndarray]:
    """The reliable set: read back from the workdir, or computed from the stage-1 snapshots."""
    workdir, rc = run.workdir, self.config.rcl
    have = load_reliability(workdir)
    if (have is not None and len(have["indices"]) == len(self.unl_idx)
        and float(have["reliable_fraction"]) == float(rc.reliable_fraction)):
      return have
    t0 = time.perf_counter()
    tx, _ = self.optimizer(run, self.stage1)
    abstract = state_lib.create_state(run.model, tx, run.sample_shape, self.config.seed, run.mesh,
                                      abstract=True)
    best = self._stage1_best(run, abstract)
    if best is None or not set(self.snaps) <= set(self.snap_ck.all_steps()):
      raise DataError(f"{workdir}: stage 1 finished without its snapshots {self.snaps} or "
                      f"best model ({SNAPSHOT_DIR}/, {STAGE1_DIR}/best/): delete the workdir "
                      "and rerun")
    snaps = [self.snap_ck.restore(abstract, step=s)[0] for s in self.snaps]
    best_state, _, best_step = best
    step_fn = make_stability_step(run.model, run.normalize, self.config.loss.ignore_label,
                                  run.mesh)
    pool = pipeline.Subset(self.unl_src, self.unl_idx)
    res = stability_pass(step_fn, [s.variables() for s in snaps], best_state.variables(), pool,
                         self.config, run.mesh)
    reliable = rank_reliable(res["stability"], rc.reliable_fraction)
    row = {"step": self.stage1.steps, "split": "reliable", "stage": 1,
           "reliable_fraction": float(rc.reliable_fraction), **reliability_row(res, reliable),
           "snapshot_steps": list(self.snaps), "best_step": int(best_step),
           "seconds": round(time.perf_counter() - t0, 3)}
    out = {"indices": self.unl_idx, "reliable": reliable, "stability": res["stability"],
           "pseudo_labels": res["pseudo"][reliable],
           "reliable_fraction": np.float64(rc.reliable_fraction),
           "snapshot_steps": np.asarray(self.snaps), "best_step": np.int64(best_step)}
    if run.is_main:
      ids = semi.source_ids(self.unl_src)
      d = storage.join(workdir, semi.SPLIT_DIR)
      for name, m in (("reliable", reliable), ("unreliable", ~reliable)):
        semi.write_index_file(storage.join(d, f"{name}.txt"), self.unl_idx[m], ids,
                              {"stability": [f"{v:.6f}" for v in res["stability"][m]]})
      io.atomic_write(storage.join(workdir, PSEUDO_FILE), lambda f: np.savez(f, **out))
    if not any(r.get("split") == "reliable" for r in writers.read_metrics(workdir)):
      run.writer.write(row)
    logging.info("reliability: %d reliable / %d unreliable pairs (stability %s / %s)",
                 row["reliable"], row["unreliable"], row["stability_reliable"],
                 row["stability_unreliable"])
    return out


METHOD = RCL
