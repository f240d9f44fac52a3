"""CDCluster with the paper's settings on LEVIR-CD (Bergamasco et al., Table 1).

  python -m jaxcd.train --config configs/cdcluster_levir.py --workdir runs/cdcluster_levir \
      --config.data.data_dir=/data/LEVIR-CD

k = 20, re-clustering every 5 epochs on a random 75% of the training tiles, warm-up on 30% of
the training split drawn only from tiles with >= 3% changed pixels, categorical cross-entropy,
lr 1e-3. LEVIR-CD (users obtain it from its authors) is tiled to 256x256: 7120/1024/2048 pairs.
The paper gives neither the batch size nor the number of epochs: 8 and 100 epochs (89,000 steps)
here, 25 of them warm-up.
Time: a GPU config (hours); not yet run by us.
Expect (paper Table 1, test split): F1 0.75, kappa 0.74.
Tables: docs/results.md#cdcluster-paper
"""
import ml_collections

from jaxcd.config_base import on_dataset, sibling


def get_config() -> ml_collections.ConfigDict:
  c = sibling(__file__, "cdcluster")
  on_dataset(c, "levir_cd", "")  # set data_dir on the command line: the LEVIR-CD root
  c.input.batch_size = 8
  c.input.eval_batch_size = 8
  steps_per_epoch = 7120 // 8
  c.num_steps = 100 * steps_per_epoch
  c.eval_every = 5 * steps_per_epoch
  c.checkpoint_every = steps_per_epoch
  c.log_every = 100
  c.cdcluster.warmup_steps = 25 * steps_per_epoch
  c.cdcluster.cluster_every = 5.0  # the paper's "clustering halt"
  c.cdcluster.cluster_every_steps = 0
  c.cdcluster.cluster_fraction = 0.75
  c.cdcluster.warmup_fraction = 0.3
  c.cdcluster.min_change = 0.03
  c.cdcluster.max_samples = 1_000_000  # of 0.75 x 7120 x 65536 = 350M pixel features
  c.model.num_clusters = 20
  c.optim.lr = 1e-3
  return c
