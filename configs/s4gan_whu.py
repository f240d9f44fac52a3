"""s4GAN on WHU-CD with the official SemiCD settings, 5% labeled: configs/advnet_whu.py with
`method = s4gan`.

  python -m jaxcd.train --config configs/s4gan_whu.py --workdir runs/s4gan_whu_5 \
      --config.data.data_dir=/data/WHU-CD-256

Time: a GPU config, not run here.
Expect: the RCL paper's Table III (WHU-CD) has no s4GAN row; nothing published to compare with.
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet_whu")
  c.method = "s4gan"
  return c
