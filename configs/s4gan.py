"""s4GAN (GAN branch with feature matching + discriminator-filtered self-training, RCL paper
Table IV's rival) on the embedded synthetic scenes: configs/advnet.py with `method = s4gan`
(the same network, split, batches, steps and discriminator optimiser; paper settings:
configs/s4gan_levir.py).

  python -m jaxcd.train --config configs/s4gan.py --workdir runs/s4gan

No download. Time: 7 min 42 s on 2 CPU cores with another run beside it.
Expect: test F1 0.008, IoU 0.004: it finds no change (best validation at step 150), while Sup.
only with the same steps and labels reaches F1 0.688, IoU 0.524. Its labeled CE stays at
0.50-0.71 over the run (Sup. only: 0.50 falling to 0.12, AdvNet to 0.16); why the feature-matching
and self-training terms, both at full weight from the first step as in the paper and the code,
keep a network from scratch there is not yet known.
Results: docs/results.md#rivals-of-rcl-on-the-synthetic-scenes
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet")
  c.method = "s4gan"  # jaxcd/methods/s4gan.py
  return c
