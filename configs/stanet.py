"""STANet-PAM (Chen & Shi, Remote Sensing 2020; official justchenhao/STANet, 16,929,152
parameters; Dsfer-Net Table II: 16.93 M) with its BCL loss, on the embedded synthetic scenes.

  python -m jaxcd.train --config configs/stanet.py --workdir runs/stanet

Same data as configs/fc_siam_diff.py, random initialisation (the official code
loads ImageNet ResNet-18 weights: --config.init.backbone=/weights/resnet18-5c106cde.pth).
Loss and optimiser as the official CDFA model and README: BCL (margin 2) on the distance; Adam,
lr 1e-3 (its README; the option default is 2e-4), linear decay. Departures: the official Adam
has betas (0.5, 0.999) (jaxcd's Adam: 0.9) and holds the lr for the first half before decaying
linearly (jaxcd's "linear" decays from the start). Change where the distance exceeds 1.
STANet-BAM (16,897,041): --config.model.attention=bam.
CPU budget (all five rivals alike, = jaxcd.experiments.same_steps): 200 steps of 8 pairs of
64x64 (1.6 epochs of the 1000 training pairs), one validation at the end, instead of the
official hundreds of epochs at 256x256, so that every model's run is minutes, not hours, on 2
CPU cores.
Time: 5 min 32 s on 2 CPU cores, compilation and test pass included. Our test F1
0.689, IoU 0.526 (docs/results.md, "All models").
Expect (paper, Dsfer-Net Table I, LEVIR-CD / WHU-CD / CDD): F1 87.27 / 87.02 / 89.86.
"""
from jaxcd.config_base import sibling, step_budget


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "stanet"
  del c.model["dropout"]  # fixed in the official layers: the decoder's Dropout(0.5)
  c.model.attention = "pam"  # official --SA_mode PAM (the paper's STANet); "bam" for BAM
  c.model.ds = 1  # official --ds: average-pool factor before the attention
  c.loss.name = "stanet"  # jaxcd.losses.stanet_loss: BCL on 'distance'
  c.loss.margin = 2.0
  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.schedule = "linear"
  step_budget(c)  # the CPU budget of the docstring
  return c
