"""FC-EF (Daudt et al. 2018) on OSCD, all 13 Sentinel-2 bands (jaxcd/data/oscd.py).

  python -m jaxcd.train --config configs/oscd.py --workdir runs/oscd \
      --config.data.data_dir=/data/OSCD

Data: OSCD as published (https://rcdaudt.github.io/oscd/; obtain it, with its test labels, from
its authors): 14 train cities, of which 3 (seeded) are held out for validation, 10 test cities,
whole city images (about 600x600 at 10 m, sizes vary), bands resampled onto the 10 m grid.
Training on random 96x96 crops of whole cities; evaluation on whole cities, one per batch.
mean/std are neutral (127.5), not measured: no OSCD copy here. Class weights are unset; change
is rare, so `python -m jaxcd.data.describe --dataset oscd --data_dir DIR` gives the changed
fraction to weight by (--config.loss.class_weights).
Time: not run here. Expect: not measured (no OSCD copy on this machine).
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "fc_ef")
  on_dataset(c, "oscd", "")  # the folder holding the images and label folders
  c.data.num_bands = 13  # B01..B08, B8A, B09..B12
  c.data.mean = (127.5,) * 13
  c.data.std = (127.5,) * 13

  c.input.batch_size = 8  # 11 training cities: each step crops 8 of them
  c.input.eval_batch_size = 1  # whole cities of different sizes
  c.input.augment = "flip_rot_crop"
  c.input.crop_size = 96

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.schedule = "poly"
  c.num_steps = 3000
  c.eval_every = 250
  c.checkpoint_every = 250
  c.log_every = 50
  return c
