"""STANet-PAM on WHU-CD with the official recipe of configs/stanet_levir.py.

  python -m jaxcd.train --config configs/stanet_whu.py --workdir runs/stanet_whu \
      --config.data.data_dir=/data/WHU-CD --config.init.backbone=/weights/resnet18-5c106cde.pth

Data: the 2012/2016 pair cut into non-overlapping 256x256 tiles, random 6:1:3 split with a fixed
seed (4572/762/2286 in Dsfer-Net). The official code documents LEVIR-CD only; its 200 epochs at
batch 8 over 4572 training tiles are 200 x 572 = 114,400 steps. Everything else as
configs/stanet_levir.py.
Time: a GPU config, not run.
Expect (Dsfer-Net Table I, WHU-CD): F1 87.02, IoU 77.02.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "stanet_levir")
  on_dataset(c, "whu_cd", "")  # WHU-CD root: the large pair (tiled on access) or pre-cut tiles
  c.num_steps = 114400  # 200 epochs of 572 batches
  c.eval_every = 5720  # every 10 epochs
  c.checkpoint_every = 5720
  return c
