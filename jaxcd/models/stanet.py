"""STANet (Chen & Shi, Remote Sensing 2020; official code justchenhao/STANet): a metric-learning
siamese network whose spatial-temporal attention spans both dates.

Feature extractor (official `define_F('mynet3')`, shared by the dates): DSAMNet's ResNet-18 with
a multi-grid layer4 of three BasicBlocks (jaxcd.models.dsamnet.Backbone) at output stride 32: a
7x7 stride-2 stem, max-pool, layer1-3 (64, 128 s2, 256 s2), layer4 (512, s2, first-conv
dilations 1, 2, 4); then the same decoder (96-channel 1x1 reductions of the four stages resized
to 1/4, 3x3 conv -> 256, Dropout(0.5), 1x1 conv -> 64).
Attention (official CDSA): the two 64-channel maps side by side along the width (B, H, 2W, 64):
  'pam' (PAM2.py): four blocks at scales 1, 2, 4, 8; each cuts every date into scale x scale
    regions (the last row/column of regions takes the remainder) and attends within the pair of
    co-located regions of both dates (queries and keys: 1x1 conv -> 8 and BatchNorm; values 1x1
    conv -> 64; softmax(q k^T / sqrt(8))); the four contexts are concatenated and fused by a
    1x1 conv (no bias) -> 64. No residual, as in the official code.
  'bam' (BAM.py): one attention over all 2HW positions (q, k: 1x1 conv -> 8, v -> 64) plus the
    input; the official `gamma` is created but never used.
  `ds` > 1 average-pools before attention and repeats (nearest) back after, as the official.
Outputs: 'distance' = ||f_A - f_B + 1e-6|| bilinearly (align_corners) resized to the input,
change where > `threshold` (1, official CDFA_model.py); 'logits' = [0, distance - 1], whose argmax
is that decision (jaxcd.models.dsamnet.metric_outputs).
Parameters (3 bands; BatchNorm scale/bias counted): PAM 16,929,152, BAM 16,897,041 (the official
code measured in torch); Dsfer-Net Table II: 16.93 M (PAM).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv
from jaxcd.models.dsamnet import Backbone, Decoder, metric_outputs
from jaxcd.models.layers import batch_norm
from jaxcd.models.registry import register

_PAM_SCALES = (1, 2, 4, 8)
_normal002 = nn.initializers.normal(0.02)  # the official CDSA `weights_init` for its convs


def _conv1x1(features: int, dtype: Any, name: str, use_bias: bool = True) -> nn.Conv:
  return Conv(features, (1, 1), use_bias=use_bias, kernel_init=_normal002, dtype=dtype, name=name)


def _attend(q_BxTxD: jax.Array, k_BxTxD: jax.Array, v_BxTxE: jax.Array, scale: float) -> jax.Array:
  """Single-head softmax(q k^T * scale) v. `jax.nn.dot_product_attention` wants one head size for
  q, k and v: q and k (8 wide) are zero-padded to the value's 64, which leaves q k^T unchanged."""
  pad = [(0, 0), (0, 0), (0, v_BxTxE.shape[-1] - q_BxTxD.shape[-1])]
  q, k = jnp.pad(q_BxTxD, pad), jnp.pad(k_BxTxD, pad)
  out = jax.nn.dot_product_attention(q[:, :, None], k[:, :, None], v_BxTxE[:, :, None], scale=scale)
  return out[:, :, 0]


def _region_runs(n: int, scale: int) -> list[tuple[int, int, int]]:
  """The official PAM region bounds along one side, as runs (start, stop, count) of equal regions:
  `scale` regions of n // scale, the last taking the remainder. (The official code stacks the
  regions into one batch, so it accepts only sides divisible by the scale; other sides follow
  the same bounds here.)"""
  step = n // scale
  if n % scale == 0:
    return [(0, n, scale)]
  return ([(0, (scale - 1) * step, scale - 1)] if step else []) + [((scale - 1) * step, n, 1)]


def _regional_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: int,
                        temperature: float) -> jax.Array:
  """Attention within co-located regions of both dates. q, k: BxHxWx2xD; v: BxHxWx2xE
  (axis 3 = date). Returns BxHxWx2xE."""
  b, h, w = q.shape[:3]
  rows = []
  for h0, h1, nh in _region_runs(h, scale):
    cols = []
    for w0, w1, nw in _region_runs(w, scale):
      rh, rw = (h1 - h0) // nh, (w1 - w0) // nw

      def blocks(t):  # Bx(nh rh)x(nw rw)x2xD -> (B nh nw)x(rh rw 2)xD
        t = t[:, h0:h1, w0:w1].reshape(b, nh, rh, nw, rw, 2, t.shape[-1])
        return t.transpose(0, 1, 3, 2, 4, 5, 6).reshape(b * nh * nw, rh * rw * 2, t.shape[-1])
      out = _attend(blocks(q), blocks(k), blocks(v), temperature)
      out = out.reshape(b, nh, nw, rh, rw, 2, -1).transpose(0, 1, 3, 2, 4, 5, 6)
      cols.append(out.reshape(b, h1 - h0, w1 - w0, 2, -1))
    rows.append(jnp.concatenate(cols, axis=2))
  return jnp.concatenate(rows, axis=1)


