"""FC-Siam-conc (Daudt et al. 2018): siamese encoder, concatenated skips (1.55 M parameters).

  python -m jaxcd.train --config configs/fc_siam_conc.py --workdir runs/fc_siam_conc
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "fc_siam_conc"
  return c
