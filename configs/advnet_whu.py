"""AdvNet on WHU-CD with the official SemiCD settings (the RCL paper's WHU table), 5% labeled.

  python -m jaxcd.train --config configs/advnet_whu.py --workdir runs/advnet_whu_5 \
      --config.data.data_dir=/data/WHU-CD-256

Data and network as configs/rcl_whu.py (SemiCD's WHU-CD-256); method settings as
configs/advnet_levir.py. Time: a GPU config, not run here.
Expect: the RCL paper's Table III has no AdvNet, s4GAN or SemiCDNet rows (WHU-CD, test IoU % at
5/10/20/40%: Sup. only 65.73 / 72.93 / 77.38 / 81.95, RCR 76.65 / 79.10 / 83.87 / 84.66, RCL
79.32 / 82.98 / 84.16 / 85.28); no published number to compare with.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "advnet_levir")
  whu = sibling(__file__, "rcl_whu")
  on_dataset(c, "whu_cd", whu.data.data_dir)
  c.data.tile_size = whu.data.tile_size
  c.input.eval_batch_size = whu.input.eval_batch_size
  c.rcl.paper_table = "III"
  return c
