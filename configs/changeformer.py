"""ChangeFormerV6 (Bandara & Patel, IGARSS 2022; official wgcban/ChangeFormer, 41,026,674
parameters; Dsfer-Net Table II: 43.99 M) with its multi-scale CE loss, on the embedded synthetic
scenes; here with a 64-wide decoder (29,748,018 parameters), the official encoder.

  python -m jaxcd.train --config configs/changeformer.py --workdir runs/changeformer

Same data as configs/fc_siam_diff.py, random initialisation (the official LEVIR
run starts from its `pretrained_changeformer.pt`; no loader for it in `config.init` yet).
Loss and optimiser as the official LEVIR script (scripts/run_ChangeFormer_LEVIR.sh, trainer.py):
CE on the five outputs with weights 0.5, 0.5, 0.5, 0.8, 1.0 (labels nearest-resized to each);
AdamW, lr 1e-4, betas (0.9, 0.999), weight decay 0.01, linear decay. The paper's datasets:
configs/changeformer_levir.py, changeformer_whu.py, changeformer_cdd.py.
CPU budget (all five rivals alike, = jaxcd.experiments.same_steps): 200 steps of 8 pairs of
64x64 (1.6 epochs of the 1000 training pairs), one validation at the end, instead of the
official hundreds of epochs at 256x256, so that every model's run is minutes, not hours, on 2
CPU cores.
Time: 7 min 23 s on 2 CPU cores, compilation and test pass included. Our test F1
0.528, IoU 0.359 (docs/results.md, "All models").
Expect (paper, Dsfer-Net Table I, LEVIR-CD / WHU-CD / CDD): F1 84.45 / 82.22 / 87.53.
"""
from jaxcd.config_base import sibling, step_budget


def get_config():
  c = sibling(__file__, "fc_siam_diff")
  c.model.name = "changeformer"
  del c.model["dropout"]  # the official rates below
  # Decoder width 64 at the CPU budget: the official 256 (--config.model.embed_dim=256) puts
  # 256-channel 3x3 convolutions at full resolution and made a 200-step run ~20 minutes.
  c.model.embed_dim = 64
  c.model.embed_dims = (64, 128, 320, 512)  # encoder stage widths
  c.model.depths = (3, 3, 4, 3)  # transformer blocks per stage
  c.model.num_heads = (1, 2, 4, 8)
  c.model.drop_rate = 0.1  # dropout of projections and Mix-FFN
  c.model.attn_drop_rate = 0.1  # dropout of the attention probabilities
  c.model.drop_path_rate = 0.1  # stochastic depth, linear 0 -> 0.1 over the blocks
  c.loss.name = "changeformer"  # jaxcd.losses.changeformer_loss
  c.loss.multi_scale = True  # official --multi_scale_train True
  c.loss.weights = (0.5, 0.5, 0.5, 0.8, 1.0)  # official multi_pred_weights: p_c4 .. p_c1, logits
  c.optim.name = "adamw"
  c.optim.lr = 1e-4
  c.optim.weight_decay = 0.01
  c.optim.schedule = "linear"
  step_budget(c)  # the CPU budget of the docstring
  return c
