"""SemiCDNet on LEVIR-CD with the official SemiCD settings, 5% labeled: configs/advnet_levir.py with
`method = semicdnet`.

  python -m jaxcd.train --config configs/semicdnet_levir.py --workdir runs/semicdnet_levir_5 \
      --config.data.data_dir=/data/LEVIR-CD256

Discriminators: the official branch's optimiser (the network's SGD 1e-2, momentum 0.9, weight
decay 1e-4, poly; loss x the ramped 0.01): the SemiCDNet paper's values are not in
../shared/papers.
Time: a GPU config, not run here.
Expect (paper Table IV, test IoU / OA %): SemiCDNet 67.6 / 98.17 at 5%, 71.5 / 98.42 at 10%, 74.3 /
98.58 at 20%, 75.5 / 98.63 at 40% (Sup. only 61.0, 66.8, 72.3, 74.9).
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet_levir")
  c.method = "semicdnet"
  c.gan.disc_optim = "sgd"
  c.gan.disc_lr = 1e-2
  c.gan.disc_weight_decay = 1e-4
  return c
