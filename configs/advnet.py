"""AdvNet (adversarial semi-supervised training, RCL paper Table IV's rival) on the embedded
synthetic scenes, beside Sup. only with the same steps and labels (paper settings:
configs/advnet_levir.py). This file is the embedded protocol of all four rivals of RCL: it holds
the blocks of RCR and the adversarial methods, so one command gives their table.

  python -m jaxcd.train --config configs/advnet.py --workdir runs/advnet
  python -m jaxcd.experiments.label_fractions --config configs/advnet.py --fractions 10 \
      --methods sup_only,rcr,advnet,s4gan,semicdnet --out runs/rivals_synthetic

No download. configs/rcl.py's network and split (`rcr` width 8 from scratch; 100 of 1000 pairs
labeled, seed 0); batches of 8 labeled + 8 unlabeled pairs (Sup. only: the same 8 labeled), 1200
steps. For a network from scratch in minutes: Adam 1e-2 (200-step warm-up, poly) and CE weights
1:5 (~6% of the pixels change; at 3e-3 unweighted, Sup. only found no change in 1200 steps).
Discriminators at ndf 16 (paper 64), Adam 1e-4 (b2 0.99), poly. RCR's consistency weight ramps
up over half the run (code: 10%): from scratch, the full weight before the network finds change
holds it at "no change" (test F1 0 in 1800 steps at 10%).
configs/rcr.py, configs/s4gan.py and configs/semicdnet.py only change `method`.
Time: 7 min 39 s on 2 CPU cores with another run beside it (the table's five runs: 40 min).
Expect: test F1 0.613, IoU 0.441 (Sup. only, same steps and labels: F1 0.688, IoU 0.524; RCR
0.659 / 0.492; s4GAN 0.008 / 0.004; SemiCDNet 0.681 / 0.516).
Results: docs/results.md#rivals-of-rcl-on-the-synthetic-scenes
"""
import ml_collections

from jaxcd.config_base import sibling
from jaxcd.methods.rcr import rcr_fields


def adversarial_fields(c: ml_collections.ConfigDict) -> None:
  """The blocks of jaxcd/methods/{adversarial,advnet,s4gan,semicdnet}.py, paper defaults."""
  g = c.gan = ml_collections.ConfigDict()
  g.label_fraction = 0.1  # labeled share of the training split (the split RCL draws)
  g.n_labeled = 8  # labeled pairs per batch; input.batch_size - n_labeled are unlabeled
  g.epochs = 80.0  # run length in passes over the unlabeled pairs when num_steps is 0
  g.evals = 20  # validations per run when config.eval_every is 0
  g.ramp_up = 0.1  # share of the steps over which the unsupervised weight ramps up (code)
  g.ndf = 64  # discriminator width (code: 64)
  g.disc_optim = "adam"  # "adam" | "sgd": the discriminators' own optimizer
  g.disc_lr = 1e-4  # AdvNet / s4GAN papers: Adam 1e-4 (the code: the network's SGD 1e-2)
  g.disc_b2 = 0.99  # Adam beta2 (AdvNet / s4GAN papers)
  g.disc_momentum = 0.9  # SGD only
  g.disc_weight_decay = 0.0
  g.disc_poly_power = 0.9  # poly decay of the discriminators' lr over the run (0 = constant)

  a = c.advnet = ml_collections.ConfigDict()
  a.lambda_adv_l = 0.01  # adversarial weight on labeled predictions (Hung et al.)
  a.lambda_adv_u = 0.001  # ... on unlabeled predictions (Hung et al.)
  a.lambda_semi = 0.1  # masked self-training weight (Hung et al.)
  a.mask_threshold = 0.2  # T_semi: self-train where sigmoid(D) exceeds it (Hung et al.)
  a.semi_start = 0.25  # self-training from this share of the steps on (Hung et al.: 5k of 20k)
  # True: the official branch (unsupervised terms detached, D untrained: trains as Sup. only).
  a.code_detached = False
  a.unsup_weight = 1.0  # code_detached only: the code's unsupervised_w

  s = c.s4gan = ml_collections.ConfigDict()
  s.lambda_fm = 0.1  # feature-matching weight (paper and code)
  s.lambda_st = 1.0  # self-training weight (paper and code)
  s.st_threshold = 0.6  # self-train on unlabeled pairs whose D score exceeds it (code)
  s.disc_weight_ramp = False  # True: D loss x ramped unsup_weight (the code's loss_unsup)
  s.unsup_weight = 0.5  # the code's unsupervised_w (with disc_weight_ramp)

  d = c.semicdnet = ml_collections.ConfigDict()
  d.unsup_weight = 0.01  # the code's unsupervised_w: weight of the adversarial terms (ramped)
  d.disc_weight_ramp = True  # D loss x ramped unsup_weight (the code's loss_unsup)
  # True: the official branch (argmax maps into Ds, every input detached: only D learns).
  d.code_detached = False


def get_config() -> ml_collections.ConfigDict:
  c = sibling(__file__, "rcl")
  c.method = "advnet"  # jaxcd/methods/advnet.py
  adversarial_fields(c)
  c.gan.ndf = 16
  c.input.batch_size = 16  # 8 labeled + 8 unlabeled
  c.optim.lr = 1e-2
  c.loss.class_weights = (1.0, 5.0)
  c.num_steps = 1200
  c.rcl.mode = "sup_only"  # what the rcl rows of the experiment default to
  c.rcl.stage1_steps = c.num_steps  # Sup. only beside it: the same steps ...
  c.gan.evals = 8
  c.rcr = rcr_fields()
  c.rcr.label_fraction = c.gan.label_fraction
  c.rcr.unlabeled_batch_size = 8
  c.rcr.rampup = 0.5
  c.rcr.evals = 8
  c.checkpoint_every = 300
  return c
