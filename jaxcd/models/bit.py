"""BiT: Bitemporal image Transformer (Chen, Qi & Shi, TGRS 2021), as the Dsfer-Net paper's Table I
baseline: the official `BASE_Transformer(token_len=4, resnet_stages_num=4, with_pos='learned',
enc_depth=1, dec_depth=8)` ("base_transformer_pos_s4_dd8", github justchenhao/BIT_CD
`models/networks.py`, `models/help_funcs.py`; read for facts, written anew).

Per date (shared weights): ResNet-18 stem, layer1, layer2, layer3 with layer3's stride replaced
by 1 (BIT_CD's ResNet ignores the dilation its BasicBlock is asked for, so none is applied) ->
256@H/8 -> nearest x2 -> 3x3 conv 256->32 (the features X, H/4). Semantic tokenizer: a 1x1 conv
32->L (no bias), softmax over positions, tokens = attention-weighted sums of X (L x 32).
The 2L tokens of both dates + a learned position embedding go through a pre-norm transformer
encoder (depth 1, 8 heads of 64, MLP 64, GELU); each date's X (as H/4*W/4 queries) then attends to
its own L tokens in a pre-norm transformer decoder (depth 8, same widths; one LayerNorm for
queries and tokens). |X_A - X_B| -> bilinear x4 -> 3x3 conv (no bias) + BN + ReLU -> 3x3 conv
32->K. Attention scale dim**-0.5 with dim = 32 (not the head width), as in the official code.

Parameters: 3,495,778 (2,782,784 in the truncated ResNet-18, 712,994 in the rest; this equals
the official module's used parameters). The official module also registers torchvision's unused
layer4 (8,393,728) and fc (513,000): 12,402,506 in `parameters()`. The Dsfer-Net paper's Table II
lists 11.94 M, a figure neither count gives (layer4 without fc would give 11,889,506).
Inputs: H and W multiples of 8.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv
from jaxcd.models.layers import batch_norm, pair, softmax_attention, unpair
from jaxcd.models.registry import register
from jaxcd.models.resnet import ResNet

Dtype = Any


def resnet18_trunk(dtype: Dtype = jnp.float32, name: str = "backbone") -> ResNet:
  """BiT's ResNet-18 up to layer3, layer3 at stride 1 without dilation (output stride 8)."""
  return ResNet(stage_sizes=(2, 2, 2), strides=(1, 2, 1), dilations=(1, 1, 1), dtype=dtype, name=name)


def token_features(a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array, dim: int, dtype: Dtype, train: bool,
                   model: str) -> jax.Array:
  """BiT's front end, shared with VcT: per-date ResNet-18 trunk (stride 8), nearest x2
  upsampling and a 3x3 `conv_pred` to `dim` channels; dates stacked on the batch axis (2B).

  Called inside a compact `__call__`, so its layers are the caller's (`backbone`, `conv_pred`).
  The trunk runs once per date, as the official code: in training, BatchNorm then normalises each
  date with its own batch statistics (one stacked call would pool them)."""
  if a_BxHxWxC.shape != b_BxHxWxC.shape:
    raise ValueError(f"{model}: image_a {a_BxHxWxC.shape} and image_b {b_BxHxWxC.shape} differ in shape")
  _, h, w, _ = a_BxHxWxC.shape
  if h % 8 or w % 8:
    raise ValueError(f"{model}: input {h}x{w} is not a multiple of 8")
  trunk = resnet18_trunk(dtype)
  f = pair(trunk(a_BxHxWxC, train)[-1], trunk(b_BxHxWxC, train)[-1])
  f = jnp.repeat(jnp.repeat(f, 2, axis=1), 2, axis=2)  # nn.Upsample(scale_factor=2): nearest
  return Conv(dim, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype, name="conv_pred")(f)


class Attention(nn.Module):
  """Multi-head softmax attention of `x` (queries) over `m` (keys/values), output projection."""
  dim: int
  heads: int
  dim_head: int
  fused_qkv: bool  # self-attention has one `to_qkv` projection in the official code
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array, m_BxMxD: jax.Array) -> jax.Array:
    inner = self.heads * self.dim_head
    dense = lambda f, name, bias=False: nn.Dense(f, use_bias=bias, dtype=self.dtype, name=name)
    if self.fused_qkv:
      q, k, v = jnp.split(dense(3 * inner, "to_qkv")(x_BxNxD), 3, axis=-1)
    else:
      q, k, v = dense(inner, "to_q")(x_BxNxD), dense(inner, "to_k")(m_BxMxD), dense(inner, "to_v")(m_BxMxD)
    heads = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, self.dim_head)  # B,T,N,H
    out = softmax_attention(heads(q), heads(k), heads(v), self.dim ** -0.5)
    return dense(self.dim, "to_out", bias=True)(out.reshape(out.shape[0], out.shape[1], inner))


