"""SemiCDNet (segmentation-map and entropy-map discriminators, RCL paper Table IV's rival) on the
embedded synthetic scenes: configs/advnet.py with `method = semicdnet` (the same network, split,
batches, steps and discriminator optimiser; paper settings: configs/semicdnet_levir.py).

  python -m jaxcd.train --config configs/semicdnet.py --workdir runs/semicdnet

No download. Time: 42 min 33 s on 2 CPU cores shared with other jobs (738 s user CPU).
Expect: test F1 0.087, IoU 0.046 (Sup. only, same steps and labels: F1 0.000).
Results: docs/results.md#adversarial-rivals-on-the-synthetic-scenes
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet")
  c.method = "semicdnet"  # jaxcd/methods/semicdnet.py
  return c
