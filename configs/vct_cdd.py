"""VcT on CDD (season-varying) with the official recipe (as configs/vct_levir.py).

  python -m jaxcd.train --config configs/vct_cdd.py --workdir runs/vct_cdd \
      --config.data.data_dir=/data/CDD --config.init.backbone=/weights/resnet18-f37072fd.pth

Data: `subset/{train,val,test}/{A,B,OUT}`, 256x256, 10000/2998/3000 pairs. Batch 8, SGD momentum
0.9, weight decay 5e-4, lr 0.01, linear, 200 epochs = 250,000 steps, validation each epoch; the
departures of configs/vct_levir.py apply.
Time: a GPU config, not run.
Expect (paper, Dsfer-Net Table I, CDD): F1 91.25, IoU 83.90.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "vct_levir")
  on_dataset(c, "cdd", "")  # CDD root, or its `subset` folder; it comes pre-tiled
  steps_per_epoch = 10000 // 8  # 1250
  c.num_steps = 200 * steps_per_epoch
  c.eval_every = steps_per_epoch
  c.checkpoint_every = steps_per_epoch
  return c
