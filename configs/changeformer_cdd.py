"""ChangeFormerV6 on CDD (season-varying). The official repository has no CDD script; the
LEVIR-CD/WHU-CD recipe (identical in both scripts) is used.

  python -m jaxcd.train --config configs/changeformer_cdd.py --workdir runs/changeformer_cdd \
      --config.data.data_dir=/data/CDD

Data: `subset/{train,val,test}/{A,B,OUT}`, 256x256, 10000/2998/3000 pairs. As
configs/changeformer_levir.py (AdamW lr 1e-4, weight decay 0.01, linear decay, batch 16,
200 epochs = 125,000 steps at 625 per epoch; CE on all five outputs).
Time: a GPU config, not run.
Expect (paper, Dsfer-Net Table I, CDD): F1 87.53, IoU 77.82.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "changeformer_levir")
  on_dataset(c, "cdd", "")  # CDD root, or its `subset` folder; it comes pre-tiled
  c.num_steps = 125000  # 200 epochs x 625 steps (10000 pairs / 16)
  c.eval_every = 625
  c.checkpoint_every = 625
  return c
