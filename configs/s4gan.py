"""s4GAN (GAN branch with feature matching + discriminator-filtered self-training, RCL paper
Table IV's rival) on the embedded synthetic scenes: configs/advnet.py with `method = s4gan`
(the same network, split, batches, steps and discriminator optimiser; paper settings:
configs/s4gan_levir.py).

  python -m jaxcd.train --config configs/s4gan.py --workdir runs/s4gan

No download. Not yet run to the end (no time or result to expect recorded); Sup. only beside
it: test F1 0.000 (docs/results.md#adversarial-rivals-on-the-synthetic-scenes).
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet")
  c.method = "s4gan"  # jaxcd/methods/s4gan.py
  return c
