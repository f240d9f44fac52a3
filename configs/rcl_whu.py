"""RCL on WHU-CD with the paper's settings (Table III), labeled fraction 5%.

  python -m jaxcd.train --config configs/rcl_whu.py --workdir runs/rcl_whu_5 \
      --config.data.data_dir=/data/WHU-CD-256
  python -m jaxcd.experiments.label_fractions --config configs/rcl_whu.py --fractions 5,10,20,40 \
      --out runs/rcl_table3 --config.data.data_dir=/data/WHU-CD-256

Data: the paper's WHU protocol is SemiCD's WHU-CD-256: 256x256 tiles with change only,
1512/189/189 train/val/test, given as data_dir/{A,B,label}/ plus list/{train,val,test}.txt (the
`whu_cd` source reads those lists as they are). Not shipped here: obtain WHU-CD from its authors.
Labeled fractions are drawn by jaxcd (seeded), not the official list files. Settings as
configs/rcl_sztaki.py (SGD, backbone lr / 10, poly, 4 + 4 batches), 80 epochs per stage
(paper).

Paper, Table III (test IoU / OA of the change class, %), labeled 5 / 10 / 20 / 40%:
  Sup. only  65.73 / 72.93 / 77.38 / 81.95     OA 92.08 / 93.92 / 95.06 / 96.19
  RCR        76.65 / 79.10 / 83.87 / 84.66     OA 95.2  / 95.70 / 96.68 / 96.84
  Ours. pre  70.05 / 71.37 / 78.6  / 83.63     OA 93.60 / 95.07 / 95.27 / 96.61
  Ours       79.32 / 82.98 / 84.16 / 85.28     OA 95.67 / 96.48 / 96.73 / 96.98
Paper Table VII (5%, one 1080Ti): Sup 0.5 h, Ours. pre 1.0 h, Ours 6.0 h.
"""
from jaxcd.config_base import sibling


def get_config():
  c = sibling(__file__, "rcl_sztaki")
  c.data.name = "whu_cd"
  c.data.data_dir = "data/WHU-CD-256"  # SemiCD's WHU-CD-256 tiles + list/{train,val,test}.txt
  c.data.tile_size = 256
  c.input.eval_batch_size = 27  # 189 = 7 x 27
  c.rcl.label_fraction = 0.05
  c.rcl.stage1_epochs = 80.0  # paper: 80 epochs on WHU and LEVIR-CD
  c.rcl.stage2_epochs = 80.0
  c.rcl.evals_per_stage = 80  # about once per epoch, as the code
  c.checkpoint_every = 500
  c.log_every = 50
  c.rcl.paper_table = "III"
  return c
