"""DSAMNet on WHU-CD with the official recipe of configs/dsamnet_levir.py.

  python -m jaxcd.train --config configs/dsamnet_whu.py --workdir runs/dsamnet_whu \
      --config.data.data_dir=/data/WHU-CD --config.init.backbone=/weights/resnet18-5c106cde.pth

Data: the 2012/2016 pair cut into non-overlapping 256x256 tiles, random 6:1:3 split with a fixed
seed (4572/762/2286 in Dsfer-Net); 100 epochs at batch 8 over 4572 tiles are 100 x 572 = 57,200
steps. Everything else as configs/dsamnet_levir.py.
Time: a GPU config, not run.
Expect (paper, Dsfer-Net Table I, WHU-CD): F1 86.71, IoU 76.53.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "dsamnet_levir")
  on_dataset(c, "whu_cd", "")  # WHU-CD root: the large pair (tiled on access) or pre-cut tiles
  c.num_steps = 57200  # 100 epochs of 572 batches
  c.eval_every = 5720  # every 10 epochs
  c.checkpoint_every = 5720
  return c
