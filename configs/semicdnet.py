"""SemiCDNet (segmentation-map and entropy-map discriminators, RCL paper Table IV's rival) on the
embedded synthetic scenes: configs/advnet.py with `method = semicdnet` (the same network, split,
batches, steps and discriminator optimiser; paper settings: configs/semicdnet_levir.py).

  python -m jaxcd.train --config configs/semicdnet.py --workdir runs/semicdnet

No download. Time: 8 min 2 s on 2 CPU cores with another run beside it.
Expect: test F1 0.681, IoU 0.516 (Sup. only, same steps and labels: F1 0.688, IoU 0.524).
Results: docs/results.md#rivals-of-rcl-on-the-synthetic-scenes
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet")
  c.method = "semicdnet"  # jaxcd/methods/semicdnet.py
  return c
