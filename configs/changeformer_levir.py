"""ChangeFormerV6 on LEVIR-CD with the official recipe (scripts/run_ChangeFormer_LEVIR.sh).

  python -m jaxcd.train --config configs/changeformer_levir.py --workdir runs/changeformer_levir \
      --config.data.data_dir=/data/LEVIR-CD

256x256 tiles (the official LEVIR-CD256: 7120/1024/2048 pairs); AdamW lr 1e-4, betas
(0.9, 0.999), weight decay 0.01; batch 16; 200 epochs = 89,000 steps; CE on all five outputs
(0.5, 0.5, 0.5, 0.8, 1.0); validation every epoch. Normalisation as the official ((x/255 - 0.5)
/ 0.5). Departures: the official lr decays per epoch as 1 - epoch/201 (ends at lr/201), here
per step to 0; its augmentation is random h/v flips, a random 1-1.2 rescale and 256 crop,
Gaussian blur and colour jitter, here flips and rot90; it starts from
`pretrained_changeformer.pt` (not loadable through config.init here; `jaxcd.weights.
changeformer_from_official` converts such a state dict); its script validates on the test split.
Time: a GPU config, not run.
Expect (paper, Dsfer-Net Table I, LEVIR-CD): F1 84.45, IoU 73.08.
"""
from jaxcd.config_base import on_dataset, sibling


def get_config():
  c = sibling(__file__, "changeformer")
  # data_dir: the LEVIR-CD root (train|val|test/{A,B,label}) or the LEVIR-CD256 layout.
  on_dataset(c, "levir_cd", "")
  c.data.tile_size = 256  # official img_size 256
  c.model.embed_dim = 256  # official --embed_dim (configs/changeformer.py narrows it for CPU)

  c.input.batch_size = 16
  c.input.eval_batch_size = 16
  c.input.augment = "flip_rot"

  c.num_steps = 89000  # 200 epochs x 445 steps (7120 pairs / 16)
  c.eval_every = 445  # every epoch, as the official trainer
  c.checkpoint_every = 445
  c.log_every = 100
  c.eval_splits = ("test",)
  return c
