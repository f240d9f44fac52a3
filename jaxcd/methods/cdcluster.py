"""CDCluster training (Bergamasco et al., ../shared/papers/cdcluster.txt): "low supervision".

1. Warm-up (supervised): a labeled fraction of the training split (`cdcluster.warmup_fraction`,
   drawn with a fixed seed only among tiles with >= `cdcluster.min_change` changed pixels; 0
   disables the filter) trains the network for `cdcluster.warmup_steps` with cross-entropy of the
   binary labels on the k-way head: classes 0 (no change) and 1 (change) of k. During warm-up the
   change map is argmax == 1.
2. Unsupervised phase on the whole training split. At the end of warm-up, then every
   `cdcluster.cluster_every` epochs (or `cluster_every_steps` steps), a clustering: a random
   `cluster_fraction` of the training pairs goes through the jitted feature pass, a bounded sample
   of pixel features (`max_samples`) reaches the host, `Preprocess` (optional PCA-whitening,
   optional L2) and FAISS k-means (k = `model.num_clusters`, small clusters repaired below
   `min_cluster_size`, 0 = `clustering.default_min_size`: 0.1% of the sample) fit centroids, and
   the jitted assignment gives uint8 pseudo-labels to EVERY training pair (not only the clustered
   fraction, so the whole split trains). The head's top layer is re-initialised and its Adam
   moments reset (DeepCluster); training goes on with the pseudo-labels as targets (a source
   wrapper swaps each record's label, so the joint augmentation keeps them aligned).
3. Binary change map from k outputs: argmax over the k logits gives a cluster; a cluster-to-change
   map, recomputed after each clustering from the LABELED WARM-UP TILES ONLY (their pseudo-labels
   against their true labels), says which clusters are change. Rule "f1" (default): clusters
   sorted by their fraction of changed labeled pixels, the prefix maximising F1 on those pixels is
   change; rule "majority": a cluster is change when > 50% of its labeled pixels are. With
   `cdcluster.change_map_from = "predictions"` the map is also refitted before every evaluation of
   the unsupervised phase from the network's argmax on those same labeled tiles (the head drifts
   from the pseudo-labels it was trained on; training labels still, never val/test). Validation
   labels only choose the best checkpoint (as in supervised training); test labels only score it.

Checkpoints (`latest`) carry the centroids, the preprocessing, the pseudo-labels (`extra` item) and
the cluster-to-change map and clustering step (`meta`), so a resumed run continues with the same
labels and does not re-cluster at the restored step. metrics.jsonl rows: `train` (with `phase`),
`val`/test evaluations (`phase` warmup|cluster), and one `cluster` row per clustering.
"""
import hashlib
import logging
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcd import checkpointing, clustering, metrics as metrics_lib, parallel, writers
from jaxcd.data import pipeline, source_from_config
from jaxcd.errors import ConfigError, DataError
from jaxcd.methods import common
from jaxcd.models.cdcluster import HEAD, TOP, reinit_head

WARMUP, CLUSTER = "warmup", "cluster"


# --- sources -----------------------------------------------------------------------------------

class Subset:
  """Random-access view of `source` at `indices` (picklable, for grain)."""

  def __init__(self, source: Any, indices: Sequence[int]):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return self.source[int(self.indices[i])]


class PseudoLabeled:
  """`source` whose record i has `labels_NxHxW[i]` as its label (the pseudo-labels)."""

  def __init__(self, source: Any, labels_NxHxW: np.ndarray):
    if len(labels_NxHxW) != len(source):
      raise ValueError(f"{len(labels_NxHxW)} pseudo-label maps for {len(source)} pairs")
    self.source, self.labels = source, labels_NxHxW

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict[str, Any]:
    rec = dict(self.source[i])
    rec["label"] = np.array(self.labels[i], np.uint8)  # a copy: augmentations may write into it
    return rec


# --- warm-up selection and the cluster-to-change map ---------------------------------------------

def change_fraction(label_HxW: np.ndarray, ignore_label: int = 255) -> float:
  valid = label_HxW != ignore_label
  return float((label_HxW[valid] == 1).sum() / max(int(valid.sum()), 1))


