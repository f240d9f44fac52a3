"""STANet-PAM on CDD (season-varying) with the official recipe of configs/stanet_levir.py.

  python -m jaxcd.train --config configs/stanet_cdd.py --workdir runs/stanet_cdd \
      --config.data.data_dir=/data/CDD --config.init.backbone=/weights/resnet18-5c106cde.pth

Data: `subset/{train,val,test}/{A,B,OUT}`, 256x256, 10000/2998/3000 pairs. The official code
documents LEVIR-CD only; its 200 epochs at batch 8 over 10000 pairs are 200 x 1250 = 250,000
steps. Everything else as configs/stanet_levir.py.
Time: a GPU config, not run.
Expect (Dsfer-Net Table I, CDD): F1 89.86, IoU 81.59.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "stanet_levir")
  on_dataset(c, "cdd", "")  # CDD root, or its `subset` folder; it comes pre-tiled
  c.num_steps = 250000  # 200 epochs of 1250 batches
  c.eval_every = 12500  # every 10 epochs
  c.checkpoint_every = 12500
  return c
