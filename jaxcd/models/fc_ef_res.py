"""FC-EF-Res (Daudt, Le Saux, Boulch & Gousseau, "Multitask learning for large-scale semantic
change detection", CVIU 2019): the residual early-fusion U-Net the authors' code calls
`FresUNet` (github rcdaudt/fully_convolutional_change_detection, `fresunet.py`; read for facts,
written anew). The Dsfer-Net paper's Table I baseline.

A and B are stacked as one 2C-band input. Widths 8/16/32/64 with a 128-wide bottleneck.
  down block (`ResDown`): conv3x3-BN-ReLU [-> 2x2 max-pool] -> conv3x3-BN, plus a shortcut
      (identity, or 1x1 conv + BN where the width changes, max-pooled alike), then ReLU;
  up block (`ResUp`): transposed conv3x3 stride 2 -> BN-ReLU -> conv3x3-BN, plus a transposed-conv
      + BN shortcut, then ReLU; halves the width.
Encoder: res(2C->8), res(8->16, pool) | res(16), res(16->32, pool) | res(32), res(32->64, pool) |
res(64), res(64->128, pool). Decoder: res(128), up(128->64), [cat 64-skip] res(128->64), up ->
... -> up(16->8), [cat 8-skip] 1x1 conv 16->K. Upsampled maps are edge-padded to the skip size
(odd inputs), as the authors' ReplicationPad2d. The authors end with LogSoftmax; we return the
logits (the cross-entropy's log-softmax makes the two equivalent).
Parameters (3 bands, 2 classes; BatchNorm scale/bias counted): 1,103,874 (paper: 1.10 M).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv, ConvTranspose
from jaxcd.models.layers import batch_norm, max_pool2, pad_to
from jaxcd.models.registry import register

Dtype = Any


def _conv3(features: int, dtype: Dtype, name: str) -> nn.Conv:
  return Conv(features, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype, name=name)


def _convt3(features: int, dtype: Dtype, name: str) -> ConvTranspose:
  # PyTorch ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1): exactly 2x the size.
  return ConvTranspose(features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)), dtype=dtype,
                       name=name)


class ResDown(nn.Module):
  """The authors' `BasicBlock_ss`: residual block, optionally 2x max-pooled in the middle."""
  features: int
  pool: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    dt = self.dtype
    if x_BxHxWxC.shape[-1] != self.features:
      res = batch_norm(train, dt, "bnc")(Conv(self.features, (1, 1), dtype=dt, name="couple")(x_BxHxWxC))
    else:
      res = x_BxHxWxC
    out = nn.relu(batch_norm(train, dt, "bn1")(_conv3(self.features, dt, "conv1")(x_BxHxWxC)))
    if self.pool:
      out, res = max_pool2(out), max_pool2(res)
    out = batch_norm(train, dt, "bn2")(_conv3(self.features, dt, "conv2")(out))
    return nn.relu(out + res)


class ResUp(nn.Module):
  """The authors' `BasicBlock_us`: 2x upsampling residual block halving the width."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    dt, width = self.dtype, x_BxHxWxC.shape[-1] // 2
    res = batch_norm(train, dt, "bnc")(_convt3(width, dt, "couple")(x_BxHxWxC))
    out = nn.relu(batch_norm(train, dt, "bn1")(_convt3(width, dt, "conv1")(x_BxHxWxC)))
    out = batch_norm(train, dt, "bn2")(_conv3(width, dt, "conv2")(out))
    return nn.relu(out + res)


@register("fc_ef_res")
class FCEFRes(nn.Module):
  num_classes: int = 2
  base_width: int = 8
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if a_BxHxWxC.shape != b_BxHxWxC.shape:
      raise ValueError(f"fc_ef_res: image_a {a_BxHxWxC.shape} and image_b {b_BxHxWxC.shape} differ in shape")
    dt = jnp.dtype(self.dtype)
    x = jnp.concatenate([a_BxHxWxC, b_BxHxWxC], axis=-1).astype(dt)
    w = self.base_width
    x = ResDown(w, dtype=dt, name="encres1_1")(x, train)
    skips = [x]
    x = ResDown(2 * w, pool=True, dtype=dt, name="encres1_2")(x, train)
    for level in (2, 3, 4):
      width = x.shape[-1]
      x = ResDown(width, dtype=dt, name=f"encres{level}_1")(x, train)
      skips.append(x)
      x = ResDown(2 * width, pool=True, dtype=dt, name=f"encres{level}_2")(x, train)
    x = ResDown(x.shape[-1], dtype=dt, name="decres4_1")(x, train)
    x = ResUp(dt, name="decres4_2")(x, train)
    for level in (3, 2, 1):
      skip = skips[level]
      x = pad_to(x, skip.shape[1:3])
      width = x.shape[-1]
      x = ResDown(width, dtype=dt, name=f"decres{level}_1")(jnp.concatenate([x, skip], axis=-1), train)
      x = ResUp(dt, name=f"decres{level}_2")(x, train)
    x = pad_to(x, skips[0].shape[1:3])
    logits = Conv(self.num_classes, (1, 1), dtype=dt, name="coupling")(
        jnp.concatenate([x, skips[0]], axis=-1))
    return {"logits": logits.astype(jnp.float32)}
