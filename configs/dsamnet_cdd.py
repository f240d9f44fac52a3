"""DSAMNet on CDD (season-varying) with the official recipe of configs/dsamnet_levir.py.

  python -m jaxcd.train --config configs/dsamnet_cdd.py --workdir runs/dsamnet_cdd \
      --config.data.data_dir=/data/CDD --config.init.backbone=/weights/resnet18-5c106cde.pth

Data: `subset/{train,val,test}/{A,B,OUT}`, 256x256, 10000/2998/3000 pairs; 100 epochs at batch 8
are 100 x 1250 = 125,000 steps. Everything else as configs/dsamnet_levir.py.
Time: a GPU config, not run.
Expect (paper, Dsfer-Net Table I, CDD): F1 92.91, IoU 86.76.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "dsamnet_levir")
  on_dataset(c, "cdd", "")  # CDD root, or its `subset` folder; it comes pre-tiled
  c.num_steps = 125000  # 100 epochs of 1250 batches
  c.eval_every = 12500  # every 10 epochs
  c.checkpoint_every = 12500
  return c
