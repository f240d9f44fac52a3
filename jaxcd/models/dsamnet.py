"""DSAMNet (Shi, Liu et al., TGRS 2022; official code liumency/DSAMNet): a metric-learning siamese
network with CBAM and two deeply supervised (DS) layers.

Shared backbone: the official ResNet-18 variant at output stride 16: a 7x7 stride-1 stem conv
(64), BN, ReLU, 3x3 stride-2 max-pool; layer1-3 of two BasicBlocks (64, 128 s2, 256 s2);
layer4 a multi-grid unit of three BasicBlocks (512, stride 1, first-conv dilations 2, 4, 8; the
second conv is never dilated). Features at 1/2 (layer1), 1/4, 1/8, 1/8.
Decoder per date (shared): each stage 1x1 conv -> 96, BN, ReLU; bilinear (align_corners) to the
layer1 size; concat [layer4, layer1, layer2, layer3] (384); conv3x3 -> 256, BN, ReLU,
Dropout(0.5), conv1x1 -> 64, BN, ReLU. Then a CBAM per date (not shared; ratio 8, kernel 7).
Outputs: 'distance' = ||f_A - f_B + 1e-6|| (torch pairwise_distance) bilinearly upsampled to the
input size, change where > `threshold` (1, official predict.py); 'logits' = [0, distance - 1]
so argmax is that decision; 'ds2' / 'ds3' = DS layers (ConvT3x3 stride 2 / 4 -> 32, BN, ReLU,
Dropout2d(0.2), ConvT3x3 -> classes) on |layer1_A - layer1_B| and |layer2_A - layer2_B|.
Parameters (3 bands, 2 classes; BatchNorm scale/bias counted): 16,950,728; Dsfer-Net Table II:
16.95 M.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import ConvTranspose
from jaxcd.models.dsfernet import resize_bilinear_align_corners
from jaxcd.models.layers import batch_norm
from jaxcd.models.registry import register
from jaxcd.models.resnet import _conv as resnet_conv

_STAGES = ((64, 2, 1), (128, 2, 2), (256, 2, 2))  # (width, blocks, stride) of layer1-3
_MG_DILATIONS = (2, 4, 8)  # layer4: multi-grid (1, 2, 4) x dilation 2 (output stride 16)


def _conv(features: int, kernel: int, dtype: Any, name: str, strides: int = 1,
          dilation: int = 1) -> nn.Conv:
  return resnet_conv(features, kernel, strides, dilation, dtype, name)


class BasicBlock(nn.Module):
  """The official BasicBlock: only conv1 is strided and dilated."""
  features: int
  strides: int = 1
  dilation: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out = _conv(self.features, 3, self.dtype, "conv1", self.strides, self.dilation)(x)
    out = nn.relu(batch_norm(train, self.dtype, "bn1")(out))
    out = batch_norm(train, self.dtype, "bn2")(_conv(self.features, 3, self.dtype, "conv2")(out))
    if self.downsample:
      x = _conv(self.features, 1, self.dtype, "downsample_conv", self.strides)(x)
      x = batch_norm(train, self.dtype, "downsample_bn")(x)
    return nn.relu(out + x)


class Backbone(nn.Module):
  """The ResNet-18 + multi-grid layer4 of the official `build_backbone('resnet18', os)`; the
  defaults are DSAMNet's (output stride 16 after a stride-1 stem); STANet's `define_F` (output
  stride 32) is stem_stride=2, layer4_stride=2, layer4_dilations=(1, 2, 4)."""
  dtype: Any = jnp.float32
  stem_stride: int = 1
  layer4_stride: int = 1
  layer4_dilations: tuple[int, ...] = _MG_DILATIONS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    x = _conv(64, 7, self.dtype, "conv1", self.stem_stride)(x)
    x = nn.relu(batch_norm(train, self.dtype, "bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    feats, c = [], 64
    for s, (width, blocks, stride) in enumerate(_STAGES, start=1):
      for i in range(blocks):
        first = i == 0
        x = BasicBlock(width, stride if first else 1, 1, first and (stride != 1 or c != width),
                       self.dtype, name=f"layer{s}_{i}")(x, train)
      c = width
      feats.append(x)
    for i, d in enumerate(self.layer4_dilations):
      x = BasicBlock(512, self.layer4_stride if i == 0 else 1, d, i == 0, self.dtype,
                     name=f"layer4_{i}")(x, train)
    return feats + [x]  # layer1-4: DSAMNet 1/2, 1/4, 1/8, 1/8; STANet 1/4, 1/8, 1/16, 1/32


class Decoder(nn.Module):
  features: int = 64  # f_c
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feats: list[jax.Array], train: bool) -> jax.Array:
    def dr(name, x):
      x = _conv(96, 1, self.dtype, f"{name}_conv")(x)
      return nn.relu(batch_norm(train, self.dtype, f"{name}_bn")(x))
    l1, l2, l3, l4 = feats
    h, w = l1.shape[1:3]
    up = lambda x: resize_bilinear_align_corners(x, h, w)  # noqa: E731
    x = jnp.concatenate([up(dr("dr5", l4)), dr("dr2", l1), up(dr("dr3", l2)), up(dr("dr4", l3))], -1)
    x = nn.relu(batch_norm(train, self.dtype, "last_bn1")(_conv(256, 3, self.dtype, "last_conv1")(x)))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    x = batch_norm(train, self.dtype, "last_bn2")(_conv(self.features, 1, self.dtype, "last_conv2")(x))
    return nn.relu(x)


class CBAM(nn.Module):
  ratio: int = 8
  kernel: int = 7
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    fc1 = _conv(c // self.ratio, 1, self.dtype, "ca_fc1")
    fc2 = _conv(c, 1, self.dtype, "ca_fc2")
    mlp = lambda v: fc2(nn.relu(fc1(v)))  # noqa: E731
    x = x * nn.sigmoid(mlp(jnp.mean(x, (1, 2), keepdims=True)) + mlp(jnp.max(x, (1, 2), keepdims=True)))
    s = jnp.concatenate([jnp.mean(x, -1, keepdims=True), jnp.max(x, -1, keepdims=True)], -1)
    return x * nn.sigmoid(_conv(1, self.kernel, self.dtype, "sa_conv")(s))


class DSLayer(nn.Module):
  """Official DS_layer: ConvTranspose2d(k3, padding 1, stride s, output_padding s - 1) -> 32,
  BN, ReLU, Dropout2d(0.2), ConvTranspose2d(k3, padding 1) -> classes; both with bias."""
  stride: int
  num_classes: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    # torch (k, s, p, output_padding op) == Flax padding (k - 1 - p, k - 1 - p + op): (1, s).
    s = self.stride
    x = ConvTranspose(32, (3, 3), strides=(s, s), padding=((1, s), (1, s)), dtype=self.dtype,
                      name="dsconv")(x)
    x = nn.relu(batch_norm(train, self.dtype, "bn")(x))
    x = nn.Dropout(0.2, broadcast_dims=(1, 2), deterministic=not train)(x)
    return ConvTranspose(self.num_classes, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                         name="outconv")(x)


def metric_outputs(xa: jax.Array, xb: jax.Array, hw: tuple[int, int],
                   threshold: float) -> dict[str, jax.Array]:
  """The metric head of DSAMNet and STANet: 'distance' = ||xa - xb + 1e-6|| (torch
  pairwise_distance) bilinearly (align_corners) resized to `hw`, and two-class 'logits'
  [0, distance - threshold], whose argmax is the official `distance > threshold` and whose
  softmax change probability is sigmoid(distance - threshold)."""
  diff = (xa - xb).astype(jnp.float32) + 1e-6
  dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1, keepdims=True))
  dist = resize_bilinear_align_corners(dist, *hw)
  logits = jnp.concatenate([jnp.zeros_like(dist), dist - threshold], axis=-1)
  return {"logits": logits, "distance": dist[..., 0]}


@register("dsamnet")
class DSAMNet(nn.Module):
  """Output {'logits', 'distance', 'ds2', 'ds3'} at the input size (see the module docstring)."""
  num_classes: int = 2
  threshold: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    dt = self.dtype
    backbone, decoder = Backbone(dt, name="backbone"), Decoder(64, dt, name="decoder")
    fa, fb = backbone(a.astype(dt), train), backbone(b.astype(dt), train)
    xa = CBAM(8, 7, dt, name="cbam0")(decoder(fa, train))
    xb = CBAM(8, 7, dt, name="cbam1")(decoder(fb, train))
    out = metric_outputs(xa, xb, a.shape[1:3], self.threshold)
    h, w = a.shape[1:3]  # sides not divisible by 4: the DS outputs overshoot; cropped
    ds2 = DSLayer(2, self.num_classes, dt, name="ds_lyr2")(jnp.abs(fa[0] - fb[0]), train)[:, :h, :w]
    ds3 = DSLayer(4, self.num_classes, dt, name="ds_lyr3")(jnp.abs(fa[1] - fb[1]), train)[:, :h, :w]
    return dict(out, ds2=ds2.astype(jnp.float32), ds3=ds3.astype(jnp.float32))
