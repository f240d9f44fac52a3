"""FC-EF-Res (Daudt et al., CVIU 2019; the authors' "FresUNet"), a Table I baseline of the
Dsfer-Net paper, on the embedded synthetic scenes (1,103,874 parameters; paper: 1.10 M).

  python -m jaxcd.train --config configs/fc_ef_res.py --workdir runs/fc_ef_res

Same data, schedule and optimiser as the FC-Siam-diff demo (configs/fc_siam_diff.py): Adam 1e-3,
poly decay, 1200 steps of 16 pairs at 64x64; a few minutes on 2 CPU cores (not timed here).
Expect (paper, Dsfer-Net Table I, LEVIR-CD / WHU-CD / CDD): F1 86.11 / 87.20 / 90.02.
Tables: docs/results.md#dsfer-net-paper
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "fc_ef_res"
  del c.model["dropout"]  # FresUNet has no dropout
  c.model.base_width = 8  # widths 8/16/32/64, bottleneck 128 (the authors' base_depth)
  return c
