"""FC-EF (Daudt et al. 2018): early fusion, one U-Net over the 6-band stack (1.35 M parameters).

  python -m jaxcd.train --config configs/fc_ef.py --workdir runs/fc_ef

Same data and schedule as configs/fc_siam_diff.py; training not timed or scored here.
Tables: docs/results.md#throughput (train / forward speed)
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "fc_ef"
  return c