def warmup_indices(source: Any, fraction: float, min_change: float, seed: int,
                   ignore_label: int = 255) -> np.ndarray:
  """Sorted indices of the labeled warm-up tiles: round(fraction * len(source)) drawn with
  `seed` among tiles with a changed-pixel fraction >= min_change (all of them if fewer)."""
  if not 0 < fraction <= 1:
    raise ConfigError(f"config.cdcluster.warmup_fraction must be in (0, 1], got {fraction}")
  if not 0 <= min_change < 1:
    raise ConfigError(f"config.cdcluster.min_change must be in [0, 1), got {min_change}")
  n = len(source)
  eligible = np.arange(n) if min_change <= 0 else np.array(
      [i for i in range(n) if change_fraction(source[i]["label"], ignore_label) >= min_change],
      np.int64)
  if len(eligible) == 0:
    raise ConfigError(f"config.cdcluster.min_change={min_change}: no training tile has that many "
                      "changed pixels (lower it, or 0 disables the filter)")
  want = max(1, int(round(fraction * n)))
  if want > len(eligible):
    logging.warning("warm-up: %d tiles wanted, only %d have >= %.1f%% change; using them all",
                    want, len(eligible), 100 * min_change)
    return eligible
  pick = np.random.default_rng([seed, 0x57A2]).choice(len(eligible), want, replace=False)
  return np.sort(eligible[pick])


def cluster_change_counts(pseudo_NxHxW: np.ndarray, labels_NxHxW: np.ndarray, k: int,
                          ignore_label: int = 255) -> np.ndarray:
  """K x 2 counts of (unchanged, changed) labeled pixels per cluster."""
  p, y = np.ravel(pseudo_NxHxW).astype(np.int64), np.ravel(labels_NxHxW).astype(np.int64)
  ok = (y != ignore_label) & (y <= 1) & (p < k)
  return np.bincount(p[ok] * 2 + y[ok], minlength=2 * k).reshape(k, 2)


def change_map_from_counts(counts_Kx2: np.ndarray, rule: str = "f1") -> np.ndarray:
  """uint8 K: 1 for the clusters called change (see the module docstring for the rules)."""
  counts = np.asarray(counts_Kx2, np.float64)
  n0, n1 = counts[:, 0], counts[:, 1]
  frac = np.where(n0 + n1 > 0, n1 / np.maximum(n0 + n1, 1), 0.0)
  if rule == "majority":
    return (frac > 0.5).astype(np.uint8)
  if rule != "f1":
    raise ConfigError(f"config.cdcluster.change_rule must be 'f1' or 'majority', not {rule!r}")
  order = np.argsort(-frac, kind="stable")
  tp, fp = np.cumsum(n1[order]), np.cumsum(n0[order])
  f1 = 2 * tp / np.maximum(2 * tp + fp + (n1.sum() - tp), 1)
  out = np.zeros(len(counts), np.uint8)
  if n1.sum() > 0:
    out[order[:int(np.argmax(f1)) + 1]] = 1
  return out


def warmup_change_map(k: int) -> np.ndarray:
  """During warm-up the head is trained on classes 0/1: class 1 is change."""
  m = np.zeros(k, np.uint8)
  m[1] = 1
  return m


def f1_of_map(counts_Kx2: np.ndarray, change_map_K: np.ndarray) -> float:
  n0, n1 = np.asarray(counts_Kx2, np.float64).T
  on = np.asarray(change_map_K, bool)
  tp, fp, fn = n1[on].sum(), n0[on].sum(), n1[~on].sum()
  return float(2 * tp / max(2 * tp + fp + fn, 1))


# --- jitted pieces ---------------------------------------------------------------------------

def make_eval_step(model, normalize, ignore_label: int, mesh):
  """(params, batch_stats, change_map_K, batch) -> 2x2 confusion matrix of the binary map
  change_map[argmax_k logits] (the map is an argument: a new one needs no recompilation)."""
  def step(params, batch_stats, change_map_K, batch):
    out, _ = common.apply_model(model, params, batch_stats, normalize(batch["image_a"]),
                                normalize(batch["image_b"]), train=False)
    pred = jnp.asarray(change_map_K, jnp.int32)[jnp.argmax(out["logits"], axis=-1)]
    return metrics_lib.confusion_matrix(pred, batch["label"], 2, ignore_label,
                                        valid=batch["valid"][:, None, None])
  return jax.jit(step, out_shardings=parallel.replicated(mesh))


def stored_change_map(meta: dict, k: int) -> np.ndarray:
  """The cluster-to-change map a checkpoint holds (the warm-up map if it has none yet)."""
  return np.asarray(meta.get("change_map", warmup_change_map(k)), np.int32)


