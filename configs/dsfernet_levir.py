"""Dsfer-Net on LEVIR-CD with the paper's settings (Chang et al. 2024, Sec. IV-B).

  python -m jaxcd.train --config configs/dsfernet_levir.py --workdir runs/dsfernet_levir \
      --config.data.data_dir=/data/LEVIR-CD --config.init.backbone=/weights/vgg16-397923af.pth

256x256 tiles, 7120/1024/2048 pairs, no augmentation; ImageNet VGG16 from a local torchvision
file (no download); batch 32, Adam 1e-5, weight decay 1e-5, linear decay over 30,000 steps.
Time: a GPU config, not run (roughly 1-3 h on one A100/H100 in bfloat16 by FLOP count).
Expect (paper Table I, LEVIR-CD): F1 90.76, IoU 83.09.
Official code (ShizhenChang/Dsfer-Net, Train.py): --config.optim.lr=5e-5 --config.loss.lam=0.01
--config.optim.schedule=poly --config.num_steps=15000 (it stops at 15k of a 30k decay; jaxcd
then decays over 15k). Its checkpoints (`python -m jaxcd.convert`) expect BGR: band_order
"(2,1,0)", mean "(85.4457,100.0701,101.4625)", std "(44.1588,47.9116,50.1835)" (--config.data.*).
Tables: docs/results.md#dsfer-net-paper
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "dsfernet")
  # data_dir: the LEVIR-CD root (train|val|test/{A,B,label}) or the LEVIR-CD256 layout.
  on_dataset(c, "levir_cd", "")
  c.data.tile_size = 256
  # Official statistics (LEVIRDataSet.py) reordered from BGR to RGB, 0-255 space.
  c.data.mean = (101.4625, 100.0701, 85.4457)
  c.data.std = (50.1835, 47.9116, 44.1588)

  c.model.input_size = 256  # official (C,H,W) LayerNorms: 34,085,990 parameters

  c.loss.class_weights = (1.04809706, 21.79129276)  # official Train.py, LEVIR
  c.loss.lam = 0.1  # paper Table V best for LEVIR-CD; code 0.01

  c.input.batch_size = 32
  c.input.eval_batch_size = 32
  c.input.augment = "none"  # the paper trains without augmentation

  c.optim.name = "adam"
  c.optim.lr = 1e-5  # paper; code 5e-5
  c.optim.weight_decay = 1e-5
  c.optim.schedule = "linear"  # paper; code "poly"

  c.num_steps = 30000
  c.eval_every = 500
  c.checkpoint_every = 500
  c.log_every = 100
  c.eval_splits = ("test",)
  return c
