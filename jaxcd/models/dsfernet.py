"""Dsfer-Net (Chang et al.): siamese VGG16, deeply supervised Hopfield feature retrieval (DSFR)
at levels 4 and 5, and the comprehensive-fusion (CF) decoder. Faithful to the official `MyNet`
(github ShizhenChang/Dsfer-Net, model/Networks.py); submodules carry its names so that
`jaxcd.weights.dsfernet_from_torch` is a table.

Outputs: {'logits': BxHxWxK, 'aux4': BxH/8xW/8xK, 'aux5': BxH/16xW/16xK} (float32); the aux
heads are the deep-supervision outputs trained with Dice. H and W must be multiples of 16.

LayerNorm (`layernorm` field):
  "chw" (default, official): one LayerNorm per level over the whole (C, H, W) map with an
      elementwise affine of that shape, shared by A and B. Its parameters depend on the input size,
      so the model is built for `input_size` x `input_size` inputs (256 -> 34,085,990 params, the
      official count); other sizes are rejected.
  "c": size-independent variant: LayerNorm over C per pixel (token) with a C-sized affine
      (32,777,318 params at any size). Not the official model; official weights do not load into it.

Hopfield scale: `(beta // num_heads) ** -0.5` as in the official code (Train.py uses beta = 512).
BatchNorm follows PyTorch's momentum/eps; one difference in training mode: PyTorch updates the
running variance with the unbiased batch variance, Flax with the biased one.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.errors import ConfigError
from jaxcd.models.conv import Conv
from jaxcd.models.hopfield import HopfieldRetrieval
from jaxcd.models.layers import ConvBNReLU, pair, unpair
from jaxcd.models.registry import register
from jaxcd.models.vgg import VGG16Features

Dtype = Any


def _align_corners_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source indices i0, i1 and weight w of each output position: out = (1-w) x[i0] + w x[i1]."""
  if n_out == 1 or n_in == 1:
    pos = np.zeros(n_out)
  else:
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1))  # corners map exactly onto corners
  i0 = np.minimum(np.floor(pos).astype(np.int32), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  return i0, i1, (pos - i0).astype(np.float32)


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) float32 rows of `_align_corners_taps`: out = A @ x along one axis, with the
  weights rounded as the gather version rounds them ((1 - w) in float32)."""
  i0, i1, w = _align_corners_taps(n_in, n_out)
  a = np.zeros((n_out, n_in), np.float32)
  rows = np.arange(n_out)
  np.add.at(a, (rows, i0), np.float32(1) - w)
  np.add.at(a, (rows, i1), w)
  return a


def resize_matmul_align_corners(x_BxHxWxC: jax.Array, out_h: int, out_w: int) -> jax.Array:
  """`resize_bilinear_align_corners` as two small matmuls, rows then columns: on TPU/GPU they
  run on the matrix units and their gradient is two matmuls, not the gathers' scatter-adds."""
  _, h, w, _ = x_BxHxWxC.shape
  a_OxH = jnp.asarray(interpolation_matrix(h, out_h), x_BxHxWxC.dtype)
  a_PxW = jnp.asarray(interpolation_matrix(w, out_w), x_BxHxWxC.dtype)
  y_BxOxWxC = jnp.einsum("oh,bhwc->bowc", a_OxH, x_BxHxWxC)
  return jnp.einsum("pw,bowc->bopc", a_PxW, y_BxOxWxC)


def resize_bilinear_align_corners(x_BxHxWxC: jax.Array, out_h: int, out_w: int) -> jax.Array:
  """Bilinear resize with PyTorch's align_corners=True semantics (jax.image.resize is half-pixel):
  two-tap gathers on CPU (where they beat the matmuls forward), matmuls elsewhere."""
  return jax.lax.platform_dependent(
      x_BxHxWxC, cpu=lambda x: _resize_by_gathers(x, out_h, out_w),
      default=lambda x: resize_matmul_align_corners(x, out_h, out_w))


def _resize_by_gathers(x_BxHxWxC: jax.Array, out_h: int, out_w: int) -> jax.Array:
  _, h, w, _ = x_BxHxWxC.shape
  i0, i1, wh = _align_corners_taps(h, out_h)
  x = x_BxHxWxC
  wh = jnp.asarray(wh, x.dtype)[None, :, None, None]
  x = x[:, i0] * (1 - wh) + x[:, i1] * wh
  j0, j1, ww = _align_corners_taps(w, out_w)
  ww = jnp.asarray(ww, x.dtype)[None, None, :, None]
  return x[:, :, j0] * (1 - ww) + x[:, :, j1] * ww


def layer_norm(layout: str, **kwargs) -> nn.LayerNorm:
  """The DSFR blocks' LayerNorm: over the whole (C, H, W) map ("chw") or over C per pixel ("c").
  eps as PyTorch; the two-pass variance keeps parity with torch on large relu5_3 activations."""
  axes = (1, 2, 3) if layout == "chw" else -1
  return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, reduction_axes=axes,
                      feature_axes=axes, **kwargs)


