"""RCL and Sup. only on SZTAKI AirChange, the label-fraction table (paper Table II), on a reduced
schedule that fits 2 CPU cores:

  python -m jaxcd.experiments.label_fractions --config configs/rcl_sztaki_cpu.py \
      --fractions 10,20,40,100 --out runs/rcl_table2_cpu

Data, splits, fractions and method as configs/rcl_sztaki.py, except, for a network from scratch:
`rcr` at width 8 (0.74 M parameters), random initialisation, Adam 3e-3 (50-step warm-up, poly),
CE weights 1:5, random 128x128 training crops, 600 steps per stage at 10/20% labeled and 1800
at 40/100%. As the paper: stage 2 re-initialised (`rcl.stage2_init="reinit"`), lambda 1, 50%
reliable, perturbed no-change companions in L_ct only.
Time: about 2 h 15 min for all 7 runs on 2 shared CPU cores.
Expect: test IoU % RCL pre 45.10 / 41.71 / 35.17 / 24.70 at 10/20/40/100% labeled (seed 0).
Tables: docs/results.md#rcl-label-fractions-on-sztaki
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "rcl_sztaki")
  c.model.width = 8
  c.input.augment = "flip_rot_crop"
  c.input.crop_size = 128
  c.optim.name = "adam"  # SGD 1e-2 does not move a network from scratch in this many steps
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 0.0
  c.rcl.backbone_lr_mult = 1.0  # SGD only
  c.loss.class_weights = (1.0, 5.0)  # ~6% changed: unweighted CE from scratch predicts no change
  c.rcl.stage1_steps = 600
  c.rcl.stage2_steps = 600
  c.rcl.steps_by_fraction = "40:1800,100:1800"  # 600 leaves 40% and 100% at "no change"
  c.rcl.evals_per_stage = 6
  c.checkpoint_every = 200
  return c
