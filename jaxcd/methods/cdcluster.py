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
`val`/test evaluations (`phase` warmup|cluster), and one `cluster` row per clustering. The loop is
`jaxcd.trainer`'s; `jaxcd.evaluate` and `jaxcd.predict` read the change map through `head`.
"""
import hashlib
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcd import clustering, metrics as metrics_lib, parallel, steps
from jaxcd.data import pipeline
from jaxcd.data.pipeline import Subset
from jaxcd.errors import ConfigError, DataError
from jaxcd.methods import base
from jaxcd.models.cdcluster import HEAD, TOP, reinit_head
from jaxcd.state import TrainState

WARMUP, CLUSTER = "warmup", "cluster"


# --- sources -----------------------------------------------------------------------------------

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

def make_count_step(logits_fn, k: int, ignore_label: int, mesh):
  """(params, batch_stats, batch) -> K x 2 counts of (predicted cluster, true label 0/1)."""
  def step(params, batch_stats, batch):
    logits = logits_fn(params, batch_stats, batch["image_a"], batch["image_b"])
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
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
  def reinit(state: TrainState, rng: jax.Array) -> TrainState:
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


# --- the method --------------------------------------------------------------------------------

class CDCluster(base.Method):
  """Warm-up, then clustering rounds, in one stage (one state, schedule and checkpoint
  directory); the phase is a row column. Method state: the cluster-to-change map, the last
  clustering step and their count in `meta.method`; centroids, preprocessing and pseudo-labels
  as checkpoint extras."""
  name = "cdcluster"

  def check_config(self) -> None:
    _check_config(self.config)

  @property
  def k(self) -> int:
    return int(self.config.model.num_clusters)

  @property
  def eval_classes(self) -> int:
    return 2

  # --- set-up ---

  def stages(self, run: base.Run) -> list[base.Stage]:
    c, cc = self.config, self.config.cdcluster
    ignore = c.loss.ignore_label
    self.n = len(run.train_src)
    self.lab_idx = warmup_indices(run.train_src, cc.warmup_fraction, cc.min_change, c.seed, ignore)
    self.lab_labels = np.stack([run.train_src[int(i)]["label"] for i in self.lab_idx])
    self.every = cluster_every_steps(cc, self.n, c.input.batch_size)
    self.wu = int(cc.warmup_steps)
    logging.info("cdcluster: %d labeled warm-up tiles of %d, %d warm-up steps, clustering every "
                 "%d steps", len(self.lab_idx), self.n, self.wu, self.every)
    self.cent, self.prep, self.labels = None, None, None
    self.feature_fn = clustering.make_feature_fn(run.model, run.normalize)
    self.cluster_key = jax.random.fold_in(jax.random.key(c.seed), 0xC1)
    self.count_step = make_count_step(run.inference.logits, self.k, ignore, run.mesh)
    return [base.Stage("train", int(c.num_steps), eval_every=int(c.eval_every))]

  def data(self, run: base.Run, stage: base.Stage, cluster_step: int | None = None):
    c = self.config
    if cluster_step is None:
      # Fewer labeled tiles than a batch (e.g. Table 2's 1%): repeat them to fill one.
      reps = -(-c.input.batch_size // len(self.lab_idx))
      src, seed = Subset(run.train_src, np.tile(self.lab_idx, reps)), c.seed
    else:
      src = PseudoLabeled(run.train_src, self.labels)
      seed = int(np.random.SeedSequence([c.seed, cluster_step]).generate_state(1)[0] >> 1)
    return pipeline.Streams({"train": base.train_stream(c, src, c.input.batch_size, seed)})

  # --- hooks ---

  def restore(self, run, loop, extra) -> None:
    step = loop.meta.method.get("cluster_step")
    if step is None:
      return
    if extra is None or "pseudo_labels" not in extra:
      raise DataError(f"{loop.checkpointer.workdir}: a clustered run's checkpoint without its "
                      "pseudo-labels (written by an older jaxcd?)")
    self.cent, self.prep, self.labels = _from_extra(extra)
    loop.data = self.data(run, loop.stage, step)
    logging.info("cdcluster: last clustering at step %d", step)

  def start(self, run, loop, resumed: bool) -> None:
    self.reinit = make_reinit(self.tx, base.shardings_of(loop.state))
    loop.meta.method.setdefault("cluster_step", None)
    loop.meta.method.setdefault("change_map", warmup_change_map(self.k).tolist())
    loop.meta.method.setdefault("clusterings", 0)
    if not resumed and clustering_due(0, self.wu, self.every, loop.stage.steps):
      self.cluster(run, loop, 0)  # no warm-up: cluster the randomly initialised network

  def optimizer(self, run, stage):
    self.tx, sched = super().optimizer(run, stage)  # `reinit` resets the head's moments with it
    return self.tx, sched

  def eval_now(self, stage, step: int) -> bool:
    return step == self.wu and self.wu > 0

  def row_fields(self, stage, step: int) -> dict[str, Any]:
    return {"phase": WARMUP if step <= self.wu else CLUSTER}

  def before_eval(self, run, loop, step: int) -> dict[str, Any]:
    if (loop.meta.method["cluster_step"] is None
        or self.config.cdcluster.get("change_map_from", "pseudo") != "predictions"):
      return {}
    # Refit the map from the network's current predictions on the labeled warm-up tiles.
    st = loop.state
    batches = steps.eval_batches(self.config, Subset(run.train_src, self.lab_idx), run.mesh)
    pending = [self.count_step(st.params, st.batch_stats, b) for b in batches]  # all dispatched
    counts = np.sum(jax.device_get(pending), axis=0, dtype=np.int64)
    cmap = change_map_from_counts(counts, self.config.cdcluster.change_rule)
    loop.meta.method["change_map"] = cmap.tolist()
    return {"labeled_f1": round(f1_of_map(counts, cmap), 4),
            "change_clusters": np.flatnonzero(cmap).tolist()}

  def after_step(self, run, loop, step: int) -> bool:
    if not clustering_due(step, self.wu, self.every, loop.stage.steps):
      return False
    loop.sync()
    self.cluster(run, loop, step)
    return True

  def checkpoint_extra(self, loop, best: bool):
    if self.cent is None:
      return None
    return _extra(self.cent, self.prep, None if best else self.labels)

  def cluster(self, run: base.Run, loop: base.Loop, step: int) -> None:
    """Fits centroids on a sample of pixel features, gives every training pair its pseudo-labels,
    re-initialises the head's top layer and saves a checkpoint at once (a run resumed from here
    continues with these labels and does not re-cluster)."""
    c, cc, k, n = self.config, self.config.cdcluster, self.k, self.n
    t0 = time.perf_counter()
    variables = loop.state.variables()
    rng = jax.random.fold_in(self.cluster_key, step)
    m = max(k, int(round(cc.cluster_fraction * n)))
    pick = np.sort(np.random.default_rng([c.seed, step, 0xC1]).choice(n, min(m, n), replace=False))
    h, w = run.train_src[0]["label"].shape  # the feature pass sees whole (uncropped) pairs
    ppi = clustering.pixels_per_image_for(cc.max_samples, len(pick), h, w)
    x = clustering.sample_features(
        self.feature_fn, variables, steps.eval_batches(c, Subset(run.train_src, pick), run.mesh),
        max_samples=cc.max_samples, pixels_per_image=ppi, rng=rng)
    prep = clustering.Preprocess.fit(x, pca_dim=cc.pca_dim, l2=cc.l2)
    fit = clustering.fit_clusters(prep.apply(x), k, c.seed + step, niter=cc.kmeans_iters,
                                  min_size=cc.min_cluster_size or None,
                                  num_threads=cc.faiss_threads or None)
    labels = clustering.assign(self.feature_fn, variables, prep, fit.centroids,
                               steps.eval_batches(c, run.train_src, run.mesh), n)
    counts = cluster_change_counts(labels[self.lab_idx], self.lab_labels, k, c.loss.ignore_label)
    cmap = change_map_from_counts(counts, cc.change_rule)
    nmi_prev = None if self.labels is None else metrics_lib.nmi(self.labels, labels)
    self.cent, self.prep, self.labels = fit.centroids, prep, labels
    digest = hashlib.sha1(np.ascontiguousarray(self.cent, np.float32).tobytes()).hexdigest()
    # Every process logs its own: with several processes they must agree (they fit the same
    # gathered sample with the same seed).
    logging.info("cdcluster: process %d clustered at step %d: centroids sha1 %s",
                 jax.process_index(), step, digest)
    loop.state = self.reinit(loop.state, jax.random.fold_in(rng, 1))
    meta = loop.meta.method
    meta.update(cluster_step=step, change_map=cmap.tolist(), clusterings=meta["clusterings"] + 1)
    loop.data = self.data(run, loop.stage, step)
    run.writer.write({"step": step, "split": "cluster", "cluster_sizes": fit.counts.tolist(),
                      "nmi_prev": nmi_prev, "seconds": round(time.perf_counter() - t0, 3),
                      "kmeans_seconds": round(fit.seconds, 3), "num_splits": fit.num_splits,
                      "samples": int(len(x)), "pairs": int(len(pick)),
                      "change_clusters": np.flatnonzero(cmap).tolist(),
                      "labeled_f1": round(f1_of_map(counts, cmap), 4), "centroids_sha1": digest})
    loop.save(step)

  # --- inference: k cluster outputs -> change through the checkpoint's map ---

  def head(self, meta: base.RunMeta) -> jax.Array:
    """The cluster-to-change map a checkpoint holds (the warm-up map if it has none yet)."""
    return jnp.asarray(meta.method.get("change_map", warmup_change_map(self.k)), jnp.int32)

  def classes(self, logits_BxHxWxK, change_map_K):
    return change_map_K[jnp.argmax(logits_BxHxWxK, axis=-1)]

  def change_score(self, logits_BxHxWxK, change_map_K):
    """0.5 + (max softmax over change clusters - max over the others) / 2: > 0.5 exactly where
    the argmax cluster is a change cluster (the evaluation's rule) and, unlike that 0/1 map,
    smooth, so overlapping prediction windows can be blended."""
    p = jax.nn.softmax(logits_BxHxWxK.astype(jnp.float32), axis=-1)
    is_change = change_map_K > 0
    p_change = jnp.max(jnp.where(is_change, p, 0.0), axis=-1)
    p_other = jnp.max(jnp.where(is_change, 0.0, p), axis=-1)
    return 0.5 + 0.5 * (p_change - p_other)


METHOD = CDCluster