def upsample2x(x_BxHxWxC: jax.Array) -> jax.Array:
  """`nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)`."""
  return resize_bilinear_align_corners(x_BxHxWxC, 2 * x_BxHxWxC.shape[1], 2 * x_BxHxWxC.shape[2])


@register("dsfernet")
class DsferNet(nn.Module):
  """The official MyNet (n_classes=2, beta=512, dim=512, numhead=1) by default."""
  num_classes: int = 2
  input_size: int = 256  # the size the "chw" LayerNorms are built for
  layernorm: str = "chw"  # "chw" (official) | "c" (size-independent)
  num_heads: int = 1
  beta: float = 512.0  # official Hopfield scale parameter: scale = (beta // num_heads) ** -0.5
  attention_impl: str | None = "xla"  # jax.nn.dot_product_attention implementation, or "reference"
  dtype: Dtype = jnp.float32  # compute dtype; parameters stay float32

  def _check_input(self, a: jax.Array, b: jax.Array):
    if a.shape != b.shape:
      raise ValueError(f"dsfernet: image_a {a.shape} and image_b {b.shape} differ in shape")
    h, w = a.shape[1:3]
    if h % 16 or w % 16:
      raise ValueError(f"dsfernet: input {h}x{w} is not a multiple of 16")
    if self.layernorm not in ("chw", "c"):
      raise ConfigError(f"config.model.layernorm must be 'chw' or 'c', got {self.layernorm!r}")
    if self.layernorm == "chw" and (h, w) != (self.input_size, self.input_size):
      raise ConfigError(
          f"config.model.input_size is {self.input_size} but the input is {h}x{w}; the official "
          f"(C,H,W) LayerNorm fixes the size: set config.model.input_size={h} (square only) "
          "or config.model.layernorm='c'")

  def _dsfr(self, f_2BxHxWxC: jax.Array, ln: nn.Module, hop: nn.Module) -> jax.Array:
    """Shared LayerNorm, query |LN(A)-LN(B)|, hA = hop(q, LN(B)), hB = hop(q, LN(A)), sigmoid(hA+hB)."""
    n2, h, w, c = f_2BxHxWxC.shape
    n = n2 // 2
    z = ln(f_2BxHxWxC).reshape(n2, h * w, c)  # tokens in row-major (h, w) order, like the official
    za, zb = unpair(z)
    q = jnp.abs(za - zb)
    # Both retrievals in one batched call: same module, so same weights as calling it twice.
    ra, rb = unpair(hop(pair(q, q), pair(zb, za), pair(zb, za)))
    return nn.sigmoid(ra + rb).reshape(n, h, w, c)

  @nn.compact
  def __call__(self, a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    self._check_input(a_BxHxWxC, b_BxHxWxC)
    dt = jnp.dtype(self.dtype)
    conv = lambda c, name: ConvBNReLU(c, dtype=dt, name=name)  # official SingleConv3
    head = lambda name: Conv(self.num_classes, (1, 1), dtype=dt, name=name)  # official OutConv
    ln = lambda name: layer_norm(self.layernorm, dtype=dt, name=name)
    hop = lambda name: HopfieldRetrieval(512, self.num_heads, scale=(self.beta // self.num_heads) ** -0.5,
                                         impl=self.attention_impl, dtype=dt, name=name)
    cat = lambda *xs: jnp.concatenate(xs, axis=-1)
    ab = lambda f: cat(*unpair(f))  # (A, B) pairs on the batch axis -> channel concat (A, B)

    # Siamese encoder: A and B on the batch axis share one pass.
    f1, f2, f3, f4, f5 = VGG16Features(dtype=dt, name="base")(pair(a_BxHxWxC, b_BxHxWxC))

    xx = conv(512, "dec5")(ab(f5), train)
    x5 = self._dsfr(f5, ln("layernorm1"), hop("hopf5"))
    aux5 = head("out5")(x5)
    x = upsample2x(conv(512, "dec51")(x5 * xx, train))

    xx = conv(512, "dec4")(ab(f4), train)
    x4 = self._dsfr(f4, ln("layernorm2"), hop("hopf4"))
    aux4 = head("out4")(x4)
    x = upsample2x(conv(256, "dec41")(cat(x4 * xx, x), train))

    xx = conv(256, "dec3")(ab(f3), train)
    x = upsample2x(conv(128, "dec31")(cat(xx, x), train))
    xx = conv(128, "dec2")(ab(f2), train)
    x = upsample2x(conv(64, "dec21")(cat(xx, x), train))
    xx = conv(64, "dec1")(ab(f1), train)
    x = conv(32, "dec11")(cat(xx, x), train)
    logits = head("outc")(x)
    return {"logits": logits.astype(jnp.float32), "aux4": aux4.astype(jnp.float32),
            "aux5": aux5.astype(jnp.float32)}
