"""CDCluster's fixed and attention layers: a frozen Sobel filter, CBAM (Woo et al., ECCV 2018)."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv
from jaxcd.models.layers import batch_norm

Dtype = Any


class Sobel(nn.Module):
  """Frozen Sobel edges of the grey image (mean over bands), as extra input channels.

  mode="magnitude": one channel sqrt(gx^2 + gy^2); mode="gradients": two channels (gx, gy), as
  DeepCluster's frozen 3x3 filters. gx = right - left, gy = bottom - top (unnormalised Sobel
  kernels, so a unit step gives 4). Borders are edge-padded: the image frame is no edge.
  No parameters; gradients never flow through it.
  """
  mode: str = "magnitude"

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    if self.mode not in ("magnitude", "gradients"):
      raise ValueError(f"Sobel mode must be 'magnitude' or 'gradients', not {self.mode!r}")
    g = jnp.mean(x_BxHxWxC.astype(jnp.float32), axis=-1)
    p = jnp.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = g.shape[1:]
    # [1, 2, 1]-smoothed column j (of the padded image) and row i: Sobel = difference of two.
    col = lambda j: p[:, :-2, j:j + w] + 2 * p[:, 1:-1, j:j + w] + p[:, 2:, j:j + w]
    row = lambda i: p[:, i:i + h, :-2] + 2 * p[:, i:i + h, 1:-1] + p[:, i:i + h, 2:]
    gx, gy = col(2) - col(0), row(2) - row(0)
    if self.mode == "magnitude":
      out = jnp.sqrt(gx * gx + gy * gy)[..., None]
    else:
      out = jnp.stack([gx, gy], axis=-1)
    return jax.lax.stop_gradient(out).astype(x_BxHxWxC.dtype)


class ChannelGate(nn.Module):
  """sigmoid(MLP(avgpool x) + MLP(maxpool x)) per channel, MLP C -> C/r -> C (shared)."""
  reduction: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    c = x_BxHxWxC.shape[-1]
    hidden = nn.Dense(max(1, c // self.reduction), dtype=self.dtype, name="fc1")
    out = nn.Dense(c, dtype=self.dtype, name="fc2")
    mlp = lambda v: out(nn.relu(hidden(v)))
    avg_BxC = jnp.mean(x_BxHxWxC, axis=(1, 2))
    max_BxC = jnp.max(x_BxHxWxC, axis=(1, 2))
    return nn.sigmoid(mlp(avg_BxC) + mlp(max_BxC))[:, None, None, :]


class SpatialGate(nn.Module):
  """sigmoid(BN(conv7x7([max_c x, mean_c x]))) per pixel (no conv bias, as in CBAM)."""
  kernel: int = 7
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    pooled = jnp.concatenate([jnp.max(x_BxHxWxC, axis=-1, keepdims=True),
                              jnp.mean(x_BxHxWxC, axis=-1, keepdims=True)], axis=-1)
    pad = self.kernel // 2
    s = Conv(1, (self.kernel, self.kernel), padding=((pad, pad), (pad, pad)), use_bias=False,
             dtype=self.dtype, name="conv")(pooled)
    return nn.sigmoid(batch_norm(train, self.dtype, name="bn")(s))


class CBAM(nn.Module):
  """Convolutional Block Attention Module: channel gate, then spatial gate, both multiplicative."""
  reduction: int = 16
  kernel: int = 7
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    x = x_BxHxWxC * ChannelGate(self.reduction, self.dtype, name="channel")(x_BxHxWxC)
    return x * SpatialGate(self.kernel, self.dtype, name="spatial")(x, train)
