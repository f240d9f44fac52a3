"""DSAMNet on LEVIR-CD with the official recipe (liumency/DSAMNet train.py, train_options.py).

  python -m jaxcd.train --config configs/dsamnet_levir.py --workdir runs/dsamnet_levir \
      --config.data.data_dir=/data/LEVIR-CD --config.init.backbone=/weights/resnet18-5c106cde.pth

Official: ImageNet ResNet-18 (torchvision), inputs (x - 0.5) / 0.5, no augmentation, batch 8,
Adam lr 5e-4, betas (0.9, 0.999), no schedule, 100 epochs, BCL (margin 2) + 0.1 x 0.5 x
(Dice(ds2) + Dice(ds3)), change where the distance exceeds 1. Here: the 256x256 tiles of the
official split (7120/1024/2048), 100 epochs of 890 batches = 89,000 steps, validation every 10
epochs, the best validation checkpoint scored on test.
Time: a GPU config, not run.
Expect (paper, Dsfer-Net Table I, LEVIR-CD): F1 86.08, IoU 75.56.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "dsamnet")
  # data_dir: the LEVIR-CD root (train|val|test/{A,B,label}) or the LEVIR-CD256 layout.
  on_dataset(c, "levir_cd", "")
  c.data.tile_size = 256
  c.data.mean = (127.5, 127.5, 127.5)  # official Normalize((0.5,) * 3, (0.5,) * 3) in 0-255 space
  c.data.std = (127.5, 127.5, 127.5)

  c.input.batch_size = 8
  c.input.eval_batch_size = 16
  c.input.augment = "none"  # the official loader only normalises

  steps_per_epoch = 7120 // 8  # 890
  c.num_steps = 100 * steps_per_epoch  # 100 official epochs
  c.eval_every = 10 * steps_per_epoch
  c.checkpoint_every = 10 * steps_per_epoch
  c.log_every = 100
  c.eval_splits = ("test",)
  return c