def make_change_score_fn(model, normalize):
  """(params, batch_stats, change_map_K, a, b) -> BxHxW change score in [0, 1] for prediction:
  0.5 + (max softmax over change clusters - max over the others) / 2. It is > 0.5 exactly where
  the argmax cluster is a change cluster (the evaluation's rule), and, unlike that 0/1 map,
  varies smoothly, so overlapping prediction windows can be blended."""
  def score(params, batch_stats, change_map_K, a, b):
    out, _ = common.apply_model(model, params, batch_stats, normalize(a), normalize(b),
                                train=False)
    p = jax.nn.softmax(out["logits"].astype(jnp.float32), axis=-1)
    is_change = jnp.asarray(change_map_K, jnp.int32) > 0
    p_change = jnp.max(jnp.where(is_change, p, 0.0), axis=-1)
    p_other = jnp.max(jnp.where(is_change, 0.0, p), axis=-1)
    return 0.5 + 0.5 * (p_change - p_other)
  return jax.jit(score)


def make_count_step(model, normalize, k: int, ignore_label: int, mesh):
  """(params, batch_stats, batch) -> K x 2 counts of (predicted cluster, true label 0/1)."""
  def step(params, batch_stats, batch):
    out, _ = common.apply_model(model, params, batch_stats, normalize(batch["image_a"]),
                                normalize(batch["image_b"]), train=False)
    pred = jnp.argmax(out["logits"], axis=-1).astype(jnp.int32)
    lab = batch["label"].astype(jnp.int32)
    ok = (lab != ignore_label) & (lab <= 1) & batch["valid"][:, None, None]
    idx = jnp.where(ok, pred * 2 + lab, 2 * k)
    return jnp.bincount(idx.ravel(), length=2 * k + 1)[:2 * k].reshape(k, 2)
  return jax.jit(step, out_shardings=parallel.replicated(mesh))


def _is_top(path) -> bool:
  keys = [getattr(p, "key", None) for p in path]
  return any(a == HEAD and b == TOP for a, b in zip(keys, keys[1:]))


def make_reinit(tx, state_shardings):
  """Jitted (state, rng) -> state with the head's top layer re-initialised (DeepCluster) and its
  optimizer moments reset (they describe the old clusters); everything else is kept."""
  def reinit(state: common.TrainState, rng: jax.Array) -> common.TrainState:
    params = reinit_head(state.params, rng)
    fresh = tx.init(params)
    opt = jax.tree_util.tree_map_with_path(lambda p, old, new: new if _is_top(p) else old,
                                           state.opt_state, fresh)
    return state.replace(params=params, opt_state=opt)
  return jax.jit(reinit, out_shardings=state_shardings)


# --- schedule and config ---------------------------------------------------------------------

