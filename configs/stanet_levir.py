"""STANet-PAM on LEVIR-CD with the official recipe (justchenhao/STANet README, CDFA model).

  python -m jaxcd.train --config configs/stanet_levir.py --workdir runs/stanet_levir \
      --config.data.data_dir=/data/LEVIR-CD --config.init.backbone=/weights/resnet18-5c106cde.pth

Official: ImageNet ResNet-18 (torchvision), inputs (x - 0.5) / 0.5, 256 crops of the 1024x1024
images, batch 8, Adam lr 1e-3 (README), 200 epochs (100 constant + 100 linear to 0), BCL margin
2, validation every epoch. Here: the 256 tiles of the official split, the same number of samples
(200 epochs x 56 batches of the 445 training images = 11,200 steps), linear decay from the start;
no augmentation (the official random 0-15 degree rotation has no jaxcd counterpart; its flip is
off by default: --no_flip defaults to True). Adam betas: official (0.5, 0.999), here 0.9.
Time: a GPU config, not run.
Expect (Dsfer-Net Table I, LEVIR-CD): F1 87.27, IoU 77.41.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "stanet")
  # data_dir: the LEVIR-CD root (train|val|test/{A,B,label}) or the LEVIR-CD256 layout.
  on_dataset(c, "levir_cd", "")
  c.data.tile_size = 256  # the official crop size
  c.data.mean = (127.5, 127.5, 127.5)  # official Normalize((0.5,) * 3, (0.5,) * 3) in 0-255 space
  c.data.std = (127.5, 127.5, 127.5)

  c.input.batch_size = 8
  c.input.eval_batch_size = 16
  c.input.augment = "none"

  c.optim.lr = 1e-3
  c.optim.schedule = "linear"

  c.num_steps = 11200  # 200 official epochs of 56 batches
  c.eval_every = 560  # every 10 official epochs
  c.checkpoint_every = 560
  c.log_every = 100
  c.eval_splits = ("test",)
  return c
