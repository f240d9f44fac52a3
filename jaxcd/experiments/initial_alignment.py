"""Initial Alignment (CDCluster paper, Fig. 3; Mustapha et al.): how well the pseudo-labels of a
randomly initialised network agree with the ground truth, before any training.

  python -m jaxcd.experiments.initial_alignment --config configs/cdcluster.py \
      --ks 2,5,10,20,50,100,200,500 --seeds 8 --out runs/ia

IA(k, seed) = adjusted mutual information (sklearn's definition, arithmetic mean) between the
ground-truth change labels and the k-means pseudo-labels of the features of the network
initialised with `seed`, over the training split (the first `--max_pairs` of a fixed random
order; the same pairs for every seed). Per seed the features come from one jitted pass (eval mode:
BatchNorm with its initial statistics); the clustering is the training's: a bounded random sample
(`--max_samples`), `Preprocess` (config.cdcluster.pca_dim / l2), FAISS k-means; every pixel of the
pairs is then assigned on device. Only empty clusters are repaired (`--min_cluster_size 1`): the
natural imbalance of an untrained network is what IA measures. Writes OUT/ia.csv (k, seed, ia,
nmi, seconds) and OUT/ia.png (IA against k on a log axis: a line per seed, the mean in bold), and
prints a JSON last line with the mean IA per k.
"""
import csv
import functools
import logging
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxcd import clustering, metrics
from jaxcd.data import pipeline, source_from_config
from jaxcd.errors import ConfigError
from jaxcd.data.normalize import make_normalizer
from jaxcd.state import build_model


def _pair_indices(n: int, max_pairs: int) -> np.ndarray:
  """The first max_pairs of a fixed permutation (all pairs if max_pairs <= 0), sorted."""
  if max_pairs <= 0 or max_pairs >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng(0).permutation(n)[:max_pairs])


@functools.partial(jax.jit, static_argnames=("l2",))
def _labels(feat_BxHxWxD, mean, proj, l2: bool, centroids_KxD):
  prep = clustering.Preprocess(mean, proj, l2)
  return clustering.assign_pixels(feat_BxHxWxD, prep, centroids_KxD)


def initial_alignment(config, ks: Sequence[int], seeds: Sequence[int], *, max_pairs: int = 200,
                      max_samples: int = 200_000, min_cluster_size: int = 1,
                      split: str = "train", progress: bool = True,
                      return_labels: bool = False) -> list[dict]:
  """Rows {k, seed, ia, nmi, seconds} for every (seed, k); with return_labels each row also has
  the pseudo-labels `labels` (N x H x W) and the ground truth `truth` it was scored against."""
  ks = [int(k) for k in ks]
  if not ks or min(ks) < 2:
    raise ConfigError(f"--ks: every k must be >= 2, got {ks}")
  source = source_from_config(config.data, split)
  if len(source) == 0:
    raise ConfigError(f"split {split!r} has no pairs")
  pick = _pair_indices(len(source), max_pairs)
  sub = [source[int(i)] for i in pick]
  truth = np.stack([r["label"] for r in sub])
  valid = truth != config.loss.ignore_label
  if not valid.any():
    raise ConfigError(f"split {split!r}: every label pixel is ignored")
  model = build_model(config)
  normalize = make_normalizer(config)
  feature_fn = clustering.make_feature_fn(model, normalize)
  h, w, c = sub[0]["image_a"].shape
  if c != config.data.num_bands:
    raise ConfigError(f"config.data.num_bands={config.data.num_bands} but {sub[0]['id']} has {c} bands")

  @jax.jit
  def init(key):
    x = jnp.zeros((1, h, w, c), jnp.float32)
    return model.init({"params": key, "dropout": key}, x, x, train=False)

  feats = jax.jit(feature_fn)
  batch_size = config.input.eval_batch_size
  batches = list(pipeline.eval_dataset(sub, global_batch_size=batch_size))
  rows = []
  cc = config.cdcluster
  bar = tqdm(total=len(seeds) * len(ks), desc="IA", disable=not progress)
  for seed in seeds:
    variables = init(jax.random.key(int(seed)))
    # Features of every pair stay on the device; only a bounded sample reaches k-means.
    feat_list = [feats(variables, {k: b[k] for k in ("image_a", "image_b")}) for b in batches]
    ppi = clustering.pixels_per_image_for(max_samples, len(sub), h, w)
    x = clustering.sample_features(feature_fn, variables, batches, max_samples=max_samples,
                                   pixels_per_image=ppi, rng=jax.random.key(int(seed)))
    prep = clustering.Preprocess.fit(x, pca_dim=cc.pca_dim, l2=cc.l2)
    xp = prep.apply(x)
    proj = None if prep.proj is None else jnp.asarray(prep.proj)
    for k in ks:
      t0 = time.perf_counter()
      fit = clustering.fit_clusters(xp, k, int(seed), niter=cc.kmeans_iters,
                                    min_size=min_cluster_size,
                                    num_threads=cc.faiss_threads or None)
      cents = jnp.asarray(fit.centroids)
      labs = np.concatenate([np.asarray(_labels(f, jnp.asarray(prep.mean), proj, prep.l2, cents))
                             for f in feat_list])
      labs = labs[np.concatenate([np.asarray(b["valid"]) for b in batches]).astype(bool)]
      ia = metrics.adjusted_mutual_info(truth[valid], labs[valid])
      row = {"k": k, "seed": int(seed), "ia": ia, "nmi": metrics.nmi(truth[valid], labs[valid]),
             "seconds": round(time.perf_counter() - t0, 3)}
      if return_labels:
        row.update(labels=labs, truth=truth)
      rows.append(row)
      bar.update(1)
      logging.info("IA k=%d seed=%d: %.5f", k, seed, ia)
  bar.close()
  return rows


