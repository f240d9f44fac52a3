"""s4GAN on LEVIR-CD with the official SemiCD settings, 5% labeled: configs/advnet_levir.py with
`method = s4gan`.

  python -m jaxcd.train --config configs/s4gan_levir.py --workdir runs/s4gan_levir_5 \
      --config.data.data_dir=/data/LEVIR-CD256

Time: a GPU config, not run here.
Expect (paper Table IV, test IoU / OA %): s4GAN 64.0 / 97.89 at 5%, 67.0 / 98.11 at 10%, 73.4 /
98.51 at 20%, 75.4 / 98.62 at 40% (Sup. only 61.0, 66.8, 72.3, 74.9).
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet_levir")
  c.method = "s4gan"
  return c
