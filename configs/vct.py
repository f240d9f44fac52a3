"""VcT (Jiang et al., TGRS 2023; official Reliable_Transformer, 12,407,115 parameters registered =
Dsfer-Net Table II's 12.41 M, 3,500,386 used), a Table I baseline of the Dsfer-Net paper, on the
embedded synthetic scenes.

  python -m jaxcd.train --config configs/vct.py --workdir runs/vct

Same data and optimiser as configs/bit.py (Adam 1e-3, linear decay, random
initialisation; --config.init.backbone=/weights/resnet18-f37072fd.pth loads a local torchvision
ResNet-18, layer1-3). The 64x64 tiles give 16x16 = 256 feature pixels, so the reliable-pixel
count is scaled like the official 1000 of 64x64 = 4096 (about a quarter): top_k 64. Loss: plain
cross-entropy, as the official trainer (--loss ce). The official optimiser (SGD momentum 0.9,
weight decay 5e-4, lr 0.01, linear): configs/vct_levir.py.
CPU budget (all five rivals alike, = jaxcd.experiments.same_steps): 200 steps of 8 pairs of
64x64 (1.6 epochs of the 1000 training pairs), one validation at the end, instead of the
official hundreds of epochs at 256x256, so that every model's run is minutes, not hours, on 2
CPU cores.
Time: 2 min 34 s on 2 CPU cores, compilation and test pass included. Our test F1
0.703, IoU 0.541 (docs/results.md, "All models").
Expect (paper, Dsfer-Net Table I, LEVIR-CD / WHU-CD / CDD): F1 86.89 / 86.37 / 91.25.
"""
from jaxcd.config_base import sibling, step_budget


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "vct"
  del c.model["dropout"]  # VcT's official dropout is 0
  c.model.top_k = 64  # reliable (lowest graph score) pixels per sample; official 1000 at 256x256
  c.model.num_clusters = 10  # k-means tokens per date (official)
  c.model.graph_k = 9  # grid neighbours per pixel, itself included (our reading; see vct.py)
  c.model.enc_depth = 1  # transformer encoder (and token cross-attention) layers
  c.model.dec_depth = 8  # transformer decoder layers
  c.optim.schedule = "linear"
  step_budget(c)  # the CPU budget of the docstring
  return c
