"""RCL on LEVIR-CD with the paper's settings (Table IV), labeled fraction 5%.

  python -m jaxcd.train --config configs/rcl_levir.py --workdir runs/rcl_levir_5 \
      --config.data.data_dir=/data/LEVIR-CD256
  python -m jaxcd.experiments.label_fractions --config configs/rcl_levir.py \
      --fractions 5,10,20,40 --out runs/rcl_table4 --config.data.data_dir=/data/LEVIR-CD256

Data: LEVIR-CD cut into 256x256 non-overlapping tiles, 7120/1024/2048 (the common LEVIR-CD256
layout data_dir/{A,B,label} + list/{train,val,test}.txt, or the 1024 originals, tiled by the
`levir_cd` source). Obtain it from its authors. Settings as configs/rcl_sztaki.py, 80 epochs per
stage (paper).
Time: a GPU config, not run here.
Expect (paper Table IV, 5% labeled): test IoU 74.79 (Sup. only 61.0).
Tables: docs/results.md#rcl-paper
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "rcl_sztaki")
  on_dataset(c, "levir_cd", "data/LEVIR-CD256")
  c.data.tile_size = 256
  c.input.eval_batch_size = 32
  c.rcl.label_fraction = 0.05
  c.rcl.stage1_epochs = 80.0
  c.rcl.stage2_epochs = 80.0
  c.rcl.evals_per_stage = 40
  c.checkpoint_every = 1000
  c.log_every = 100
  c.rcl.paper_table = "IV"
  return c
