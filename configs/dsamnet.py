"""DSAMNet (Shi et al., TGRS 2022; official liumency/DSAMNet, 16,950,728 parameters; Dsfer-Net
Table II: 16.95 M) with its BCL + Dice deep-supervision loss, on the embedded synthetic scenes.

  python -m jaxcd.train --config configs/dsamnet.py --workdir runs/dsamnet

Same data as configs/fc_siam_diff.py, random initialisation (the official code
loads ImageNet ResNet-18 weights: --config.init.backbone=/weights/resnet18-5c106cde.pth).
Loss and optimiser as the official train.py: BCL (margin 2) + 0.1 x 0.5 x (Dice(ds2) +
Dice(ds3)); Adam, lr 5e-4, betas (0.9, 0.999), no schedule. Change where the distance exceeds
1 (official predict.py).
CPU budget (all five rivals alike, = jaxcd.experiments.same_steps): 200 steps of 8 pairs of
64x64 (1.6 epochs of the 1000 training pairs), one validation at the end, instead of the
official hundreds of epochs at 256x256, so that every model's run is minutes, not hours, on 2
CPU cores.
Time: 6 min 27 s on 2 CPU cores, compilation and test pass included. Our test F1
0.584, IoU 0.413 (docs/results.md, "All models").
Expect (paper, Dsfer-Net Table I, LEVIR-CD / WHU-CD / CDD): F1 86.08 / 86.71 / 92.91.
"""
from jaxcd.config_base import sibling, step_budget


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "dsamnet"
  del c.model["dropout"]  # fixed in the official layers: Dropout(0.5) decoder, Dropout2d(0.2) DS
  c.loss.name = "dsamnet"  # jaxcd.losses.dsamnet_loss
  c.loss.margin = 2.0
  c.loss.w_dice = 0.1
  c.optim.name = "adam"
  c.optim.lr = 5e-4
  c.optim.schedule = "constant"
  step_budget(c)  # the CPU budget of the docstring
  return c
