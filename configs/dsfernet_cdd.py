"""Dsfer-Net on CDD (season-varying) with the paper's settings (Chang et al. 2024, Sec. IV-B).

  python -m jaxcd.train --config configs/dsfernet_cdd.py --workdir runs/dsfernet_cdd \
      --config.data.data_dir=/data/CDD --config.init.backbone=/weights/vgg16-397923af.pth

Data: `subset/{train,val,test}/{A,B,OUT}`, 256x256, 10000/2998/3000 pairs. As
configs/dsfernet_levir.py except lr 1e-4 (paper and code agree for CDD) and lam 1.
Time: a GPU config, not run (the estimate of configs/dsfernet_levir.py).
Expect (paper Table I, CDD): F1 95.17, IoU 90.79.
Official code: --config.optim.schedule=poly (stop at 15k) --config.loss.lam=0.1; BGR for its
checkpoints: --config.data.band_order="(2,1,0)"
--config.data.mean="(103.5061,113.4304,105.4610)" --config.data.std="(61.7836,64.5690,60.5640)"
Tables: docs/results.md#dsfer-net-paper
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "dsfernet_levir")
  on_dataset(c, "cdd", "")  # CDD root, or its `subset` folder; it comes pre-tiled
  # Official statistics (CDDDataSet.py) reordered from BGR to RGB, 0-255 space.
  c.data.mean = (105.4610, 113.4304, 103.5061)
  c.data.std = (60.5640, 64.5690, 61.7836)
  c.loss.class_weights = (1.13250422, 8.54692918)  # official Train.py, CDD
  c.loss.lam = 1.0  # paper Table V best for CDD; code 0.1
  c.optim.lr = 1e-4  # paper and code
  return c
