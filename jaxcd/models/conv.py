"""2-D convolution whose kernel gradient on CPU is one matmul per kernel tap.

XLA:CPU lowers the kernel gradient of a convolution to a convolution whose window is the whole
feature map, which Eigen runs at a few GFLOP/s: on 2 cores, a 3x3 convolution over 256x256x64
maps takes ~2-3 s for the kernel gradient against ~0.09 s for the forward pass or the input
gradient, and those gradients dominate every train step at full resolution. Written as a sum of
per-tap products, dK[i, j] = shift_ij(x)^T dy contracted over (batch, rows, columns), the same
gradient runs as a few large matmuls (6-8x faster there; used from 32 output channels on, see
TAPS_MIN_OUT). Only the CPU lowering changes
(`jax.lax.platform_dependent`): GPU and TPU compile XLA's own transpose, and the forward pass
and the input gradient are XLA's everywhere. `Conv` is `flax.linen.Conv` with it: same
parameters, same names.
"""
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Per-tap matmuls (cin x pixels) @ (pixels x cout) lose to lax's kernel gradient when cout is
# small (2x256x256, 64 -> 16 or 64 -> 2: 0.25-0.5x) and win from 32 output channels on (1.2-8x);
# transposed convolutions won in every shape the models use.
TAPS_MIN_OUT = 32

# Large kernels on small maps (ChangeFormer's 7x7 stride-2 patch embeddings of 64- to 320-channel
# maps): XLA:CPU runs their forward pass and input gradient as a generic convolution at ~2
# GFLOP/s (0.5 s of a 0.8 s ChangeFormer forward at 64x64). On CPU, kernels of LARGE_TAPS taps
# or more over TAPS_MIN_IN or more input channels compute both as one matmul per tap too.
LARGE_TAPS = 25
TAPS_MIN_IN = 32

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                 out_spec=(0, 3, 1, 2))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, with the per-tap kernel gradient on CPU for NHWC x HWIO
  convolutions of one group (strided, dilated or input-dilated, i.e. transposed); anything else
  is lax's own."""
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  lhs_dil = tuple(lhs_dilation or (1, 1))
  strides = tuple(window_strides)
  plain = (lhs.ndim == 4 and dn == _NHWC and feature_group_count == 1 and batch_group_count == 1
           and preferred_element_type is None
           and (lhs_dil == (1, 1) or strides == (1, 1)))
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  dil = tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):
    window = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dil)]
    padding = lax.padtype_to_pads(lhs.shape[1:3], window, strides, padding)
  pads = tuple(tuple(int(v) for v in p) for p in padding)
  return _conv(lhs, rhs, strides, pads, dil, lhs_dil, precision)


def _lax_conv(x, w, strides, pads, dil, lhs_dil, precision):
  return lax.conv_general_dilated(x, w, strides, pads, lhs_dilation=lhs_dil, rhs_dilation=dil,
                                  dimension_numbers=_NHWC, precision=precision)


def _large_kernel(w_shape, pads, lhs_dil) -> bool:
  kh, kw, cin, _ = w_shape
  return (lhs_dil == (1, 1) and kh * kw >= LARGE_TAPS and cin >= TAPS_MIN_IN
          and min(min(p) for p in pads) >= 0)  # negative pads (crops) stay lax's


def _forward(x, w, strides, pads, dil, lhs_dil, precision):
  if not _large_kernel(w.shape, pads, lhs_dil):
    return _lax_conv(x, w, strides, pads, dil, lhs_dil, precision)
  return lax.platform_dependent(
      x, w, cpu=lambda x, w: conv_by_taps(x, w, strides, pads, dil, precision).astype(x.dtype),
      default=lambda x, w: _lax_conv(x, w, strides, pads, dil, lhs_dil, precision))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv(x, w, strides, pads, dil, lhs_dil, precision):
  return _forward(x, w, strides, pads, dil, lhs_dil, precision)


def _conv_fwd(x, w, strides, pads, dil, lhs_dil, precision):
  return _forward(x, w, strides, pads, dil, lhs_dil, precision), (x, w)


