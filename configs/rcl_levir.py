"""RCL on LEVIR-CD with the paper's settings (Table IV), labeled fraction 5%.

  python -m jaxcd.train --config configs/rcl_levir.py --workdir runs/rcl_levir_5 \
      --config.data.data_dir=/data/LEVIR-CD256
  python -m jaxcd.experiments.label_fractions --config configs/rcl_levir.py \
      --fractions 5,10,20,40 --out runs/rcl_table4 --config.data.data_dir=/data/LEVIR-CD256

Data: LEVIR-CD cut into 256x256 non-overlapping tiles, 7120/1024/2048 (the common LEVIR-CD256
layout data_dir/{A,B,label} + list/{train,val,test}.txt, or the 1024 originals, tiled by the
`levir_cd` source). Obtain it from its authors. Settings as configs/rcl_sztaki.py, 80 epochs per
stage (paper).

Paper, Table IV (test IoU / OA, %), labeled 5 / 10 / 20 / 40%:
  Sup. only  61.0  / 66.8 / 72.3  / 74.9     OA 97.60 / 98.13 / 98.44 / 98.60
  RCR        72.5  / 75.5 / 76.2  / 77.2     OA 98.47 / 98.63 / 98.68 / 98.72
  Ours       74.79 / 76.7 / 77.01 / 77.10    OA 98.78 / 98.83 / 98.87 / 98.89
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "rcl_sztaki")
  c.data.name = "levir_cd"
  c.data.data_dir = "data/LEVIR-CD256"
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
