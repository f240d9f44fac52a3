"""RCL on WHU-CD with the paper's settings (Table III), labeled fraction 5%.

  python -m jaxcd.train --config configs/rcl_whu.py --workdir runs/rcl_whu_5 \
      --config.data.data_dir=/data/WHU-CD-256
  python -m jaxcd.experiments.label_fractions --config configs/rcl_whu.py --fractions 5,10,20,40 \
      --out runs/rcl_table3 --config.data.data_dir=/data/WHU-CD-256

Data: SemiCD's WHU-CD-256 (256x256 tiles with change only, 1512/189/189 train/val/test) as
data_dir/{A,B,label}/ plus list/{train,val,test}.txt; obtain WHU-CD from its authors. Labeled
fractions are drawn by jaxcd (seeded), not the official list files. Settings as
configs/rcl_sztaki.py (SGD, backbone lr / 10, poly, 4 + 4 batches), 80 epochs per stage (paper).
Time: a GPU config, not run here (paper Table VII, 5%, one 1080Ti: Ours 6.0 h).
Expect (paper Table III, 5% labeled): test IoU 79.32 (Sup. only 65.73).
Tables: docs/results.md#rcl-paper
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "rcl_sztaki")
  on_dataset(c, "whu_cd", "data/WHU-CD-256")  # SemiCD's WHU-CD-256 tiles + list/*.txt
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
