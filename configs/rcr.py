"""RCR (consistency regularization with 26 perturbed auxiliary decoders, semi-supervised) on the
embedded synthetic scenes, beside the "Sup. only" baseline with the same steps and labels (paper
settings: configs/rcr_whu.py, configs/rcr_levir.py).

  python -m jaxcd.train --config configs/rcr.py --workdir runs/rcr
  python -m jaxcd.train --config configs/rcr.py --workdir runs/rcr_sup \
      --config.method=rcl --config.rcl.mode=sup_only          # Sup. only, same steps and pairs

No download. 100 of the 1000 training pairs labeled (seed 0, the split of configs/rcl.py), 900
unlabeled. Network, data and optimiser of configs/rcl.py (`rcr` at width 8 from scratch, Adam
3e-3, 200-step warm-up, poly); per step 4 labeled + 4 unlabeled pairs; the official perturbations
(VAT x2, dropout x5, guided cutout x5, context x2, object masking x2, feature drop x5, feature
noise x5), consistency weight 30 with a sigmoid ramp over the first 10% of the steps.
Guided cutout cuts components with more than 50 boundary pixels where the code counts the points
of their cv2 contour (no array form; see `jaxcd.models.perturbations.component_boxes`). VAT's
power step is the exact Hessian-vector product; the code's finite difference at xi 1e-6 leaves
r_adv near 0 in float32 (--config.rcr.vat_direction=finite_difference restores it).
Measured once (2-core CPU, shared): RCR test F1 0.000 / IoU 0.000 (no change predicted in 1800
steps); Sup. only test F1 0.210 / IoU 0.118. Not yet a working demo.
Tables: docs/results.md#rcr-on-the-synthetic-scenes
"""
from jaxcd.config_base import sibling
from jaxcd.methods.rcr import rcr_fields


def get_config():
  c = sibling(__file__, "rcl")  # its rcl block runs the Sup. only baseline (rcl.mode=sup_only)
  c.method = "rcr"  # jaxcd/methods/rcr.py
  c.input.batch_size = 4  # labeled pairs per step (Sup. only: the same 4)
  c.num_steps = 1800  # RCR's steps
  c.eval_every = 0  # 0: rcr.evals validations
  c.rcr = rcr_fields()
  c.rcr.label_fraction = 0.1  # = rcl.label_fraction: the same labeled pairs
  c.rcr.unlabeled_batch_size = 4  # unlabeled pairs per step
  c.rcr.evals = 8
  c.rcl.stage1_steps = 1800  # Sup. only: as many steps as RCR
  c.rcl.n_labeled = 2  # RCL's stage-2 share of input.batch_size (unused by Sup. only)
  c.rcl.evals_per_stage = 8
  return c
