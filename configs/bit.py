"""BiT (Chen, Qi & Shi, TGRS 2021; official "base_transformer_pos_s4_dd8", 3,495,778 parameters),
a Table I baseline of the Dsfer-Net paper, on the embedded synthetic scenes.

  python -m jaxcd.train --config configs/bit.py --workdir runs/bit

Same data and step budget as configs/fc_siam_diff.py with Adam 1e-3 and random initialisation;
the paper's ImageNet ResNet-18 loads from a local torchvision file with
--config.init.backbone=/weights/resnet18-f37072fd.pth (layer1-3 used; no download). The BiT
paper's optimiser (200 epochs, batch 8): --config.optim.name=sgd --config.optim.momentum=0.99
--config.optim.lr=0.01 --config.optim.schedule=linear.
Time: not timed here; expect a few minutes on 2 CPU cores. Our test F1: not measured yet.
Expect (paper, Dsfer-Net Table I, LEVIR-CD / WHU-CD / CDD): F1 88.19 / 87.60 / 91.85.
Tables: docs/results.md#dsfer-net-paper
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "bit"
  del c.model["dropout"]  # BiT's official dropout is 0
  c.model.token_len = 4  # semantic tokens per date
  c.model.enc_depth = 1  # transformer encoder layers
  c.model.dec_depth = 8  # transformer decoder layers
  c.model.decoder_dim_head = 64  # official "dedim8" variant: 8
  c.optim.schedule = "linear"
  return c
