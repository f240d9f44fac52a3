"""CDCluster (Bergamasco et al.; low supervision: supervised warm-up, then FAISS k-means
pseudo-labels) on the embedded synthetic scenes: the main command.

  python -m jaxcd.train --config configs/cdcluster.py --workdir runs/cdcluster

No download. Warm-up on 30% of the 1000 training pairs (only pairs with >= 3% changed pixels)
for 600 steps, then the unsupervised phase on all of them to step 1200: k-means (k = 20) every
5 epochs (310 steps) on a random 75%, 200,000 sampled pixel features.
Time: 7.7-8.5 min on 2 shared CPU cores.
Expect: test F1 0.88-0.89 (0.891, kappa 0.884 at the last run) from the best-validation
checkpoint, which is the end of warm-up (the clustering phase ends lower).
Other data, e.g.:
  --config.data.name=levir_cd --config.data.data_dir=/data/LEVIR-CD (or configs/cdcluster_levir.py)
Tables: docs/results.md#cdcluster
"""
import ml_collections

from jaxcd.config_base import base_config


def get_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.method = "cdcluster"  # jaxcd/methods/cdcluster.py
  c.model.name = "cdcluster"
  c.model.num_clusters = 20  # k: head outputs and k-means clusters (the paper's choice)
  c.model.features = 16  # clustered feature channels (the paper's 256x256x16)
  c.model.sobel = "magnitude"  # RGB + Sobel magnitude = 4 input channels
  c.data.name = "synthetic"
  c.input.batch_size = 16
  c.input.augment = "flip_rot"
  c.optim.name = "adam"
  c.optim.lr = 1e-3  # the paper's learning rate, constant
  c.optim.schedule = "constant"
  c.num_steps = 1200
  c.eval_every = 150
  c.checkpoint_every = 150
  c.log_every = 50

  c.cdcluster = ml_collections.ConfigDict()
  c.cdcluster.warmup_fraction = 0.3  # labeled share of the training split used in warm-up
  c.cdcluster.min_change = 0.03  # warm-up tiles need >= 3% changed pixels (0 = no filter)
  c.cdcluster.warmup_steps = 600  # supervised steps before the first clustering
  c.cdcluster.cluster_every = 5.0  # epochs of the whole training split between clusterings
  c.cdcluster.cluster_every_steps = 0  # if > 0, overrides cluster_every (in steps)
  c.cdcluster.cluster_fraction = 0.75  # random share of the training pairs each clustering sees
  c.cdcluster.max_samples = 200_000  # pixel features copied to the host for k-means (cap)
  c.cdcluster.pca_dim = 0  # PCA-whitening to this many dims before k-means (0 = off)
  c.cdcluster.l2 = True  # L2-normalise features before k-means (DeepCluster)
  c.cdcluster.min_cluster_size = 0  # repair clusters below this (0 = 0.1% of the sample)
  c.cdcluster.kmeans_iters = 20
  c.cdcluster.faiss_threads = 0  # 0 = FAISS's default; fix it for bit-identical centroids
  c.cdcluster.change_rule = "f1"  # cluster -> change from the labeled warm-up tiles: f1 | majority
  # What those tiles' clusters are read from: "pseudo" = their pseudo-labels, once per
  # clustering; "predictions" = the network's argmax, again before every evaluation.
  c.cdcluster.change_map_from = "predictions"
  return c
