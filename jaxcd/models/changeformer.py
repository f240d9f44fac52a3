"""ChangeFormer V6 (Bandara & Patel, IGARSS 2022; official code wgcban/ChangeFormer,
`models/ChangeFormer.py`: ChangeFormerV6 = EncoderTransformer_v3 + DecoderTransformer_v3).

Shared (siamese) hierarchical transformer encoder, SegFormer-like, four stages of widths
`embed_dims` (64, 128, 320, 512), depths (3, 3, 4, 3), heads (1, 2, 4, 8):
- overlapping patch embedding: conv 7x7 stride 4 (stage 1), then 7x7 stride 2 (stages 2-4; V6
  passes patch_size 7 to all of them), padding 3, LayerNorm (eps 1e-5);
- blocks x + DropPath(attn(LN x)), x + DropPath(MixFFN(LN x)) (LN eps 1e-6). Attention is
  efficient self-attention: keys/values from a spatially reduced map (conv k = stride = sr_ratio
  8/4/2/1, then LayerNorm eps 1e-5); Mix-FFN = fc (4x) -> depthwise 3x3 conv -> GELU -> fc;
- a LayerNorm (eps 1e-6) after each stage: features at 1/4, 1/8, 1/16, 1/32.
Official regularisation: dropout 0.1 (attention probabilities, projections, Mix-FFN),
stochastic depth linearly 0 -> 0.1 over the 13 blocks, all active only with train=True (rng
collection 'dropout').
Decoder (`embed_dim` E = 256): per scale a linear projection to E of each date, concat, the
difference module (conv3x3 2E->E, ReLU, BN, conv3x3, ReLU) plus the bilinearly upsampled
difference of the scale below; a prediction head per scale (conv3x3 E->K, ReLU, BN, conv3x3)
gives the deep-supervision outputs 'p_c4' (1/32), 'p_c3', 'p_c2', 'p_c1' (1/4). The four
differences, upsampled to 1/4, are fused (conv1x1 4E->E, BN), then two x2 steps (transposed
conv k4 s2, residual block conv-ReLU-conv x 0.1) and conv3x3 -> K give 'logits' at full size.
Parameters (3 bands, 2 classes, BatchNorm scale/bias counted): 41,026,674 (tests pin it).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.models.conv import Conv, ConvTranspose
from jaxcd.models.layers import batch_norm, pair, softmax_attention, unpair
from jaxcd.models.rcr import resize_bilinear
from jaxcd.models.registry import register

Dtype = Any

# Official inits: encoder Linear trunc_normal(std .02) (timm's bounds are +-2, i.e. untruncated
# at this std), encoder convs normal(0, sqrt(2 / fan_out)); decoder convs torch's default
# kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)). Biases start at zero.
_LINEAR_INIT = nn.initializers.normal(0.02)
_ENC_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_DEC_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _dense(features: int, dtype: Dtype, name: str) -> nn.Dense:
  return nn.Dense(features, kernel_init=_LINEAR_INIT, dtype=dtype, name=name)


def _conv(features: int, kernel: int, dtype: Dtype, name: str, strides: int = 1,
          pad: int | None = None, init=_DEC_CONV_INIT) -> nn.Conv:
  p = kernel // 2 if pad is None else pad
  return Conv(features, (kernel, kernel), strides=strides, padding=((p, p), (p, p)),
              kernel_init=init, dtype=dtype, name=name)


class OverlapPatchEmbed(nn.Module):
  features: int
  kernel: int
  strides: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    x = _conv(self.features, self.kernel, self.dtype, "proj", self.strides, init=_ENC_CONV_INIT)(x_BxHxWxC)
    return nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)


class EfficientSelfAttention(nn.Module):
  """Multi-head attention whose keys and values come from the map reduced by `sr_ratio`.

  `softmax_attention` has no dropout of the attention probabilities, so training with
  `attn_drop` > 0 (the official 0.1) takes the explicit softmax path; both compute the same.
  """
  dim: int
  num_heads: int
  sr_ratio: int
  attn_drop: float = 0.0
  proj_drop: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxD: jax.Array, train: bool) -> jax.Array:
    b, h, w, d = x_BxHxWxD.shape
    heads, e = self.num_heads, self.dim // self.num_heads
    q_BxNxHxE = _dense(d, self.dtype, "q")(x_BxHxWxD).reshape(b, h * w, heads, e)
    m = x_BxHxWxD
    if self.sr_ratio > 1:
      m = _conv(d, self.sr_ratio, self.dtype, "sr", self.sr_ratio, pad=0, init=_ENC_CONV_INIT)(m)
      m = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(m)
    kv = _dense(2 * d, self.dtype, "kv")(m.reshape(b, -1, d)).reshape(b, -1, 2, heads, e)
    k_BxMxHxE, v_BxMxHxE = kv[:, :, 0], kv[:, :, 1]
    scale = e ** -0.5
    if train and self.attn_drop > 0:
      s = jnp.einsum("bnhe,bmhe->bhnm", q_BxNxHxE, k_BxMxHxE).astype(jnp.float32) * scale
      p = nn.Dropout(self.attn_drop, deterministic=False)(jax.nn.softmax(s, axis=-1))
      out = jnp.einsum("bhnm,bmhe->bnhe", p.astype(self.dtype), v_BxMxHxE)
    else:
      out = softmax_attention(q_BxNxHxE, k_BxMxHxE, v_BxMxHxE, scale)
    out = _dense(d, self.dtype, "proj")(out.reshape(b, h, w, d))
    return nn.Dropout(self.proj_drop, deterministic=not train)(out)


class MixFFN(nn.Module):
  """fc -> depthwise 3x3 conv (the positional cue) -> GELU -> fc, dropout after each."""
  dim: int
  hidden: int
  drop: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxD: jax.Array, train: bool) -> jax.Array:
    x = _dense(self.hidden, self.dtype, "fc1")(x_BxHxWxD)
    x = Conv(self.hidden, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=self.hidden,
             kernel_init=nn.initializers.normal(np.sqrt(2.0 / 9.0)), dtype=self.dtype,
             name="dwconv")(x)  # torch's fan_out of a depthwise conv: 9
    x = nn.Dropout(self.drop, deterministic=not train)(nn.gelu(x, approximate=False))
    x = _dense(self.dim, self.dtype, "fc2")(x)
    return nn.Dropout(self.drop, deterministic=not train)(x)


class Block(nn.Module):
  dim: int
  num_heads: int
  sr_ratio: int
  mlp_ratio: int = 4
  drop: float = 0.0
  attn_drop: float = 0.0
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxD: jax.Array, train: bool) -> jax.Array:
    # Stochastic depth: the whole residual branch of a sample is dropped (timm DropPath).
    drop_path = nn.Dropout(self.drop_path, broadcast_dims=(1, 2, 3), deterministic=not train)
    ln = lambda name: nn.LayerNorm(1e-6, dtype=self.dtype, name=name)  # noqa: E731
    y = EfficientSelfAttention(self.dim, self.num_heads, self.sr_ratio, self.attn_drop, self.drop,
                               self.dtype, name="attn")(ln("norm1")(x_BxHxWxD), train)
    x = x_BxHxWxD + drop_path(y)
    y = MixFFN(self.dim, self.mlp_ratio * self.dim, self.drop, self.dtype, name="mlp")(ln("norm2")(x), train)
    return x + drop_path(y)


class Encoder(nn.Module):
  """EncoderTransformer_v3 as ChangeFormerV6 builds it; features at 1/4, 1/8, 1/16, 1/32."""
  embed_dims: Sequence[int] = (64, 128, 320, 512)
  depths: Sequence[int] = (3, 3, 4, 3)
  num_heads: Sequence[int] = (1, 2, 4, 8)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  mlp_ratio: int = 4
  drop_rate: float = 0.1
  attn_drop_rate: float = 0.1
  drop_path_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> list[jax.Array]:
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))  # official torch.linspace
    feats, x, cur = [], x_BxHxWxC, 0
    for s, (dim, depth) in enumerate(zip(self.embed_dims, self.depths), start=1):
      x = OverlapPatchEmbed(dim, 7, 4 if s == 1 else 2, self.dtype, name=f"patch_embed{s}")(x)
      for i in range(depth):
        x = Block(dim, self.num_heads[s - 1], self.sr_ratios[s - 1], self.mlp_ratio,
                  self.drop_rate, self.attn_drop_rate, float(rates[cur + i]), self.dtype,
                  name=f"block{s}_{i}")(x, train)
      cur += depth
      x = nn.LayerNorm(1e-6, dtype=self.dtype, name=f"norm{s}")(x)
      feats.append(x)
    return feats


class ConvHead(nn.Module):
  """conv3x3 -> ReLU -> BN -> conv3x3 [-> ReLU]: the official `conv_diff` (final ReLU) and
  `make_prediction` (none)."""
  mid: int
  out: int
  final_relu: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = batch_norm(train, self.dtype, "bn")(nn.relu(_conv(self.mid, 3, self.dtype, "conv1")(x)))
    x = _conv(self.out, 3, self.dtype, "conv2")(x)
    return nn.relu(x) if self.final_relu else x


class ResidualBlock(nn.Module):
  """x + 0.1 * conv3x3(ReLU(conv3x3 x)) (the official ResidualBlock)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    y = _conv(c, 3, self.dtype, "conv2")(nn.relu(_conv(c, 3, self.dtype, "conv1")(x)))
    return x + 0.1 * y


