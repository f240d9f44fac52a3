"""RCR on WHU-CD with the official code's settings (SemiCD configs/config_WHU.json, the same as
LEVIR-CD's), labeled fraction 5%.

  python -m jaxcd.train --config configs/rcr_whu.py --workdir runs/rcr_whu_5 \
      --config.data.data_dir=/data/WHU-CD-256
  python -m jaxcd.experiments.label_fractions --config configs/rcr_whu.py --fractions 5,10,20,40 \
      --methods sup_only,rcr --out runs/rcr_table3 --config.data.data_dir=/data/WHU-CD-256

Data as configs/rcl_whu.py (its rcl block runs the Sup. only row); everything else as
configs/rcr_levir.py (its docstring lists the choices where ours differs from the code).
Time: a GPU config, not run here (RCL paper Table VII, WHU-CD 5%: RCR 7.1 h on one 1080Ti).
Expect (RCL paper Table III, RCR row): test IoU / OA 76.65 / 95.2 at 5% labeled, 79.10 / 95.70 at
10%, 83.87 / 96.68 at 20%, 84.66 / 96.84 at 40% (Sup. only: 65.73, 72.93, 77.38, 81.95).
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "rcl_whu")
  levir = sibling(__file__, "rcr_levir")
  c.method = levir.method
  c.input.batch_size = levir.input.batch_size
  c.num_steps = levir.num_steps
  c.rcr = levir.rcr
  return c
