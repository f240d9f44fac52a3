"""SemiCDNet (segmentation-map and entropy-map discriminators, RCL paper Table IV's rival) on the
embedded synthetic scenes: configs/advnet.py with `method = semicdnet` (the same network, split,
batches, steps and discriminator optimiser; paper settings: configs/semicdnet_levir.py).

  python -m jaxcd.train --config configs/semicdnet.py --workdir runs/semicdnet

No download. Not yet run to the end (no time or result to expect recorded); Sup. only beside
it: test F1 0.000 (docs/results.md#adversarial-rivals-on-the-synthetic-scenes).
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet")
  c.method = "semicdnet"  # jaxcd/methods/semicdnet.py
  return c
