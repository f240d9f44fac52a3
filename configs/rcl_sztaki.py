"""RCL on SZTAKI AirChange with the paper's settings (Table II), labeled fraction 10%.

  python -m jaxcd.train --config configs/rcl_sztaki.py --workdir runs/rcl_sztaki_10
  python -m jaxcd.experiments.label_fractions --config configs/rcl_sztaki.py \
      --fractions 10,20,40,100 --out runs/rcl_table2     # Sup. only and RCL, the Table II layout

Data: the 13 pairs cut into 3x4 overlapping 256x256 tiles, unchanged tiles dropped, seeded
99/12/12 split (paper: 98/12/12). RCR/RCL network (46.85 M parameters); the official code's SGD
(momentum 0.9, weight decay 1e-4, lr 1e-2, backbone 1e-3, poly 0.9); batch 8 (stage 2: 4 + 4);
lambda 1; 50% reliable; 100 epochs per stage. The paper starts both stages from ImageNet weights
(--config.init.backbone=FILE, SemiCD's 3x3resnet50-imagenet.pth; random init costs accuracy).
Time: a GPU config, not run here (~75 GMAC per pair and 2 pairs per example).
Expect (paper Table II, 10% labeled): test IoU 12.68 (Sup. only 9.85).
Tables: docs/results.md#rcl-paper (reduced CPU schedule: configs/rcl_sztaki_cpu.py)
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "rcl")
  on_dataset(c, "sztaki", "../shared/data/SZTAKI_AirChange")
  c.data.mean = (123.675, 116.28, 103.53)  # ImageNet statistics in 0-255 space (official code)
  c.data.std = (58.395, 57.12, 57.375)
  c.model.width = 64  # the paper's network
  c.input.batch_size = 8  # paper: 8 = 4 labeled + 4 unlabeled
  c.input.eval_batch_size = 12
  c.input.augment = "flip_rot_scale_crop"  # weak: flips, random rescale 0.5-2, 256 crop
  c.input.crop_size = 256
  c.optim.name = "sgd"
  c.optim.lr = 1e-2  # head; backbone 1e-3 (rcl.backbone_lr_mult)
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "poly"
  c.optim.poly_power = 0.9
  c.optim.warmup_steps = 0
  c.eval_every = 0  # validation rcl.evals_per_stage times per stage
  c.checkpoint_every = 200
  c.log_every = 20
  c.rcl.label_fraction = 0.1
  c.rcl.backbone_lr_mult = 0.1
  c.rcl.stage2_init = "reinit"  # paper: stage 2 restarts from the (ImageNet) initialisation
  c.rcl.stage1_steps = 0  # lengths from epochs
  c.rcl.stage2_steps = 0
  c.rcl.stage1_epochs = 100.0  # the code's default; the paper gives 80 only for WHU and LEVIR-CD
  c.rcl.stage2_epochs = 100.0
  c.rcl.evals_per_stage = 50
  c.rcl.paper_table = "II"
  return c
