"""SNUNet-CD with ECAM (Fang, Li, Shi et al., IEEE GRSL 2022; official code likuan6/SNUNet-CD).

A siamese UNet++: one shared 5-level encoder (widths w, 2w, 4w, 8w, 16w; w = `width`, 32 in the
official code, "SNUNet-CD/32") and densely nested decoder nodes X^{i,j} that see both dates'
encoder features, every earlier node of their level and the 2x2-stride-2 transposed-conv
upsampling of the node below. As in the official forward, upsampled encoder features come from
date B only (date A's bottleneck is never computed). Every node is `NestedBlock`: conv3x3 ->
BN -> ReLU -> conv3x3 -> BN, plus the first conv's output, -> ReLU.
ECAM fuses the four full-resolution outputs X^{0,1..4}: channel attention (avg- and max-pooled,
shared bias-free 1x1 MLP, sigmoid) of their concatenation (ratio 16) times (the concatenation +
the channel attention of their sum (ratio 4), tiled 4x), then a 1x1 conv to the classes.
Parameters (3 bands, 2 classes, BatchNorm scale/bias counted): width 32: 12,034,978; width 16:
3,012,178 (the paper: SNUNet-CD/32 12.03 M, /16 3.01 M).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv, ConvTranspose
from jaxcd.models.layers import batch_norm, max_pool2, pad_to
from jaxcd.models.registry import register

# The official convs use kaiming_normal_(mode="fan_out", nonlinearity="relu").
_KAIMING_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, dtype: Any, name: str, use_bias: bool = True) -> nn.Conv:
  pad = (kernel - 1) // 2
  return Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)), use_bias=use_bias,
              kernel_init=_KAIMING_OUT, dtype=dtype, name=name)


class NestedBlock(nn.Module):
  """Official `conv_block_nested`: the residual is the first conv's output, before its BN."""
  mid: int
  out: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = _conv(self.mid, 3, self.dtype, "conv1")(x)
    identity = x
    x = nn.relu(batch_norm(train, self.dtype, "bn1")(x))
    x = batch_norm(train, self.dtype, "bn2")(_conv(self.out, 3, self.dtype, "conv2")(x))
    return nn.relu(x + identity)


class ChannelAttention(nn.Module):
  """sigmoid(MLP(avgpool x) + MLP(maxpool x)), a shared bias-free 1x1 MLP C -> C/ratio -> C."""
  ratio: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    c = x_BxHxWxC.shape[-1]
    fc1 = _conv(c // self.ratio, 1, self.dtype, "fc1", use_bias=False)
    fc2 = _conv(c, 1, self.dtype, "fc2", use_bias=False)
    mlp = lambda v: fc2(nn.relu(fc1(v)))  # noqa: E731
    avg = jnp.mean(x_BxHxWxC, axis=(1, 2), keepdims=True)
    mx = jnp.max(x_BxHxWxC, axis=(1, 2), keepdims=True)
    return nn.sigmoid(mlp(avg) + mlp(mx))  # Bx1x1xC


@register("snunet")
class SNUNet(nn.Module):
  """SNUNet-CD/`width` with ECAM; output {'logits'} at the input size."""
  num_classes: int = 2
  width: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    dt = self.dtype
    f = [self.width * 2 ** i for i in range(5)]
    enc = [NestedBlock(f[i], f[i], dt, name=f"conv{i}_0") for i in range(5)]

    def encode(x, levels):
      feats = [enc[0](x, train)]
      for i in range(1, levels):
        feats.append(enc[i](max_pool2(feats[-1]), train))
      return feats

    xa = encode(a.astype(dt), 4)  # the official forward never computes date A's level 4
    xb = encode(b.astype(dt), 5)

    def up(name, x, skip):  # official `up`: ConvTranspose2d(C, C, 2, stride=2)
      x = ConvTranspose(x.shape[-1], (2, 2), strides=(2, 2), padding="VALID", dtype=dt,
                        name=name)(x)
      return pad_to(x, skip.shape[1:3])

    # node[i][j] = X^{i,j}; X^{i,0} of the two dates both enter every node of level i.
    node = {i: [] for i in range(4)}
    for d in range(1, 5):  # one anti-diagonal i + j = d of the UNet++ grid at a time
      for i in reversed(range(d)):
        j = d - i
        below = xb[i + 1] if j == 1 else node[i + 1][j - 2]
        upname = f"Up{i + 1}_{j - 1}"
        x = jnp.concatenate([xa[i], xb[i], *node[i], up(upname, below, xa[i])], axis=-1)
        node[i].append(NestedBlock(f[i], f[i], dt, name=f"conv{i}_{j}")(x, train))

    outs = node[0]  # X^{0,1..4}
    out = jnp.concatenate(outs, axis=-1)
    intra = ChannelAttention(4, dt, name="ca1")(sum(outs))
    out = ChannelAttention(16, dt, name="ca")(out) * (out + jnp.tile(intra, (1, 1, 1, 4)))
    logits = Conv(self.num_classes, (1, 1), kernel_init=_KAIMING_OUT, dtype=dt,
                  name="conv_final")(out)
    return {"logits": logits.astype(jnp.float32)}
