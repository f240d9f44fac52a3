"""The change detection network of RCR (Bandara & Patel, "Revisiting consistency regularization
for semi-supervised change detection", github wgcban/SemiCD) and RCL (github
VCISwang/RC-Change-Detection, the same network without RCR's auxiliary decoders): SemiCD's
`Encoder` (`models/encoder.py`, `models/backbones/`) and `MainDecoder` (`models/decoders.py`);
read for facts, written anew.

Per date (shared weights): a ResNet-50 dilated to output stride 8 (layer3 dilation 2, layer4
dilation 4, torchcv's `deepbase_resnet50_dilated8` without multi-grid), by default with the
"deep" stem (3x3 convs 3->64 s2, 64->64, 64->128, each BN+ReLU; 3x3 max-pool s2) of the CCT /
SemiCD ImageNet weights `3x3resnet50-imagenet.pth`; `stem="standard"` takes torchvision's 7x7
stem, for plain torchvision ResNet-50 weights. diff = |f(A) - f(B)| on layer4 (2048 @ H/8).
PSP head (SemiCD `_PSPModule`, bins 1, 2, 3, 6): per bin an adaptive average pool (torch
`AdaptiveAvgPool2d` bins) -> 1x1 conv 2048->512 (no bias) + BN + ReLU -> bilinear upsample
(align_corners=False); concat with diff (4096) -> 3x3 conv 4096->512 (no bias) + BN + ReLU, no
dropout. Decoder (`MainDecoder`): 3x3 conv 512->32 (no bias) -> ReLU -> bilinear x8 -> 1x1 conv
32->K (no bias). Returns {'logits': BxHxWxK float32, 'features': the PSP output (B x H/8 x W/8
x 512), which RCR's auxiliary decoders perturb}.

`aux_decoders` > 0 adds RCR's auxiliary decoders (`aux_decoders_<i>`, each a `Decoder` like the
main one): parameters only, created at init and never called by `__call__`, so evaluation is the
plain network; `jaxcd.methods.rcr` applies them to perturbed features. 26 (the official count):
50,688,640 parameters (paper Table VII: RCR 50.69 M).

`width` scales every width by width/64: ResNet stages width*(1, 2, 4, 8) (x4 expansion, layer4
32*width), deep stem width, width, 2*width; PSP 8*width per bin and after the bottleneck;
decoder width/2. width=64 is the paper's network: 46,853,120 parameters (3 bands, 2 classes;
BN scale/bias counted; paper Table VII: 46.85 M): encoder 23,631,808 (no fc), PSP 23,073,792,
decoder 147,520; about 73 GMAC per pair at 256x256 (XLA's cost analysis, which skips padding
taps: 69.8). Inputs: any band count, H and W multiples of `output_stride`.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.errors import ConfigError
from jaxcd.models.conv import Conv
from jaxcd.models.layers import batch_norm
from jaxcd.models.registry import register
from jaxcd.models.resnet import ResNet, output_stride

Dtype = Any

# torch's default Conv2d init (kaiming_uniform_, a=sqrt(5)): U(+-1/sqrt(fan_in)); SemiCD's PSP
# module keeps it. Its decoder convs use kaiming_normal_ (fan_in, relu).
torch_default_conv = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
kaiming_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """n_out x n_in averaging matrix of torch's adaptive pooling: bin i covers
  [floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out)), so bins may overlap or repeat."""
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x_BxHxWxC: jax.Array, out_hw: Sequence[int]) -> jax.Array:
  """torch `AdaptiveAvgPool2d(out_hw)` in NHWC, for any input size. float32 pools at HIGHEST
  precision; bf16 sums its bins with 0/1 matrices (exact in bf16) on the matrix units, which
  accumulate in float32 and round each sum once to bf16 (the row sums, then the bins'), then
  divides in float32: the float32 version's cast of the whole feature map and its float32 matmuls
  cost more than the rest of the pyramid, and a float32 result would make the gradient's
  matmuls float32 too."""
  _, h, w, _ = x_BxHxWxC.shape
  dt = x_BxHxWxC.dtype
  mh, mw = adaptive_pool_matrix(h, out_hw[0]), adaptive_pool_matrix(w, out_hw[1])
  if jnp.promote_types(dt, jnp.float32) == dt:
    return jnp.einsum("oh,bhwc,pw->bopc", mh.astype(dt), x_BxHxWxC, mw.astype(dt),
                      precision=jax.lax.Precision.HIGHEST)
  rows = jnp.einsum("oh,bhwc->bowc", (mh > 0).astype(dt), x_BxHxWxC)
  sums = jnp.einsum("bowc,pw->bopc", rows, (mw > 0).astype(dt))
  scale = np.outer(mh.max(axis=1), mw.max(axis=1)).astype(np.float32)  # 1 / bin sizes
  return (sums.astype(jnp.float32) * scale[:, :, None]).astype(dt)


def resize_bilinear(x_BxHxWxC: jax.Array, out_hw: Sequence[int]) -> jax.Array:
  """torch `F.interpolate(mode='bilinear', align_corners=False)` (half-pixel centres, edges
  clamped); without antialiasing, so shrinking (a 6-bin map onto a smaller map) matches too."""
  b, _, _, c = x_BxHxWxC.shape
  return jax.image.resize(x_BxHxWxC, (b, out_hw[0], out_hw[1], c), "bilinear", antialias=False)


class PSPModule(nn.Module):
  """Pyramid pooling (SemiCD `_PSPModule`): C -> C/len(bins) per bin, concat, 3x3 conv to
  C/len(bins)."""
  bins: Sequence[int] = (1, 2, 3, 6)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    _, h, w, c = x_BxHxWxC.shape
    out_c = c // len(self.bins)
    pyramids = [x_BxHxWxC]
    for i, b in enumerate(self.bins):
      p = adaptive_avg_pool(x_BxHxWxC, (b, b))
      p = Conv(out_c, (1, 1), use_bias=False, kernel_init=torch_default_conv, dtype=self.dtype,
               name=f"stage{i}_conv")(p)
      p = nn.relu(batch_norm(train, self.dtype, f"stage{i}_bn")(p))
      pyramids.append(resize_bilinear(p, (h, w)))
    y = Conv(out_c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
             kernel_init=torch_default_conv, dtype=self.dtype,
             name="bottleneck_conv")(jnp.concatenate(pyramids, axis=-1))
    return nn.relu(batch_norm(train, self.dtype, "bottleneck_bn")(y))


class Decoder(nn.Module):
  """SemiCD `MainDecoder`: 3x3 conv -> ReLU -> bilinear upsample to `out_hw` -> 1x1 conv."""
  mid: int = 32
  num_classes: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxhxwxC: jax.Array, out_hw: Sequence[int]) -> jax.Array:
    x = Conv(self.mid, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
             kernel_init=kaiming_fan_in, dtype=self.dtype, name="conv1")(x_BxhxwxC)
    x = resize_bilinear(nn.relu(x), out_hw)
    return Conv(self.num_classes, (1, 1), use_bias=False, kernel_init=kaiming_fan_in,
                dtype=self.dtype, name="conv2")(x)


def aux_decoder(net: "RCRNet", name: str | None = None) -> Decoder:
  """An auxiliary decoder of `net`: inside its `__call__` a named child; outside, unbound, to
  apply to `params["aux_decoders_<i>"]`."""
  return Decoder(net.width // 2, net.num_classes, dtype=net.dtype, name=name)


@register("rcr")
class RCRNet(nn.Module):
  """Siamese dilated ResNet-50 -> |fA - fB| -> PSP -> decoder (see the module docstring)."""
  num_classes: int = 2
  stem: str = "deep"  # "deep" (3x3 convs, CCT/SemiCD weights) | "standard" (torchvision 7x7)
  width: int = 64  # base width; every width scales by width/64 (64: the paper's 46.85 M)
  output_stride: int = 8  # 8 (the paper), 16 or 32
  bins: Sequence[int] = (1, 2, 3, 6)  # PSP pyramid bins
  aux_decoders: int = 0  # RCR's auxiliary decoders (parameters only; see the module docstring)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if a_BxHxWxC.shape != b_BxHxWxC.shape:
      raise ValueError(f"rcr: image_a {a_BxHxWxC.shape} and image_b {b_BxHxWxC.shape} differ in shape")
    if self.stem not in ("deep", "standard"):
      raise ConfigError(f"config.model.stem must be 'deep' or 'standard', got {self.stem!r}")
    if self.width < 2 or self.width % 2:
      raise ConfigError(f"config.model.width must be an even number >= 2, got {self.width}")
    if self.output_stride not in (8, 16, 32):
      raise ConfigError(f"config.model.output_stride must be 8, 16 or 32, got {self.output_stride}")
    n, h, w, _ = a_BxHxWxC.shape
    if h % self.output_stride or w % self.output_stride:
      raise ValueError(f"rcr: input {h}x{w} is not a multiple of {self.output_stride}")
    dt = jnp.dtype(self.dtype)
    backbone = ResNet(stage_sizes=(3, 4, 6, 3), block="bottleneck", deep_stem=self.stem == "deep",
                      width=self.width, dtype=dt, name="backbone",
                      **output_stride(self.output_stride))
    # One call per date, as the official code: in training each date's BatchNorm uses its own
    # batch statistics (one stacked call would pool them).
    diff = jnp.abs(backbone(a_BxHxWxC, train)[-1] - backbone(b_BxHxWxC, train)[-1])
    features = PSPModule(tuple(self.bins), dtype=dt, name="psp")(diff, train)
    logits = Decoder(self.width // 2, self.num_classes, dtype=dt, name="decoder")(features, (h, w))
    if self.is_initializing():
      for i in range(self.aux_decoders):
        aux_decoder(self, f"aux_decoders_{i}")(features, (h, w))
    return {"logits": logits.astype(jnp.float32), "features": features}