def _conv_bwd(strides, pads, dil, lhs_dil, precision, res, dy):
  x, w = res
  conv = lambda x_, w_: _lax_conv(x_, w_, strides, pads, dil, lhs_dil, precision)

  def xla_dx(x, dy):
    return jax.vjp(lambda x_: conv(x_, w), x)[1](dy)[0]

  if _large_kernel(w.shape, pads, lhs_dil):
    dx = lax.platform_dependent(
        x, dy, default=xla_dx,
        cpu=lambda x, dy: input_grad_by_taps(dy, w, x.shape, strides, pads, dil,
                                             precision).astype(x.dtype))
  else:
    dx = xla_dx(x, dy)

  def xla_dw(x, dy):
    return jax.vjp(lambda w_: conv(x, w_), w)[1](dy)[0]

  if lhs_dil == (1, 1) and w.shape[3] < TAPS_MIN_OUT:
    return dx, xla_dw(x, dy)

  def tap_dw(x, dy):
    if lhs_dil != (1, 1):
      return transposed_kernel_grad_by_taps(x, dy, w.shape, pads, dil, lhs_dil,
                                            precision).astype(w.dtype)
    return kernel_grad_by_taps(x, dy, w.shape, strides, pads, dil, precision).astype(w.dtype)

  dw = lax.platform_dependent(x, dy, cpu=tap_dw, default=xla_dw)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def kernel_grad_by_taps(x, dy, kernel_shape: Sequence[int], strides, pads, dil,
                        precision=None):
  """dK[i, j] = sum over (n, h, w) of x_pad[n, s*h + d*i, s*w + d*j, :] (x) dy[n, h, w, :]: one
  matmul per kernel tap, contracting the leading axes (no transposes)."""
  n, ho, wo, cout = dy.shape
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  dy2 = dy.reshape(n * ho * wo, cout)

  def tap(i, j):
    return _tap_pixels(xp, i, j, ho, wo, strides, dil), dy2

  return _sum_over_taps(kernel_shape, tap, precision)


def _tap_window(i, j, ho, wo, strides, dil):
  """Start and (exclusive) stop rows/columns of tap (i, j)'s strided window in the padded input."""
  (sh, sw), (dh, dw_) = strides, dil
  return (i * dh, j * dw_), (i * dh + sh * (ho - 1) + 1, j * dw_ + sw * (wo - 1) + 1)


def _tap_pixels(xp, i, j, ho, wo, strides, dil):
  """The padded input's pixels that tap (i, j) meets, as a (pixels, channels) matrix."""
  n, _, _, c = xp.shape
  (r0, c0), (r1, c1) = _tap_window(i, j, ho, wo, strides, dil)
  return lax.slice(xp, (0, r0, c0, 0), (n, r1, c1, c), (1, *strides, 1)).reshape(n * ho * wo, c)


def conv_by_taps(x, w, strides, pads, dil, precision=None):
  """The convolution as y = sum over taps (i, j) of x_pad[strided window (i, j)] @ w[i, j]:
  one (pixels x cin) @ (cin x cout) matmul per tap, accumulated in float32."""
  kh, kw, _, cout = w.shape
  n = x.shape[0]
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  ho = (xp.shape[1] - dil[0] * (kh - 1) - 1) // strides[0] + 1
  wo = (xp.shape[2] - dil[1] * (kw - 1) - 1) // strides[1] + 1
  y = jnp.zeros((n * ho * wo, cout), jnp.float32)
  for i in range(kh):
    for j in range(kw):
      y = y + jnp.dot(_tap_pixels(xp, i, j, ho, wo, strides, dil), w[i, j],
                      precision=precision, preferred_element_type=jnp.float32)
  return y.reshape(n, ho, wo, cout)


