"""RCR on LEVIR-CD with the official code's settings (SemiCD configs/config_LEVIR.json), labeled
fraction 5%.

  python -m jaxcd.train --config configs/rcr_levir.py --workdir runs/rcr_levir_5 \
      --config.data.data_dir=/data/LEVIR-CD256
  python -m jaxcd.experiments.label_fractions --config configs/rcr_levir.py --fractions 5,10,20,40 \
      --methods sup_only,rcr --out runs/rcr_table4 --config.data.data_dir=/data/LEVIR-CD256

Data as configs/rcl_levir.py (its rcl block runs the Sup. only row). RCR network (50.69 M
parameters in training, 46.85 M evaluated), 8 labeled + 8 unlabeled pairs per step, 80 epochs of
the unlabeled pairs, SGD lr 1e-2 (backbone 1e-3), momentum 0.9, weight decay 1e-4, poly 0.9;
consistency weight 30, sigmoid ramp over the first 10% of the steps; the 26 decoders of the code.
Choices: the code's augmentation is a random rescale (0.5-2), a 256 crop and a horizontal flip
(its configs set rotate and blur, which its loader never applies); here `flip_rot_scale_crop`
(also vertical flips and rot90). Guided cutout cuts components with more than 50 boundary pixels
(the code: more than 50 cv2 contour points, no array form). VAT's power step is the exact
Hessian-vector product (the method's intent); the code's finite difference at xi 1e-6 leaves
r_adv near 0 in float32: --config.rcr.vat_direction=finite_difference. ImageNet weights as the code:
--config.init.backbone=FILE (SemiCD's 3x3resnet50-imagenet.pth).
Time: a GPU config, not run here.
Expect (RCL paper Table IV, RCR row): test IoU / OA 72.5 / 98.47 at 5% labeled, 75.5 / 98.63 at
10%, 76.2 / 98.68 at 20%, 77.2 / 98.72 at 40% (Sup. only: 61.0, 66.8, 72.3, 74.9).
"""
from jaxcd.config_base import sibling
from jaxcd.methods.rcr import rcr_fields


def get_config():
  c = sibling(__file__, "rcl_levir")
  c.method = "rcr"  # jaxcd/methods/rcr.py
  c.input.batch_size = 8  # labeled pairs per step (code: 8; Sup. only: the same 8)
  c.num_steps = 0  # 0: rcr.epochs passes over the unlabeled pairs
  c.rcr = rcr_fields()
  c.rcr.label_fraction = 0.05  # = rcl.label_fraction: the same labeled pairs
  c.rcr.unlabeled_batch_size = 8
  c.rcr.epochs = 80.0
  c.rcr.backbone_lr_mult = 0.1  # code: backbone at lr / 10
  c.rcr.evals = 16  # every 5 epochs, as the code
  return c