def mean_by_k(rows: list[dict]) -> dict[int, float]:
  ks = sorted({r["k"] for r in rows})
  return {k: float(np.mean([r["ia"] for r in rows if r["k"] == k])) for k in ks}


def write_outputs(rows: list[dict], out: str, title: str = "") -> tuple[str, str]:
  """OUT/ia.csv and OUT/ia.png (log-x, one line per seed, the mean in bold)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(out, exist_ok=True)
  csv_path, png_path = os.path.join(out, "ia.csv"), os.path.join(out, "ia.png")
  with open(csv_path, "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=["k", "seed", "ia", "nmi", "seconds"])
    wr.writeheader()
    for r in rows:
      wr.writerow({key: r[key] for key in wr.fieldnames})
  fig, ax = plt.subplots(figsize=(6, 4))
  for seed in sorted({r["seed"] for r in rows}):
    pts = sorted((r["k"], r["ia"]) for r in rows if r["seed"] == seed)
    ax.plot(*zip(*pts), color="0.6", lw=0.8, marker=".", label="seeds" if seed == rows[0]["seed"] else None)
  mean = mean_by_k(rows)
  ax.plot(list(mean), list(mean.values()), color="tab:blue", lw=2.5, marker="o", label="mean")
  ax.set_xscale("log")
  ax.set_xlabel("number of clusters k")
  ax.set_ylabel("IA (adjusted mutual information)")
  ax.set_title(title or "Initial Alignment of the randomly initialised network")
  ax.legend()
  fig.tight_layout()
  fig.savefig(png_path, dpi=120)
  plt.close(fig)
  return csv_path, png_path


def main(argv):
  del argv
  from absl import flags
  from jaxcd import cli
  f = flags.FLAGS

  def run():
    ks = [int(v) for v in f.ks.split(",") if v.strip()]
    rows = initial_alignment(f.config, ks, list(range(f.seeds)), max_pairs=f.max_pairs,
                             max_samples=f.max_samples, min_cluster_size=f.min_cluster_size,
                             split=f.split, progress=f.config.progress)
    name = f.config.data.name
    write_outputs(rows, f.out, f"Initial Alignment, {name} ({f.split}), {f.seeds} seeds")
    return {"out": f.out, "dataset": name, "mean_ia": {str(k): round(v, 6) for k, v in
                                                       mean_by_k(rows).items()}}

  cli.print_json(cli.run_guarded(run))


if __name__ == "__main__":
  from absl import flags

  from jaxcd import cli
  cli.define_config_flag("Config file (configs/*.py).")
  flags.DEFINE_string("ks", "2,5,10,20,50,100,200,500", "Comma-separated numbers of clusters.")
  flags.DEFINE_integer("seeds", 8, "Network initialisations: seeds 0..N-1.")
  flags.DEFINE_string("out", "runs/ia", "Output folder for ia.csv and ia.png.")
  flags.DEFINE_integer("max_pairs", 200, "Pairs of the split used (0 = all).")
  flags.DEFINE_integer("max_samples", 200_000, "Pixel features k-means is fitted on.")
  flags.DEFINE_integer("min_cluster_size", 1, "Clusters below this are repaired (1 = empty only).")
  flags.DEFINE_string("split", "train", "Split whose ground truth IA is measured against.")
  cli.run_app(main)