def _pool(x: jax.Array, ds: int) -> jax.Array:
  if ds == 1:
    return x
  if x.shape[1] % ds or x.shape[2] % (2 * ds):
    raise ValueError(f"STANet attention with ds={ds} needs feature sides divisible by ds; got "
                     f"{x.shape[1]}x{x.shape[2] // 2}")
  return nn.avg_pool(x, (ds, ds), strides=(ds, ds))


def _unpool(x: jax.Array, ds: int) -> jax.Array:
  return x if ds == 1 else jnp.repeat(jnp.repeat(x, ds, axis=1), ds, axis=2)  # nearest


class PAMBlock(nn.Module):
  """One scale of the official `_PAMBlock`: BxHx(2W)xC -> BxHx(2W)xvalue_channels."""
  key_channels: int
  value_channels: int
  scale: int
  ds: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHx2WxC: jax.Array, train: bool) -> jax.Array:
    x = _pool(x_BxHx2WxC, self.ds)
    b, h, w2, _ = x.shape
    qk = lambda name: batch_norm(train, self.dtype, f"{name}_bn")(  # noqa: E731
        _conv1x1(self.key_channels, self.dtype, name)(x))
    q, k = qk("f_query"), qk("f_key")
    v = _conv1x1(self.value_channels, self.dtype, "f_value")(x)
    dates = lambda t: t.reshape(b, h, 2, w2 // 2, t.shape[-1]).transpose(0, 1, 3, 2, 4)  # noqa: E731
    out = _regional_attention(dates(q), dates(k), dates(v), self.scale, self.key_channels ** -0.5)
    out = out.transpose(0, 1, 3, 2, 4).reshape(b, h, w2, self.value_channels)
    return _unpool(out, self.ds)


class PAM(nn.Module):
  """The official PAM: PAMBlocks at `scales`, concatenated, 1x1 conv (no bias) -> `features`."""
  features: int = 64
  scales: tuple[int, ...] = _PAM_SCALES
  ds: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHx2WxC: jax.Array, train: bool) -> jax.Array:
    ctx = [PAMBlock(self.features // 8, self.features, s, self.ds, self.dtype, name=f"stage{i}")(
        x_BxHx2WxC, train) for i, s in enumerate(self.scales)]
    return _conv1x1(self.features, self.dtype, "conv_bn", use_bias=False)(jnp.concatenate(ctx, -1))


class BAM(nn.Module):
  """The official BAM: attention over every position of both dates, added to the input."""
  ds: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHx2WxC: jax.Array, train: bool) -> jax.Array:
    del train
    c = x_BxHx2WxC.shape[-1]
    self.param("gamma", nn.initializers.zeros, (1,))  # official, unused: in the count and checkpoints
    x = _pool(x_BxHx2WxC, self.ds)
    b, h, w2, _ = x.shape
    flat = lambda t: t.reshape(b, h * w2, t.shape[-1])  # noqa: E731
    q = flat(_conv1x1(c // 8, self.dtype, "query_conv")(x))
    k = flat(_conv1x1(c // 8, self.dtype, "key_conv")(x))
    v = flat(_conv1x1(c, self.dtype, "value_conv")(x))
    out = _attend(q, k, v, (c // 8) ** -0.5).reshape(b, h, w2, c)
    return _unpool(out, self.ds) + x_BxHx2WxC


@register("stanet")
class STANet(nn.Module):
  """Output {'logits', 'distance'} at the input size (see the module docstring)."""
  num_classes: int = 2
  attention: str = "pam"  # "pam" (STANet-PAM, the paper's) | "bam" (STANet-BAM)
  ds: int = 1  # official --ds: the attention's average-pool factor
  threshold: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if self.num_classes != 2:
      raise ValueError(f"STANet thresholds a distance: num_classes must be 2, not {self.num_classes}")
    if self.attention not in ("pam", "bam"):
      raise ValueError(f"STANet attention must be 'pam' or 'bam', not {self.attention!r}")
    dt = self.dtype
    backbone = Backbone(dt, stem_stride=2, layer4_stride=2, layer4_dilations=(1, 2, 4),
                        name="backbone")
    decoder = Decoder(64, dt, name="decoder")
    fa = decoder(backbone(a.astype(dt), train), train)
    fb = decoder(backbone(b.astype(dt), train), train)
    w = fa.shape[2]
    x = jnp.concatenate([fa, fb], axis=2)  # attention sees both dates at once
    if self.attention == "pam":
      x = PAM(64, _PAM_SCALES, self.ds, dt, name="attention")(x, train)
    else:
      x = BAM(self.ds, dt, name="attention")(x, train)
    return metric_outputs(x[:, :, :w], x[:, :, w:], a.shape[1:3], self.threshold)