class Decoder(nn.Module):
  """DecoderTransformer_v3: returns [p_c4, p_c3, p_c2, p_c1, logits] (coarse to full size)."""
  embed_dim: int = 256
  num_classes: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, fa: list[jax.Array], fb: list[jax.Array], train: bool) -> list[jax.Array]:
    e, dt = self.embed_dim, self.dtype
    size1 = fa[0].shape[1:3]
    preds, diffs, below = [], [], None
    for s in (4, 3, 2, 1):
      proj = _dense(e, dt, f"linear_c{s}")
      x = jnp.concatenate([proj(fa[s - 1]), proj(fb[s - 1])], axis=-1)
      d = ConvHead(e, e, True, dt, name=f"diff_c{s}")(x, train)
      if below is not None:  # official: F.interpolate(scale_factor=2); the same on exact halves
        d = d + resize_bilinear(below, d.shape[1:3])
      preds.append(ConvHead(self.num_classes, self.num_classes, False, dt, name=f"make_pred_c{s}")(d, train))
      diffs.append(d if s == 1 else resize_bilinear(d, size1))
      below = d
    x = _conv(e, 1, dt, "linear_fuse")(jnp.concatenate(diffs, axis=-1))
    x = batch_norm(train, dt, "linear_fuse_bn")(x)
    for name in ("2x", "1x"):
      # torch ConvTranspose2d(k4, s2, padding 1) == Flax padding k - 1 - p = 2 (exactly 2x).
      x = ConvTranspose(e, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                        kernel_init=_DEC_CONV_INIT, dtype=dt, name=f"convd{name}")(x)
      x = ResidualBlock(dt, name=f"dense_{name}")(x)
    preds.append(_conv(self.num_classes, 3, dt, "change_probability")(x))
    return preds


