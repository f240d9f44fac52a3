"""RCL across datasets (paper Table VI): labeled SZTAKI tiles, unlabeled WHU-CD tiles.

  python -m jaxcd.experiments.label_fractions --config configs/rcl_sztaki_whu.py \
      --fractions 10,20,40,100 --out runs/rcl_table6 \
      --config.rcl.unlabeled_data.data_dir=/data/WHU-CD-256

The labeled fraction of SZTAKI's training tiles trains stage 1; the reliability pass and stage 2
use ALL the training tiles of `rcl.unlabeled_data` (WHU-CD, 256x256) as the unlabeled set (the
unlabeled SZTAKI rest is not used), so even 100% labeled runs stage 2. The paper used 7120 WHU
pairs. Validation and test stay on SZTAKI; both datasets are normalised with the same (ImageNet)
statistics. Settings otherwise as configs/rcl_sztaki.py.
Time: a GPU config, not run here.
Expect (paper Table VI, 10% labeled): SZTAKI test IoU 16.66 (SZTAKI unlabeled only: 12.68).
Tables: docs/results.md#rcl-paper
"""
import ml_collections

from jaxcd.config_base import declare_options, sibling


def get_config():
  c = sibling(__file__, "rcl_sztaki")
  c.rcl.unlabeled_data = ml_collections.ConfigDict({
      "name": "whu_cd",  # a registered source, as config.data.name
      "data_dir": "data/WHU-CD-256",  # SemiCD's WHU-CD-256 tiles (see configs/rcl_whu.py)
      "tile_size": 256,
      "num_bands": 3,
  })
  declare_options(c.rcl.unlabeled_data)
  c.rcl.unlabeled_split = "train"
  c.rcl.paper_table = "VI"
  return c
