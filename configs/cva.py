"""CVA + Otsu (change vector analysis), the training-free classical baseline, on the synthetic scenes.

  python -m jaxcd.train --config configs/cva.py --workdir runs/cva

Nothing is trained: every val and test pair is predicted and scored (about 5 s on 2 CPU cores).
Expect test F1 0.24 on the embedded synthetic data: seasonal colours, shadows, cloud shadows and
misregistration fool it (FC-Siam-diff, configs/fc_siam_diff.py: F1 0.84 on the same pairs).
Without the per-image standardisation: --config.cva.normalise=False. Other data, e.g.:
  --config.data.name=levir_cd --config.data.data_dir=/data/LEVIR-CD
Tables: docs/results.md#fc-siam-diff-and-cva
"""
import ml_collections

from jaxcd.config_base import base_config


def get_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.method = "cva"  # jaxcd/methods/cva.py
  c.cva = ml_collections.ConfigDict()
  c.cva.normalise = True  # standardise each image per band before differencing (gain/offset-proof)
  c.eval_splits = ("test",)  # scored after 'val'
  return c