@register("changeformer")
class ChangeFormer(nn.Module):
  """Output {'logits' (full size), 'p_c4', 'p_c3', 'p_c2', 'p_c1' (1/32 .. 1/4)}. The defaults
  are the official ChangeFormerV6; the encoder widths/depths and `embed_dim` scale it down."""
  num_classes: int = 2
  embed_dim: int = 256  # decoder width (official --embed_dim 256)
  embed_dims: Sequence[int] = (64, 128, 320, 512)
  depths: Sequence[int] = (3, 3, 4, 3)
  num_heads: Sequence[int] = (1, 2, 4, 8)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  mlp_ratio: int = 4
  drop_rate: float = 0.1
  attn_drop_rate: float = 0.1
  drop_path_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if a.shape != b.shape:
      raise ValueError(f"changeformer: image_a {a.shape} and image_b {b.shape} differ in shape")
    dt = self.dtype
    encoder = Encoder(tuple(self.embed_dims), tuple(self.depths), tuple(self.num_heads),
                      tuple(self.sr_ratios), self.mlp_ratio, self.drop_rate, self.attn_drop_rate,
                      self.drop_path_rate, dt, name="encoder")
    # One pass over both dates (the encoder has no batch statistics): one copy to compile.
    feats = encoder(pair(a, b).astype(dt), train)
    fa, fb = zip(*map(unpair, feats))
    preds = Decoder(self.embed_dim, self.num_classes, dt, name="decoder")(fa, fb, train)
    h, w = a.shape[1:3]  # sides not divisible by 4: the output overshoots; cropped
    out = {f"p_c{s}": p.astype(jnp.float32) for s, p in zip((4, 3, 2, 1), preds)}
    out["logits"] = preds[-1][:, :h, :w].astype(jnp.float32)
    return out
