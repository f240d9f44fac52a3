"""Dsfer-Net on LEVIR-CD with the paper's settings (Chang et al. 2024, Sec. IV-B).

  python -m jaxcd.train --config configs/dsfernet_levir.py --workdir runs/dsfernet_levir \
      --config.data.data_dir=/data/LEVIR-CD --config.init.backbone=/weights/vgg16-397923af.pth

Data: 256x256 tiles (1024x1024 originals tiled on access, or the pre-tiled LEVIR-CD256 layout),
7120/1024/2048 pairs, no augmentation. The paper's VGG16 is ImageNet-pretrained: pass a local
torchvision `vgg16-*.pth` (or .safetensors/.npz) with --config.init.backbone (no download).
Schedule: batch 32, Adam lr 1e-5, weight decay 1e-5, linear decay to 0 over 30,000 iterations,
validation every 500 keeping the best val F1, then the test split. Time: 30k steps of ~0.45 PFLOP
each (about 150 GFLOP forward per pair); roughly 1-3 h on one A100/H100 in bfloat16
(--config.dtype=bfloat16) by that FLOP count, not measured; impractical on CPU.
Expect (paper Table I, LEVIR-CD): P 89.42, R 92.15, F1 90.76, OA 99.04, IoU 83.09.

Paper vs official code (github ShizhenChang/Dsfer-Net, Train.py); paper values are the defaults:
  learning rate   paper 1e-5           code --config.optim.lr=5e-5
  schedule        paper linear         code --config.optim.schedule=poly (power 0.9, optim.poly_power)
  stop            paper 30k            code stops at 15k of its 30k poly schedule: --config.num_steps=15000
                                       decays over 15k instead (jaxcd has no separate decay horizon)
  lam             paper 0.1 (Table V)  code help string 0.01: --config.loss.lam=0.01
  bands           paper/jaxcd RGB, with the per-dataset mean/std below in RGB order. The code
                  reads BGR (cv2) with the same statistics in BGR order, and its checkpoints
                  (`python -m jaxcd.convert`) expect that: --config.data.band_order="(2,1,0)"
                  --config.data.mean="(85.4457,100.0701,101.4625)"
                  --config.data.std="(44.1588,47.9116,50.1835)"
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
