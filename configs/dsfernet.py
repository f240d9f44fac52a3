"""Dsfer-Net (Chang et al. 2024) on the embedded synthetic scenes: a CPU-sized run of the full model.

  python -m jaxcd.train --config configs/dsfernet.py --workdir runs/dsfernet

No download: 64x64 synthetic pairs, VGG16 from random initialisation (pass
--config.init.backbone=/path/vgg16-397923af.pth if you have ImageNet weights). The official
model's (C,H,W) LayerNorms are built for `model.input_size` (64 here, 256 in the paper's
configs). Loss, optimiser and schedule follow the paper (class-weighted CE + lam * Dice deep
supervision; Adam, weight decay 1e-5, linear decay to 0); the learning rate, class weights,
batch and step count are sized for 2 CPU cores.
Time: 8 min 48 s on 2 quiet CPU cores, compilation and evaluations included.
Expect: test F1 0.801, IoU 0.668.
The paper's datasets: configs/dsfernet_levir.py, dsfernet_whu.py, dsfernet_cdd.py.
Tables: docs/results.md#dsfer-net
"""
from jaxcd.config_base import base_config


def get_config():
  c = base_config()
  c.data.name = "synthetic"
  # base_config's synthetic tiles are 64x64: model.input_size must match (official LayerNorm).

  c.model.name = "dsfernet"
  c.model.input_size = 64  # size the (C,H,W) LayerNorms are built for (official: 256)
  c.model.layernorm = "chw"  # "chw" = official; "c" = per-token LayerNorm, any input size
  c.model.num_heads = 1  # Hopfield heads (official: 1)
  c.model.beta = 512.0  # official Hopfield scale parameter: scale = (beta // heads) ** -0.5

  c.loss.name = "dsfernet"  # jaxcd.losses.dsfernet_loss: weighted CE + lam * 0.5 * (Dice4 + Dice5)
  # The paper weights classes by inverse frequency (~1.06, 17 for the ~6% changed pixels here);
  # in 400 steps that trades precision for recall: a mild 1:2 gives the better F1.
  c.loss.class_weights = (1.0, 2.0)
  c.loss.lam = 0.1  # Dice deep-supervision weight (paper's LEVIR-CD value)

  c.input.batch_size = 8
  c.input.eval_batch_size = 20
  c.input.augment = "flip_rot"  # the paper uses none; flips help the small synthetic set

  c.optim.name = "adam"
  c.optim.lr = 2e-4  # paper: 1e-5 (LEVIR/WHU), 1e-4 (CDD) with ImageNet weights and batch 32
  c.optim.weight_decay = 1e-5  # torch-style L2, as the paper's Adam(weight_decay=1e-5)
  c.optim.schedule = "linear"  # paper: linear decay to 0; the official code: "poly" (power 0.9)

  c.num_steps = 400  # sized for 2 CPU cores
  c.eval_every = 100
  c.checkpoint_every = 100
  c.log_every = 20
  return c
