"""FC-Siam-conc (Daudt et al. 2018): siamese encoder, concatenated skips (1.55 M parameters).

  python -m jaxcd.train --config configs/fc_siam_conc.py --workdir runs/fc_siam_conc

Same data and schedule as configs/fc_siam_diff.py; training not timed or scored here.
Tables: docs/results.md#throughput (train / forward speed)
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "fc_siam_conc"
  return c