def cluster_every_steps(cc, num_train: int, batch_size: int) -> int:
  """Steps between clusterings: `cluster_every_steps` if set, else `cluster_every` epochs."""
  if cc.get("cluster_every_steps", 0):
    every = int(cc.cluster_every_steps)
  else:
    if cc.cluster_every <= 0:
      raise ConfigError(f"config.cdcluster.cluster_every must be > 0, got {cc.cluster_every}")
    every = int(round(cc.cluster_every * max(num_train // batch_size, 1)))
  if every < 1:
    raise ConfigError("config.cdcluster.cluster_every_steps must be >= 1")
  return every


def clustering_due(step: int, warmup_steps: int, every: int, num_steps: int) -> bool:
  """A clustering runs after training step `step` (0 = before the first step)."""
  return step >= warmup_steps and (step - warmup_steps) % every == 0 and step < num_steps


def _check_config(config) -> None:
  cc = config.cdcluster
  k = int(config.model.num_clusters)
  if not 2 <= k <= 255:
    raise ConfigError(f"config.model.num_clusters must be in 2..255 (uint8 pseudo-labels), got {k}")
  if not 0 < cc.cluster_fraction <= 1:
    raise ConfigError(f"config.cdcluster.cluster_fraction must be in (0, 1], got {cc.cluster_fraction}")
  if not 0 <= cc.warmup_steps <= config.num_steps:
    raise ConfigError(f"config.cdcluster.warmup_steps must be in 0..num_steps ({config.num_steps}), "
                      f"got {cc.warmup_steps}")
  if cc.get("change_map_from", "pseudo") not in ("pseudo", "predictions"):
    raise ConfigError("config.cdcluster.change_map_from must be 'pseudo' or 'predictions', not "
                      f"{cc.change_map_from!r}")
  if cc.max_samples < k:
    raise ConfigError(f"config.cdcluster.max_samples={cc.max_samples} is below k={k}")


# --- clustering state ------------------------------------------------------------------------

def _extra(centroids, prep: clustering.Preprocess, labels) -> dict[str, np.ndarray]:
  out = {"centroids": np.asarray(centroids, np.float32), "prep_mean": prep.mean,
         "prep_l2": np.int32(prep.l2)}
  if prep.proj is not None:
    out["prep_proj"] = prep.proj
  if labels is not None:
    out["pseudo_labels"] = labels
  return out


def _from_extra(extra: dict) -> tuple[np.ndarray, clustering.Preprocess, np.ndarray | None]:
  prep = clustering.Preprocess(np.asarray(extra["prep_mean"], np.float32),
                               None if "prep_proj" not in extra else np.asarray(extra["prep_proj"]),
                               bool(extra["prep_l2"]))
  return np.asarray(extra["centroids"]), prep, extra.get("pseudo_labels")


def train_and_evaluate(config, workdir: str) -> dict:
  """Warm-up, then clustering rounds; writes WORKDIR/metrics.jsonl and checkpoints; returns the
  final metrics per split of the best-validation checkpoint."""
  _check_config(config)
  cc = config.cdcluster
  k = int(config.model.num_clusters)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.input.batch_size)
  parallel.check_batch_size(config.input.eval_batch_size, "input.eval_batch_size")
  is_main = jax.process_index() == 0
  pidx, pcount = jax.process_index(), jax.process_count()
  train_src = source_from_config(config.data, "train")
  val_src = source_from_config(config.data, "val")
  n = len(train_src)
  ignore = config.loss.ignore_label

  lab_idx = warmup_indices(train_src, cc.warmup_fraction, cc.min_change, config.seed, ignore)
  lab_labels = np.stack([train_src[int(i)]["label"] for i in lab_idx])
  every = cluster_every_steps(cc, n, config.input.batch_size)
  wu = int(cc.warmup_steps)
  logging.info("cdcluster: %d labeled warm-up tiles of %d, %d warm-up steps, clustering every %d "
               "steps", len(lab_idx), n, wu, every)

  model = common.build_model(config)
  tx, sched = common.make_optimizer(config.optim, config.num_steps)
  normalize = common.make_normalizer(config)
  shape = common.sample_shape(train_src, config)
  state = common.create_state(model, tx, shape, config.seed, mesh)
  state = common.init_pretrained(state, config)
  state_sh = jax.tree_util.tree_map(lambda x: x.sharding, state)
  feature_fn = clustering.make_feature_fn(model, normalize)
  cluster_key = jax.random.fold_in(jax.random.key(config.seed), 0xC1)

  def train_iter(cluster_step, labels):
    if cluster_step is None:
      # Fewer labeled tiles than a batch (e.g. Table 2's 1%): repeat them to fill one.
      reps = -(-config.input.batch_size // len(lab_idx))
      src, seed = Subset(train_src, np.tile(lab_idx, reps)), config.seed
    else:
      src = PseudoLabeled(train_src, labels)
      seed = int(np.random.SeedSequence([config.seed, cluster_step]).generate_state(1)[0] >> 1)
    return iter(pipeline.train_dataset(
        src, global_batch_size=config.input.batch_size, seed=seed, augment=config.input.augment,
        crop_size=config.input.crop_size, process_index=pidx, process_count=pcount,
        worker_count=config.input.worker_count, prefetch=config.input.prefetch))

  def eval_batches(src):
    ds = pipeline.eval_dataset(src, global_batch_size=config.input.eval_batch_size,
                               process_index=pidx, process_count=pcount)
    return (parallel.to_global(b, mesh) for b in ds)

  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  writer = writers.MetricWriter(workdir, enabled=is_main)
  meta = {"best_f1": -1.0, "best_step": None, "best_phase": None, "cluster_step": None,
          "change_map": warmup_change_map(k).tolist(), "clusterings": 0}
  cent, prep, labels = None, None, None
  start, data_state = 0, None
  if ckpt.latest_step() is not None:
    state, data_state, meta, start = ckpt.restore(checkpointing.abstract_like(state))
    if meta.get("cluster_step") is not None:
      extra = ckpt.restore_extra(start)
      if extra is None or "pseudo_labels" not in extra:
        raise DataError(f"{workdir}/checkpoints/{start}: a clustered run's checkpoint without "
                        "its pseudo-labels (written by an older jaxcd?)")
      cent, prep, labels = _from_extra(extra)
    writer.truncate_after(start)
    logging.info("resumed from %s/checkpoints/%d (last clustering at step %s)", workdir, start,
                 meta.get("cluster_step"))
  it = train_iter(meta["cluster_step"], labels)
  if start and data_state is not None:
    it.set_state(pipeline.state_from_json(data_state["grain"]))

  train_step = common.make_train_step(model, tx, common.make_loss(config), normalize,
                                      jax.random.key(config.seed), mesh, state_sh)
  eval_step = make_eval_step(model, normalize, ignore, mesh)
  reinit = make_reinit(tx, state_sh)
  watch = common.LossWatch(workdir)

  count_step = make_count_step(model, normalize, k, ignore, mesh)

  def refit_change_map():
    """The map from the network's current predictions on the labeled warm-up tiles."""
    nonlocal meta
    counts = np.zeros((k, 2), np.int64)
    for b in eval_batches(Subset(train_src, lab_idx)):
      counts += np.asarray(jax.device_get(count_step(state.params, state.batch_stats, b)), np.int64)
    cmap = change_map_from_counts(counts, cc.change_rule)
    meta = {**meta, "change_map": cmap.tolist()}
    return f1_of_map(counts, cmap)

  def evaluate(src, desc):
    cmap = jnp.asarray(meta["change_map"], jnp.int32)
    return common.evaluate(lambda p, bs, b: eval_step(p, bs, cmap, b), state.params,
                           state.batch_stats, src, config, mesh, desc)

  def do_cluster(step: int):
    nonlocal state, cent, prep, labels, it, meta
    t0 = time.perf_counter()
    variables = state.variables()
    rng = jax.random.fold_in(cluster_key, step)
    m = max(k, int(round(cc.cluster_fraction * n)))
    pick = np.sort(np.random.default_rng([config.seed, step, 0xC1]).choice(n, min(m, n), replace=False))
    h, w = train_src[0]["label"].shape  # the feature pass sees whole (uncropped) pairs
    ppi = clustering.pixels_per_image_for(cc.max_samples, len(pick), h, w)
    x = clustering.sample_features(feature_fn, variables, eval_batches(Subset(train_src, pick)),
                                   max_samples=cc.max_samples, pixels_per_image=ppi, rng=rng)
    new_prep = clustering.Preprocess.fit(x, pca_dim=cc.pca_dim, l2=cc.l2)
    fit = clustering.fit_clusters(new_prep.apply(x), k, config.seed + step, niter=cc.kmeans_iters,
                                  min_size=cc.min_cluster_size or None,
                                  num_threads=cc.faiss_threads or None)
    new_labels = clustering.assign(feature_fn, variables, new_prep, fit.centroids,
                                   eval_batches(train_src), n)
    counts = cluster_change_counts(new_labels[lab_idx], lab_labels, k, ignore)
    cmap = change_map_from_counts(counts, cc.change_rule)
    nmi_prev = None if labels is None else clustering.nmi(labels, new_labels)
    cent, prep, labels = fit.centroids, new_prep, new_labels
    digest = hashlib.sha1(np.ascontiguousarray(cent, np.float32).tobytes()).hexdigest()
    # Every process logs its own: with several processes they must agree (they fit the same
    # gathered sample with the same seed).
    logging.info("cdcluster: process %d clustered at step %d: centroids sha1 %s",
                 jax.process_index(), step, digest)
    state = reinit(state, jax.random.fold_in(rng, 1))
    meta = {**meta, "cluster_step": step, "change_map": cmap.tolist(),
            "clusterings": meta["clusterings"] + 1}
    it = train_iter(step, labels)
    writer.write({"step": step, "split": "cluster", "cluster_sizes": fit.counts.tolist(),
                  "nmi_prev": nmi_prev, "seconds": round(time.perf_counter() - t0, 3),
                  "kmeans_seconds": round(fit.seconds, 3), "num_splits": fit.num_splits,
                  "samples": int(len(x)), "pairs": int(len(pick)),
                  "change_clusters": np.flatnonzero(cmap).tolist(),
                  "labeled_f1": round(f1_of_map(counts, cmap), 4), "centroids_sha1": digest})
    # Saved at once: a run resumed from here continues with these labels and does not re-cluster.
    ckpt.save(step, state, {"grain": pipeline.state_to_json(it.get_state())}, meta,
              extra=_extra(cent, prep, labels))

  bar = common.progress(config, config.num_steps, start, "train")
  log = common.TrainLogger(config, writer, sched, bar, start,
                           fields=lambda s: {"phase": WARMUP if s <= wu else CLUSTER})

  if start == 0 and clustering_due(0, wu, every, config.num_steps):
    do_cluster(0)  # no warm-up: cluster the randomly initialised network
  for step in range(start + 1, config.num_steps + 1):
    batch = parallel.to_global(next(it), mesh)
    state, mtr = train_step(state, batch)
    log(watch.push(step, mtr))
    bar.update(1)
    is_last = step == config.num_steps
    if step % config.eval_every == 0 or is_last or (step == wu and wu > 0):
      log(watch.drain())  # never evaluate or save a state whose loss is not finite
      phase = WARMUP if meta["cluster_step"] is None else CLUSTER
      extra_cols = {}
      if phase == CLUSTER and cc.get("change_map_from", "pseudo") == "predictions":
        extra_cols = {"labeled_f1": round(refit_change_map(), 4),
                      "change_clusters": np.flatnonzero(meta["change_map"]).tolist()}
      res = evaluate(val_src, "val")
      writer.write({"step": step, "split": "val", "phase": phase, **res, **extra_cols})
      if res["f1"] > meta["best_f1"]:
        meta = {**meta, "best_f1": res["f1"], "best_step": step, "best_phase": phase}
        ckpt.save(step, state, None, meta, best=True,
                  extra=None if cent is None else _extra(cent, prep, None))
      if is_main and config.progress:
        bar.write(f"step {step} ({phase}): val f1 {res['f1']:.4f} "
                  f"(best {meta['best_f1']:.4f} @ step {meta['best_step']})")
    if clustering_due(step, wu, every, config.num_steps):
      log(watch.drain())
      do_cluster(step)
    elif step % config.checkpoint_every == 0 or is_last:
      log(watch.drain())
      ckpt.save(step, state, {"grain": pipeline.state_to_json(it.get_state())}, meta,
                extra=None if cent is None else _extra(cent, prep, labels))
  log(watch.drain())
  bar.close()

  # Final evaluation with the best validation checkpoint and its cluster-to-change map.
  final = {}
  if ckpt.best_step() is not None:
    state, _, meta, _ = ckpt.restore(checkpointing.abstract_like(state), which=checkpointing.BEST)
  for split in config.eval_splits:
    src = source_from_config(config.data, split)
    res = evaluate(src, split)
    writer.write({"step": int(state.step), "split": split, "checkpoint": "best",
                  "phase": meta.get("best_phase"), **res})
    final[split] = res
    if is_main:
      logging.info("%s: f1 %.4f kappa %.4f (checkpoint step %d, %s)", split, res["f1"],
                   res["kappa"], int(state.step), meta.get("best_phase"))
  writer.close()
  ckpt.close()
  return final


def evaluate_workdir(config, workdir: str, split: str, checkpoint: str = "best") -> dict:
  """Metrics of a trained CDCluster checkpoint on `split` with the cluster-to-change map stored
  in it (`jaxcd.evaluate`'s generic argmax would read cluster ids as classes)."""
  mesh = parallel.make_mesh()
  source = source_from_config(config.data, split)
  shape = common.sample_shape(source, config)
  model, state, meta, step, which = common.restore_trained(
      config, workdir, shape, mesh, checkpointing.BEST if checkpoint == "best" else checkpointing.LATEST)
  eval_step = make_eval_step(model, common.make_normalizer(config), config.loss.ignore_label, mesh)
  cmap = jnp.asarray(stored_change_map(meta, int(config.model.num_clusters)))
  res = common.evaluate(lambda p, bs, b: eval_step(p, bs, cmap, b), state.params,
                        state.batch_stats, source, config, mesh, split)
  return {"split": split, "step": int(step), "checkpoint": which, "pairs": len(source),
          "phase": meta.get("best_phase") if which == checkpointing.BEST else None, **res}
