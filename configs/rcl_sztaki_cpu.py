"""RCL on SZTAKI AirChange, the label-fraction table (paper Table II) on a reduced schedule that
fits 2 CPU cores (about 2 h 15 min for all 7 runs):

  python -m jaxcd.experiments.label_fractions --config configs/rcl_sztaki_cpu.py \
      --fractions 10,20,40,100 --out runs/rcl_table2_cpu

Same data, splits, labeled fractions and method as configs/rcl_sztaki.py (the paper's settings);
what differs, and why:
- the RCR/RCL network at width 8 (0.74 M parameters instead of 46.85 M), randomly initialised
  (no ImageNet weights on this machine);
- 600 steps per stage at 10% and 20% labeled, 1800 at 40% and 100% (`rcl.steps_by_fraction`;
  480 / 240 / 360 / 145 epochs of the labeled tiles), batch 8 (stage 2: 4 labeled + 4
  unlabeled), on random 128x128 crops with flips and rotations; validation and test on the
  whole 256x256 tiles. With 600 steps the larger labeled sets never leave "no change" (test IoU
  Sup. only 0.00 at 40%, both methods ~0.1 at 100%): a network from scratch fits 10-20 tiles
  quickly but needs longer to generalise over 40-99;
- Adam 3e-3 with a 50-step warm-up and poly decay (SGD 1e-2 does not move a network trained from
  scratch in this many steps; see configs/rcl.py);
- CE class weights 1:5 (changed pixels are ~6% of SZTAKI; unweighted CE from scratch predicts
  "no change" for hundreds of steps), the same for Sup. only and both RCL stages.
Kept as the paper: stage 2 restarts from a new initialisation (`rcl.stage2_init="reinit"`), so
"Sup. only" and RCL's stage 2 train for the same number of steps from the same start; lambda 1;
50% reliable; perturbed no-change companions in L_ct only.

Measured (2 CPU cores, shared; test IoU % of the change class, best-val checkpoint, seed 0;
paper in parentheses), labeled 10 / 20 / 40 / 100%:
  Sup. only  30.24 (9.85)   37.86 (28.11)  32.08 (30.43)  25.72 (39.78)
  RCL pre    45.10 (12.37)  41.71 (29.56)  35.17 (32.72)  24.70 (41.25)
  RCL        34.43 (12.68)  34.89 (32.57)   0.00 (34.38)  -
  RCL with --config.rcl.stage2_init=stage1: 46.69 / 29.74 / 24.56
A second seed (--config.seed=1: other labeled tiles, other initialisation) at 10 / 20%:
  Sup. only 27.15 / 23.39, RCL pre 11.66 / 30.58, RCL 0.00 / 0.00.
With seed 0, RCL pre (CE + L_ct) beats Sup. only at 10/20/40% and is level at 100%; with seed 1
it wins at 20% but loses at 10%: at this size the seed moves a cell by up to 35 points, so
one-seed differences of a few points are not evidence. Stage 2 re-initialised from scratch,
with 4 labeled pairs per batch instead of 8 and about a quarter of each batch all "no change",
beats Sup. only only at 10% with seed 0; at 40% (seed 0) and at 10% and 20% (seed 1) it never
leaves "no change" (val F1 <= 0.003 throughout). The paper starts stage 2 from ImageNet weights,
where this does not arise. The pseudo-labels are poor here (IoU 0.28 / 0.26 / 0.23 on the
reliable half at 10/20/40%), which caps what stage 2 can add. The 12 test tiles overlap
training tiles of the same pairs (the RCL protocol), which may be why 10% scores far above the
paper.
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "rcl_sztaki")
  c.model.width = 8
  c.input.augment = "flip_rot_crop"
  c.input.crop_size = 128
  c.optim.name = "adam"
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 0.0
  c.rcl.backbone_lr_mult = 1.0  # SGD only
  c.loss.class_weights = (1.0, 5.0)
  c.rcl.stage1_steps = 600
  c.rcl.stage2_steps = 600
  c.rcl.steps_by_fraction = "40:1800,100:1800"  # 600 leaves 40% and 100% at "no change"
  c.rcl.evals_per_stage = 6
  c.checkpoint_every = 200
  return c
