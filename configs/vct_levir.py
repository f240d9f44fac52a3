"""VcT on LEVIR-CD with the official recipe (Event-AHU/VcT_Remote_Sensing_Change_Detection,
run_cd.sh, main_cd.py, models/trainer.py).

  python -m jaxcd.train --config configs/vct_levir.py --workdir runs/vct_levir \
      --config.data.data_dir=/data/LEVIR-CD --config.init.backbone=/weights/resnet18-f37072fd.pth

256x256 tiles (7120/1024/2048), images scaled to [-1, 1] (mean = std = 0.5); batch 8, SGD
momentum 0.9, weight decay 5e-4, lr 0.01, linear decay, 200 epochs = 178,000 steps; validation
each epoch, the best validation F1 kept; plain cross-entropy. Official model defaults: top_k
1000, 10 clusters. Departures: the official lr is stepped per epoch as 1 - epoch/201 (it ends at
0.5% of the start, not 0); augmentation there is flips, a random 1-1.2x rescale with crop and a
Gaussian blur of radius U(0, 1), here "flip_rot" (flips and right-angle turns; no rescale or
blur). ImageNet ResNet-18: the official code loads it and then re-initialises every conv and
linear weight with N(0, 0.02) and every BatchNorm scale with N(1, 0.02) (`init_net` after
`resnet18(pretrained=True)`), keeping only the ImageNet BatchNorm running statistics; jaxcd
keeps the whole loaded trunk. Pass no --config.init.backbone for random initialisation.
Time: a GPU config, not run.
Expect (paper, Dsfer-Net Table I, LEVIR-CD): F1 86.89, IoU 76.81.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "vct")
  # data_dir: the LEVIR-CD root (train|val|test/{A,B,label}) or the LEVIR-CD256 layout.
  on_dataset(c, "levir_cd", "")
  c.data.tile_size = 256
  c.data.mean = (127.5, 127.5, 127.5)  # official TF.normalize(mean=0.5, std=0.5) on [0, 1]
  c.data.std = (127.5, 127.5, 127.5)

  c.model.top_k = 1000  # official k_nums (of the 64x64 = 4096 feature pixels)

  c.input.batch_size = 8
  c.input.eval_batch_size = 8
  c.input.augment = "flip_rot"  # official: h/v flips, 1-1.2x rescale + crop, blur (see above)

  c.optim.name = "sgd"
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4  # torch SGD weight_decay: L2 added to the gradient
  c.optim.lr = 0.01
  c.optim.schedule = "linear"

  steps_per_epoch = 7120 // 8  # 890
  c.num_steps = 200 * steps_per_epoch  # 200 epochs
  c.eval_every = steps_per_epoch  # validation after every epoch, as the official trainer
  c.checkpoint_every = steps_per_epoch
  c.log_every = 100
  c.eval_splits = ("test",)
  return c