def input_grad_by_taps(dy, w, x_shape, strides, pads, dil, precision=None):
  """dx of `conv_by_taps`: tap (i, j) sends dy @ w[i, j]^T back to its strided window of the
  padded input (placed there by interior padding, no scatter); the pads are cut off at the end."""
  kh, kw, cin, cout = w.shape
  n, h, wd, _ = x_shape
  _, ho, wo, _ = dy.shape
  hp, wp = h + sum(pads[0]), wd + sum(pads[1])
  dy2 = dy.reshape(n * ho * wo, cout)
  dxp = jnp.zeros((n, hp, wp, cin), jnp.float32)
  for i in range(kh):
    for j in range(kw):
      (r0, c0), (r1, c1) = _tap_window(i, j, ho, wo, strides, dil)
      g = lax.dot_general(dy2, w[i, j], (((1,), (1,)), ((), ())), precision=precision,
                          preferred_element_type=jnp.float32).reshape(n, ho, wo, cin)
      dxp = dxp + lax.pad(g, jnp.zeros((), g.dtype),
                          ((0, 0, 0), (r0, hp - r1, strides[0] - 1),
                           (c0, wp - c1, strides[1] - 1), (0, 0, 0)))
  return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + wd, :]


def _sum_over_taps(kernel_shape, tap, precision):
  """dK[i, j] = a^T b for (a, b) = tap(i, j), both (pixels, channels): the matmuls contract the
  leading axis (no transposes), accumulating in float32."""
  kh, kw, cin, cout = kernel_shape
  grads = [lax.dot_general(*tap(i, j), (((0,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=jnp.float32)
           for i in range(kh) for j in range(kw)]
  return jnp.stack(grads).reshape(kh, kw, cin, cout)


def transposed_kernel_grad_by_taps(x, dy, kernel_shape: Sequence[int], pads, dil, lhs_dil,
                                   precision=None):
  """The kernel gradient of an input-dilated (transposed) convolution, stride 1: input pixel
  (a, b) sits at (p + s*a, q + s*b) of the dilated, padded input, so tap (i, j) pairs it with
  dy[p - d*i + s*a, q - d*j + s*b]: one strided slice of dy and one matmul per tap."""
  kh, kw, cin, cout = kernel_shape
  n, h, w, _ = x.shape
  _, ho, wo, _ = dy.shape
  (sh, sw), (dh, dw_) = lhs_dil, dil
  (ph, _), (pw, _) = pads
  lo_h, lo_w = max(0, dh * (kh - 1) - ph), max(0, dw_ * (kw - 1) - pw)
  hi_h, hi_w = max(0, ph + sh * (h - 1) - (ho - 1)), max(0, pw + sw * (w - 1) - (wo - 1))
  dyp = jnp.pad(dy, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
  x2 = x.reshape(n * h * w, cin)

  def tap(i, j):
    r0, c0 = ph - dh * i + lo_h, pw - dw_ * j + lo_w
    t = lax.slice(dyp, (0, r0, c0, 0), (n, r0 + sh * (h - 1) + 1, c0 + sw * (w - 1) + 1, cout),
                  (1, sh, sw, 1))
    return x2, t.reshape(n * h * w, cout)

  return _sum_over_taps(kernel_shape, tap, precision)


class ConvTranspose(nn.Module):
  """`flax.linen.ConvTranspose` (explicit, 'SAME' or 'VALID' padding, kernel (kh, kw, in,
  out), not flipped) on `conv_general_dilated` above: the same parameters and output."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: str | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    k = tuple(self.kernel_size)
    s = tuple(self.strides or (1,) * len(k))
    kernel = self.param("kernel", self.kernel_init, k + (x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if isinstance(self.padding, str):
      pads = [_transpose_pads(ki, si, self.padding) for ki, si in zip(k, s)]
    else:
      pads = [tuple(p) for p in self.padding]
    y = conv_general_dilated(x, kernel, (1,) * len(k), pads, lhs_dilation=s,
                             dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
    return y + bias if bias is not None else y


def _transpose_pads(k: int, s: int, padding: str) -> tuple[int, int]:
  """lax.conv_transpose's padding of the dilated input for 'SAME' / 'VALID'."""
  if padding == "SAME":
    pad_len = k + s - 2
    if s > k - 1:
      pad_a = k - 1
    else:
      pad_a = int(-(-pad_len // 2))  # ceil
  elif padding == "VALID":
    pad_len = k + s - 2 + max(k - s, 0)
    pad_a = k - 1
  else:
    raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
  return pad_a, pad_len - pad_a


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
