"""CDCluster on the SZTAKI AirChange benchmark (real aerial pairs), CPU-sized.

  python -m jaxcd.train --config configs/cdcluster_sztaki.py --workdir runs/cdcluster_sztaki
  python -m jaxcd.experiments.warmup_fraction --config configs/cdcluster_sztaki.py \
      --out runs/table2_sztaki                                     # the paper's Table 2 layout

Data: ../shared/data/SZTAKI_AirChange with the RCL protocol (99/12/12 tiles of 256x256); the
paper's Table 2 is on LEVIR-CD, which is not on disk here. Training sees random 128x128 crops
(batch 8) to fit 2 CPU cores; clustering and evaluation see whole tiles. 300 steps: 150 warm-up,
then k-means (k = 20) every 75 steps (~6 epochs of 99 tiles, the paper's 5-epoch "clustering halt").
Time: 49 min on 2 shared CPU cores for the six Table 2 runs; the single run is not timed.
Expect (Table 2 run): test F1 0.201 / 0.148 / 0.264 / 0.185 / 0.289 at 1/2/5/10/20% warm-up.
Tables: docs/results.md#cdcluster-warm-up-fraction-on-sztaki
"""
import ml_collections

from jaxcd.config_base import on_dataset, sibling


def get_config() -> ml_collections.ConfigDict:
  c = sibling(__file__, "cdcluster")
  on_dataset(c, "sztaki", "../shared/data/SZTAKI_AirChange")
  c.input.batch_size = 8
  c.input.eval_batch_size = 12
  c.input.augment = "flip_rot_crop"
  c.input.crop_size = 128
  c.num_steps = 300
  c.eval_every = 75
  c.checkpoint_every = 75
  c.log_every = 25
  c.cdcluster.warmup_steps = 150
  c.cdcluster.cluster_every_steps = 75
  return c
