"""VcT on WHU-CD with the official recipe (as configs/vct_levir.py).

  python -m jaxcd.train --config configs/vct_whu.py --workdir runs/vct_whu \
      --config.data.data_dir=/data/WHU-CD --config.init.backbone=/weights/resnet18-f37072fd.pth

Data: the 2012/2016 pair cut into 256x256 tiles with jaxcd's seeded 6:1:3 split (4572 training
tiles in the Dsfer-Net paper, used for the step count; the VcT authors' own WHU split is not published with the code).
Batch 8, SGD momentum 0.9, weight decay 5e-4, lr 0.01, linear, 200 epochs = 114,400 steps,
validation each epoch; the departures of configs/vct_levir.py apply.
Time: a GPU config, not run.
Expect (paper, Dsfer-Net Table I, WHU-CD): F1 86.37, IoU 76.02.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "vct_levir")
  on_dataset(c, "whu_cd", "")  # WHU-CD root: the large pair (tiled on access) or pre-cut tiles
  c.data.ratios = (0.6, 0.1, 0.3)  # whu_cd's own default; on_dataset keeps levir_cd's 7:1:2
  steps_per_epoch = -(-4572 // 8)  # 572
  c.num_steps = 200 * steps_per_epoch
  c.eval_every = steps_per_epoch
  c.checkpoint_every = steps_per_epoch
  return c
