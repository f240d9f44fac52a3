"""SemiCDNet on WHU-CD with the official SemiCD settings, 5% labeled: configs/advnet_whu.py with
`method = semicdnet`.

  python -m jaxcd.train --config configs/semicdnet_whu.py --workdir runs/semicdnet_whu_5 \
      --config.data.data_dir=/data/WHU-CD-256

Discriminators: the official branch's optimiser (the network's SGD 1e-2, momentum 0.9, weight
decay 1e-4, poly; loss x the ramped 0.01): the SemiCDNet paper's values are not in
../shared/papers.
Time: a GPU config, not run here.
Expect: the RCL paper's Table III (WHU-CD) has no SemiCDNet row; nothing published to compare with.
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet_whu")
  c.method = "semicdnet"
  c.gan.disc_optim = "sgd"
  c.gan.disc_lr = 1e-2
  c.gan.disc_weight_decay = 1e-4
  return c
