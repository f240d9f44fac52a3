"""ResNet trunks (He et al. 2016) with torchvision's layout and names, NHWC.

One module serves every variant the methods need:
  - `block="basic"` (ResNet-18/34) or `"bottleneck"` (ResNet-50/101, stride on the 3x3 conv as
    torchvision "v1.5");
  - per-stage `strides` and `dilations` with torchvision's `replace_stride_with_dilation`
    semantics: the first block of a stage keeps the previous stage's dilation, the others use the
    stage's own (`output_stride(8)` -> strides (1, 2, 1, 1), dilations (1, 1, 2, 4));
  - `deep_stem`: three 3x3 convs 3->64 (stride 2), 64->64, 64->128 instead of the 7x7 conv (the
    PSPNet/SemiCD ResNet-50 of RCL);
  - `num_stages < 4` truncates the trunk (BiT stops after stage 3, "layer3");
  - `width`: the stem and stage widths scale by `width / 64` (stage widths width*(1, 2, 4, 8),
    deep stem width, width, 2*width), for reduced CPU configs; 64 is the standard ResNet.

Submodule names follow torchvision's state dict (`layer2.0.downsample.0.weight` ->
`layer2_0/downsample_conv/kernel`), so `jaxcd.weights` maps ImageNet weights with a table.
ResNet-18 up to stage 4 (no fc): 11,176,512 parameters.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv
from jaxcd.models.layers import batch_norm

Dtype = Any

# torchvision's ResNet init: kaiming_normal_(mode='fan_out', nonlinearity='relu').
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, strides: int = 1, dilation: int = 1, dtype: Dtype = jnp.float32,
          name: str | None = None) -> nn.Conv:
  pad = dilation * (kernel - 1) // 2  # "same" for odd kernels, as torchvision's padding=dilation
  return Conv(features, (kernel, kernel), strides=strides, padding=((pad, pad), (pad, pad)),
              kernel_dilation=dilation, use_bias=False, kernel_init=kaiming_fan_out,
              dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """3x3 -> 3x3 residual block (expansion 1)."""
  features: int
  strides: int = 1
  dilation: int = 1
  dtype: Dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    out = _conv(self.features, 3, self.strides, self.dilation, self.dtype, "conv1")(x_BxHxWxC)
    out = nn.relu(batch_norm(train, self.dtype, "bn1")(out))
    out = _conv(self.features, 3, 1, self.dilation, self.dtype, "conv2")(out)
    out = batch_norm(train, self.dtype, "bn2")(out)
    return nn.relu(out + _shortcut(self, x_BxHxWxC, self.features, train))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride, dilation) -> 1x1 x4 residual block."""
  features: int
  strides: int = 1
  dilation: int = 1
  dtype: Dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    out = _conv(self.features, 1, dtype=self.dtype, name="conv1")(x_BxHxWxC)
    out = nn.relu(batch_norm(train, self.dtype, "bn1")(out))
    out = _conv(self.features, 3, self.strides, self.dilation, self.dtype, "conv2")(out)
    out = nn.relu(batch_norm(train, self.dtype, "bn2")(out))
    out = _conv(4 * self.features, 1, dtype=self.dtype, name="conv3")(out)
    out = batch_norm(train, self.dtype, "bn3")(out)
    return nn.relu(out + _shortcut(self, x_BxHxWxC, 4 * self.features, train))


def _shortcut(block: nn.Module, x_BxHxWxC: jax.Array, width: int, train: bool) -> jax.Array:
  # A 1x1 projection only where the shape changes, as torchvision's `downsample`.
  if block.strides == 1 and x_BxHxWxC.shape[-1] == width:
    return x_BxHxWxC
  x = _conv(width, 1, block.strides, dtype=block.dtype, name="downsample_conv")(x_BxHxWxC)
  return batch_norm(train, block.dtype, "downsample_bn")(x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
STAGE_WIDTHS = (64, 128, 256, 512)


def output_stride(os_: int) -> dict[str, tuple[int, ...]]:
  """`strides`/`dilations` giving an output stride of 32, 16 or 8 (dilated, DeepLab/PSPNet)."""
  table = {32: ((1, 2, 2, 2), (1, 1, 1, 1)), 16: ((1, 2, 2, 1), (1, 1, 1, 2)),
           8: ((1, 2, 1, 1), (1, 1, 2, 4))}
  if os_ not in table:
    raise ValueError(f"output stride must be 32, 16 or 8, got {os_}")
  strides, dilations = table[os_]
  return {"strides": strides, "dilations": dilations}


class ResNet(nn.Module):
  """Stem + `num_stages` residual stages; returns the output of every stage (layer1, layer2, ...)."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)  # blocks per stage (ResNet-18; ResNet-50: 3, 4, 6, 3)
  block: str = "basic"  # "basic" | "bottleneck"
  strides: Sequence[int] = (1, 2, 2, 2)  # first-block stride per stage
  dilations: Sequence[int] = (1, 1, 1, 1)  # per stage (see the module docstring)
  deep_stem: bool = False
  width: int = 64  # base width; 64 is torchvision's (see the module docstring)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    n = len(self.stage_sizes)
    if not (len(self.strides) >= n and len(self.dilations) >= n):
      raise ValueError(f"resnet: {n} stages need {n} strides and dilations")
    if self.width <= 0:
      raise ValueError(f"resnet: width must be positive, got {self.width}")
    block_cls = BLOCKS[self.block]
    w = self.width
    x = x_BxHxWxC.astype(self.dtype)
    if self.deep_stem:
      for i, (width, s) in enumerate(((w, 2), (w, 1), (2 * w, 1)), start=1):
        x = _conv(width, 3, s, dtype=self.dtype, name=f"conv{i}")(x)
        x = nn.relu(batch_norm(train, self.dtype, f"bn{i}")(x))
    else:
      x = _conv(w, 7, 2, dtype=self.dtype, name="conv1")(x)
      x = nn.relu(batch_norm(train, self.dtype, "bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    outs = []
    prev_dilation = 1
    for s, blocks in enumerate(self.stage_sizes):
      for i in range(blocks):
        x = block_cls(STAGE_WIDTHS[s] * w // 64, strides=self.strides[s] if i == 0 else 1,
                      dilation=prev_dilation if i == 0 else self.dilations[s], dtype=self.dtype,
                      name=f"layer{s + 1}_{i}")(x, train)
      prev_dilation = self.dilations[s]
      outs.append(x)
    return tuple(outs)
