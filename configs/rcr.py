"""RCR (consistency regularization with 26 perturbed auxiliary decoders, semi-supervised) on the
embedded synthetic scenes, beside the "Sup. only" baseline with the same steps and labels (paper
settings: configs/rcr_whu.py, configs/rcr_levir.py).

  python -m jaxcd.train --config configs/rcr.py --workdir runs/rcr
  python -m jaxcd.experiments.label_fractions --config configs/rcr.py --fractions 10 \
      --methods sup_only,rcr --out runs/rcr_fractions        # with Sup. only, same steps and pairs

configs/advnet.py's protocol (no download; 100 of 1000 pairs labeled; `rcr` width 8 from
scratch, Adam 1e-2, CE 1:5, 1200 steps of 8 labeled + 8 unlabeled pairs) with the official
perturbations (VAT x2, dropout x5, guided cutout x5, context x2, object masking x2, feature drop
x5, feature noise x5) and consistency weight 30, its sigmoid ramp over half the run (code: 10%,
--config.rcr.rampup=0.1: from scratch that held the network at "no change").
Guided cutout cuts components with more than 50 boundary pixels where the code counts the points
of their cv2 contour (no array form; see `jaxcd.models.perturbations.component_boxes`). VAT's
power step is the exact Hessian-vector product; the code's finite difference at xi 1e-6 leaves
r_adv near 0 in float32 (--config.rcr.vat_direction=finite_difference restores it).
Time: 11 min 39 s on 2 CPU cores with another run beside it.
Expect: test F1 0.659, IoU 0.492 (Sup. only, same steps and labels: F1 0.688, IoU 0.524).
Results: docs/results.md#rivals-of-rcl-on-the-synthetic-scenes
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "advnet")  # the rcr block and the split of every rival
  c.method = "rcr"  # jaxcd/methods/rcr.py
  c.input.batch_size = c.gan.n_labeled  # labeled pairs per step; rcr.unlabeled_batch_size more
  return c
