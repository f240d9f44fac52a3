"""ChangeFormerV6 on WHU-CD with the official recipe (scripts/run_ChangeFormer_WHU.sh: the same
settings as LEVIR-CD).

  python -m jaxcd.train --config configs/changeformer_whu.py --workdir runs/changeformer_whu \
      --config.data.data_dir=/data/WHU-CD

Data: Dsfer-Net's split, the 2012/2016 pair cut into 256x256 tiles, random 6:1:3 (4572/762/2286
in the paper). As configs/changeformer_levir.py (AdamW lr 1e-4, weight decay 0.01, linear
decay, batch 16, 200 epochs = 57,200 steps at 286 per epoch; CE on all five outputs). The
official WHU script starts from SegFormer-B2 ADE20K weights (not loadable here).
Time: a GPU config, not run.
Expect (paper, Dsfer-Net Table I, WHU-CD): F1 82.22, IoU 69.80.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "changeformer_levir")
  on_dataset(c, "whu_cd", "")  # WHU-CD root: the large pair (tiled on access) or pre-cut tiles
  c.num_steps = 57200  # 200 epochs x 286 steps (4572 pairs / 16)
  c.eval_every = 286
  c.checkpoint_every = 286
  return c
