"""A PyTorch FC-Siam-diff (Daudt, Le Saux & Boulch, ICIP 2018), from the paper's layer list and
`jaxcd.models.fc_siam`, for parameter-count checks and the side-by-side CPU benchmark
(`jaxcd.experiments.vs_torch`).

The network of the authors' `SiamUnet_diff`: one encoder shared by both dates (4 levels,
16/32/64/128 channels, 2/2/3/3 convs, each Conv3x3 + BN + ReLU + Dropout2d(0.2), max-pool 2), a
decoder from date B's bottleneck whose levels concatenate the up-conv output (ConvTranspose 3x3,
stride 2, as wide as its input) with |skipA - skipB|, and a last 3x3 conv to the classes without
BN. Layer names follow `jaxcd.models.fc_siam` (conv11 ... conv11d); the code is our own.
Imported only by tests and the benchmark's torch worker, after a check that torch is installed.
"""
import torch
import torch.nn.functional as F
from torch import nn

ENC = ((16, 2), (32, 2), (64, 3), (128, 3))  # (width, convs) per level, as jaxcd's _ENC


def conv_bn_relu(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
  return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.Dropout2d(dropout))


class SiamUnetDiff(nn.Module):
  """forward(a, b) -> logits (B, classes, H, W); inputs NCHW."""

  def __init__(self, bands: int = 3, num_classes: int = 2, dropout: float = 0.2):
    super().__init__()
    self.enc = nn.ModuleDict()
    c = bands
    for level, (width, n) in enumerate(ENC, start=1):
      for i in range(n):
        self.enc[f"conv{level}{i + 1}"] = conv_bn_relu(c, width, dropout)
        c = width
    self.up = nn.ModuleDict()
    self.dec = nn.ModuleDict()
    for level in (4, 3, 2, 1):
      width, n = ENC[level - 1]
      # The up-conv keeps its input's width: the bottleneck's at level 4, the previous level's out.
      self.up[f"upconv{level}"] = nn.ConvTranspose2d(c, c, 3, stride=2, padding=1,
                                                     output_padding=1)
      c += width  # concatenated with |skipA - skipB|
      for i in range(n, 0, -1):
        last = i == 1
        out = (ENC[level - 2][0] if level > 1 else num_classes) if last else width
        if level == 1 and last:
          self.dec[f"conv{level}{i}d"] = nn.Conv2d(c, out, 3, padding=1)
        else:
          self.dec[f"conv{level}{i}d"] = conv_bn_relu(c, out, dropout)
        c = out

  def encode(self, x):
    skips = []
    for level, (_, n) in enumerate(ENC, start=1):
      for i in range(n):
        x = self.enc[f"conv{level}{i + 1}"](x)
      skips.append(x)
      x = F.max_pool2d(x, 2)
    return skips, x

  def forward(self, a, b):
    skips_a, _ = self.encode(a)
    skips_b, x = self.encode(b)
    for level in (4, 3, 2, 1):
      skip = torch.abs(skips_a[level - 1] - skips_b[level - 1])
      x = self.up[f"upconv{level}"](x)
      dh, dw = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
      if dh or dw:  # odd sizes: edge-pad bottom/right to the skip, as jaxcd's pad_to
        x = F.pad(x, (0, dw, 0, dh), mode="replicate")
      x = torch.cat([x, skip], 1)
      for i in range(ENC[level - 1][1], 0, -1):
        x = self.dec[f"conv{level}{i}d"](x)
    return x


def count_params(model: nn.Module) -> int:
  """Trainable parameters (BatchNorm weight and bias included, running statistics are buffers)."""
  return sum(p.numel() for p in model.parameters())