class FeedForward(nn.Module):
  dim: int
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array) -> jax.Array:
    x = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x_BxNxD)
    x = nn.gelu(x, approximate=False)  # torch nn.GELU() is the exact (erf) form
    return nn.Dense(self.dim, dtype=self.dtype, name="fc2")(x)


def _ln(dtype: Dtype, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=1e-5, dtype=dtype, name=name)


class TransformerLayer(nn.Module):
  """Pre-norm residual attention + MLP. Self-attention when `memory` is None (encoder), else
  cross-attention of x over memory with one LayerNorm applied to both (the official decoder)."""
  dim: int
  heads: int
  dim_head: int
  mlp_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array, memory_BxMxD: jax.Array | None = None) -> jax.Array:
    norm = _ln(self.dtype, "attn_norm")
    attn = Attention(self.dim, self.heads, self.dim_head, fused_qkv=memory_BxMxD is None,
                     dtype=self.dtype, name="attn")
    xn = norm(x_BxNxD)
    x = x_BxNxD + attn(xn, xn if memory_BxMxD is None else norm(memory_BxMxD))
    return x + FeedForward(self.dim, self.mlp_dim, self.dtype, name="ff")(_ln(self.dtype, "ff_norm")(x))


@register("bit")
class BiT(nn.Module):
  """BiT, base_transformer_pos_s4_dd8 by default."""
  num_classes: int = 2
  token_len: int = 4
  enc_depth: int = 1
  dec_depth: int = 8
  dim: int = 32
  heads: int = 8
  dim_head: int = 64
  decoder_dim_head: int = 64  # the official "dedim8" variant uses 8
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    n, h, w, _ = a_BxHxWxC.shape
    dt = jnp.dtype(self.dtype)
    x_2BxhxwxD = token_features(a_BxHxWxC, b_BxHxWxC, self.dim, dt, train, "bit")
    _, hh, ww, d = x_2BxhxwxD.shape
    x_2BxNxD = x_2BxhxwxD.reshape(2 * n, hh * ww, d)

    # Semantic tokenizer: L spatial attention maps, softmax over the N positions.
    att_2BxNxL = Conv(self.token_len, (1, 1), use_bias=False, dtype=dt, name="conv_a")(x_2BxhxwxD)
    att_2BxNxL = jax.nn.softmax(att_2BxNxL.reshape(2 * n, hh * ww, self.token_len).astype(jnp.float32), axis=1)
    tok_2BxLxD = jnp.einsum("bnl,bnd->bld", att_2BxNxL.astype(dt), x_2BxNxD)

    # Encoder over the 2L tokens of a pair: [tokens_A, tokens_B].
    pos = self.param("pos_embedding", nn.initializers.normal(1.0), (1, 2 * self.token_len, d))
    t = jnp.concatenate(unpair(tok_2BxLxD), axis=1) + pos.astype(dt)
    for i in range(self.enc_depth):
      t = TransformerLayer(d, self.heads, self.dim_head, 2 * d, dt, name=f"encoder_{i}")(t)
    t_2BxLxD = pair(t[:, :self.token_len], t[:, self.token_len:])

    # Decoder: each date's pixels query its own refined tokens.
    y = x_2BxNxD
    for i in range(self.dec_depth):
      y = TransformerLayer(d, self.heads, self.decoder_dim_head, 2 * d, dt, name=f"decoder_{i}")(y, t_2BxLxD)
    y = y.reshape(2 * n, hh, ww, d)
    diff = jnp.abs(jnp.subtract(*unpair(y)))
    diff = jax.image.resize(diff, (n, h, w, d), "bilinear")  # align_corners=False, like torch
    z = Conv(d, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=dt, name="classifier_conv1")(diff)
    z = nn.relu(batch_norm(train, dt, "classifier_bn")(z))
    logits = Conv(self.num_classes, (3, 3), padding=((1, 1), (1, 1)), dtype=dt, name="classifier_conv2")(z)
    return {"logits": logits.astype(jnp.float32)}
