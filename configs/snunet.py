"""SNUNet-CD/16 with ECAM (Fang et al., GRSL 2022; official likuan6/SNUNet-CD; 3,012,178
parameters, paper 3.01 M) and its hybrid CE + Dice loss, on the embedded synthetic scenes.

  python -m jaxcd.train --config configs/snunet.py --workdir runs/snunet

Same data as configs/fc_siam_diff.py. Optimiser as the official train.py: AdamW, lr 1e-3,
torch's default weight decay 0.01 (its StepLR, x0.5 every 8 epochs, is left out at this
budget). Width 16, the paper's smaller variant: the paper's main SNUNet-CD/32 (12,034,978
parameters, --config.model.width=32) is 4x the FLOPs of this full-resolution nested U-Net.
CPU budget (all five rivals alike, = jaxcd.experiments.same_steps): 200 steps of 8 pairs of
64x64 (1.6 epochs of the 1000 training pairs), one validation at the end, instead of the
official hundreds of epochs at 256x256, so that every model's run is minutes, not hours, on 2
CPU cores.
Time: 2 min 13 s on 2 CPU cores, compilation and test pass included. Our test F1
0.689, IoU 0.525 (docs/results.md, "All models").
Not in Dsfer-Net's tables; the most used baseline of the peers' model zoos.
"""
from jaxcd.config_base import sibling, step_budget


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "snunet"
  del c.model["dropout"]  # SNUNet has no dropout
  c.model.width = 16  # base channels (official n1): SNUNet-CD/16; the paper's /32 is 4x the FLOPs
  c.loss.name = "snunet"  # jaxcd.losses.snunet_loss: CE + Dice, as the official hybrid_loss
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.weight_decay = 1e-2
  c.optim.schedule = "constant"
  step_budget(c)  # the CPU budget of the docstring
  return c
