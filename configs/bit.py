"""BiT (Chen, Qi & Shi, TGRS 2021; official "base_transformer_pos_s4_dd8"), a Table I baseline of
the Dsfer-Net paper, on the embedded synthetic scenes (3,495,778 parameters used; the official
module also registers ResNet-18's unused layer4 and fc; Dsfer-Net's Table II lists 11.94 M).

  python -m jaxcd.train --config configs/bit.py --workdir runs/bit

Random initialisation by default; the paper's ImageNet ResNet-18 loads from a local torchvision
file with --config.init.backbone=/weights/resnet18-f37072fd.pth (layer1-3 used; no download).
Same data and step budget as configs/fc_siam_diff.py with Adam 1e-3 (the BiT paper: SGD momentum
0.99, lr 0.01 decayed linearly over 200 epochs, batch 8: --config.optim.name=sgd
--config.optim.momentum=0.99 --config.optim.lr=0.01 --config.optim.schedule=linear).
Not timed here; expect a few minutes on 2 CPU cores.
Paper Table I (LEVIR-CD / WHU-CD / CDD F1): 88.19 / 87.60 / 91.85; IoU 78.87 / 77.94 / 84.92.
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
