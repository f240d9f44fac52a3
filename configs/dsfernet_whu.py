"""Dsfer-Net on WHU-CD with the paper's settings (Chang et al. 2024, Sec. IV-B).

  python -m jaxcd.train --config configs/dsfernet_whu.py --workdir runs/dsfernet_whu \
      --config.data.data_dir=/data/WHU-CD --config.init.backbone=/weights/vgg16-397923af.pth

Data: the 2012/2016 pair cut into non-overlapping 256x256 tiles, random 6:1:3 split with a fixed
seed (4572/762/2286 in the paper). Everything else as configs/dsfernet_levir.py (batch 32, Adam
lr 1e-5, weight decay 1e-5, linear decay over 30k, validation every 500).
Time: a GPU config, not run (the estimate of configs/dsfernet_levir.py).
Expect (paper Table I, WHU-CD): F1 92.58, IoU 86.18.
Official code: --config.optim.lr=5e-5 --config.optim.schedule=poly (stop at 15k)
--config.loss.lam=1; BGR for its checkpoints: --config.data.band_order="(2,1,0)"
--config.data.mean="(107.9191,118.1207,123.3417)" --config.data.std="(51.0839,47.8814,49.5432)"
Tables: docs/results.md#dsfer-net-paper
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "dsfernet_levir")
  on_dataset(c, "whu_cd", "")  # WHU-CD root: the large pair (tiled on access) or pre-cut tiles
  # Official statistics (WHUDataSet.py) reordered from BGR to RGB, 0-255 space.
  c.data.mean = (123.3417, 118.1207, 107.9191)
  c.data.std = (49.5432, 47.8814, 51.0839)
  c.loss.class_weights = (1.04715042, 22.20871691)  # official Train.py, WHU_Building
  c.loss.lam = 0.01  # paper Table V best for WHU-CD; code 1
  c.optim.lr = 1e-5  # paper; code 5e-5
  return c
