"""FC-Siam-diff (Daudt et al. 2018) on the embedded synthetic scenes: the default demo run.

  python -m jaxcd.train --config configs/fc_siam_diff.py --workdir runs/demo

No download: the data is generated on the fly. Time: 7 min 46 s on 2 CPU cores for install +
training + evaluation. Expect: test F1 0.843, IoU 0.729. Other data, e.g.:
  --config.data.name=levir_cd --config.data.data_dir=/data/LEVIR-CD --config.input.batch_size=16
Tables: docs/results.md#fc-siam-diff-and-cva
"""
from jaxcd.config_base import base_config


def get_config():
  c = base_config()
  c.model.name = "fc_siam_diff"
  c.model.dropout = 0.2  # Dropout2d after every conv, as in the authors' code
  c.data.name = "synthetic"
  c.input.batch_size = 16
  c.input.augment = "flip_rot"
  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.schedule = "poly"
  c.num_steps = 1200
  c.eval_every = 300
  c.checkpoint_every = 300
  c.log_every = 50
  return c
