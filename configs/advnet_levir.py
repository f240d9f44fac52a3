"""AdvNet on LEVIR-CD with the official SemiCD settings (RCL paper Table IV), 5% labeled.

  python -m jaxcd.train --config configs/advnet_levir.py --workdir runs/advnet_levir_5 \
      --config.data.data_dir=/data/LEVIR-CD256
  python -m jaxcd.experiments.label_fractions --config configs/advnet_levir.py \
      --fractions 5,10,20,40 --methods sup_only,advnet,s4gan,semicdnet --out runs/gan_table4 \
      --config.data.data_dir=/data/LEVIR-CD256

Data and network as configs/rcl_levir.py (LEVIR-CD256 tiles, `rcr` at the paper's width, SGD
1e-2 with the backbone at 1e-3, momentum 0.9, weight decay 1e-4, poly); as the official branches:
batches of 8 labeled + 8 unlabeled pairs, 80 epochs of the unlabeled pairs, the unsupervised
weight ramped over the first 10%, discriminators at ndf 64. Discriminator optimiser: Adam 1e-4
(b2 0.99, poly), the AdvNet and s4GAN papers' (the branches put D into the network's SGD:
--config.gan.disc_optim=sgd --config.gan.disc_lr=1e-2 --config.gan.disc_weight_decay=1e-4).
Time: a GPU config, not run here.
Expect (paper Table IV, test IoU / OA %): AdvNet 66.1 / 98.08 at 5%, 72.3 / 98.45 at 10%,
74.6 / 98.58 at 20%, 75.0 / 98.60 at 40% (Sup. only 61.0, 66.8, 72.3, 74.9).
"""
from jaxcd.config_base import sibling

BLOCKS = ("gan", "advnet", "s4gan", "semicdnet")


def get_config():
  c = sibling(__file__, "rcl_levir")
  blocks = sibling(__file__, "advnet")
  for name in BLOCKS:
    c[name] = blocks[name]
  c.method = "advnet"
  c.gan.ndf = 64
  c.gan.label_fraction = 0.05
  c.gan.n_labeled = 8
  c.input.batch_size = 16  # 8 labeled + 8 unlabeled (official configs)
  c.num_steps = 0  # gan.epochs of the unlabeled pairs
  c.gan.epochs = 80.0
  c.gan.evals = 40
  c.rcl.mode = "sup_only"
  return c
