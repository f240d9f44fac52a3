"""SNUNet-CD/32 with ECAM (Fang et al., GRSL 2022; official likuan6/SNUNet-CD, 12,034,978
parameters) and its hybrid CE + Dice loss, on the embedded synthetic scenes.

  python -m jaxcd.train --config configs/snunet.py --workdir runs/snunet

Same data and step budget as configs/fc_siam_diff.py. Optimiser as the official train.py:
AdamW, lr 1e-3, torch's default weight decay 0.01 (its StepLR, x0.5 every 8 epochs, is left out
at this budget). The smaller SNUNet-CD/16 (3.01 M): --config.model.width=16.
Time: not measured; the busy 2-core CPU trains ~9 s per step at width 16 (bench, batch 16,
64x64), so hours, not the 10 minutes of the demo. Our test F1: not measured.
Not in Dsfer-Net's tables; the most used baseline of the peers' model zoos.
"""
from jaxcd.config_base import sibling


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
  # The shared CPU budget (jaxcd.experiments.same_steps): 100 steps of 8 pairs, one validation.
  c.input.batch_size = 8
  c.num_steps = 100
  c.eval_every = 100
  c.checkpoint_every = 100
  return c
