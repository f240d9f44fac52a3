"""Small building blocks shared by the networks (NHWC)."""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv, ConvTranspose

Dtype = Any


def batch_norm(train: bool, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.BatchNorm:
  # PyTorch defaults (momentum 0.1 there == 0.9 here, eps 1e-5), so imported weights behave alike.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


class ConvBNReLU(nn.Module):
  """3x3 (by default) conv -> BatchNorm -> ReLU [-> channel dropout]."""
  features: int
  kernel: int = 3
  strides: int = 1
  dilation: int = 1
  use_bias: bool = True
  dropout: float = 0.0
  relu: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    pad = self.dilation * (self.kernel - 1) // 2
    x = Conv(self.features, (self.kernel, self.kernel), strides=self.strides,
             padding=((pad, pad), (pad, pad)), kernel_dilation=self.dilation,
             use_bias=self.use_bias, dtype=self.dtype, name="conv")(x_BxHxWxC)
    x = batch_norm(train, self.dtype, name="bn")(x)
    if self.relu:
      x = nn.relu(x)
    if self.dropout > 0:
      # Dropout2d: whole channels are dropped, as in the reference implementations.
      x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
    return x


class UpConv(nn.Module):
  """Transposed 3x3 conv, stride 2 (PyTorch padding=1, output_padding=1: exactly 2x the size)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    return ConvTranspose(self.features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                         dtype=self.dtype, name="convt")(x_BxHxWxC)


def pad_to(x_BxHxWxC: jax.Array, hw: Sequence[int]) -> jax.Array:
  """Edge-pads (bottom/right) an upsampled map to a skip connection's size, for odd inputs."""
  dh, dw = hw[0] - x_BxHxWxC.shape[1], hw[1] - x_BxHxWxC.shape[2]
  if dh == 0 and dw == 0:
    return x_BxHxWxC
  return jnp.pad(x_BxHxWxC, ((0, 0), (0, dh), (0, dw), (0, 0)), mode="edge")


@jax.custom_vjp
def max_pool2(x_BxHxWxC: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2 (an odd last row or column is dropped). Its gradient goes to
  the first maximum of each window in row-major order, as lax's and PyTorch's, but on CPU as four
  elementwise selections instead of XLA:CPU's select-and-scatter (2.7x faster on 256x256x64)."""
  return nn.max_pool(x_BxHxWxC, (2, 2), strides=(2, 2))


def _max_pool2_fwd(x):
  y = max_pool2(x)
  return y, (x, y)


def _max_pool2_bwd(res, g):
  """Selections on CPU; elsewhere XLA's own gradient (select-and-scatter), which needs none of
  the selections' interleaving copies."""
  x, y = res
  return (jax.lax.platform_dependent(x, y, g, cpu=_max_pool2_grad_by_selects,
                                     default=_max_pool2_grad_xla),)


def _max_pool2_grad_xla(x, y, g):
  return jax.vjp(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), x)[1](g)[0]


def _max_pool2_grad_by_selects(x, y, g):
  n, h, w, c = x.shape
  h2, w2 = h // 2 * 2, w // 2 * 2
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(2):
    cols = []
    for j in range(2):
      hit = (x[:, i:h2:2, j:w2:2] == y) & ~taken
      taken = taken | hit
      cols.append(jnp.where(hit, g, 0).astype(g.dtype))
    rows.append(jnp.stack(cols, 3))  # B, H/2, W/2, 2 (j), C
  dx = jnp.stack(rows, 2).reshape(n, h2, w2, c)  # B, H/2, 2 (i), W/2, 2 (j), C
  return jnp.pad(dx, ((0, 0), (0, h - h2), (0, w - w2), (0, 0)))


max_pool2.defvjp(_max_pool2_fwd, _max_pool2_bwd)


def pair(a_BxN: jax.Array, b_BxN: jax.Array) -> jax.Array:
  """Both dates as one batch, [a0, b0, a1, b1, ...]. Interleaved, not [A; B]: with the batch
  sharded over devices each device keeps its own pairs, where concatenating (and slicing back)
  makes the SPMD partitioner move half of every activation between devices."""
  return jnp.stack([a_BxN, b_BxN], axis=1).reshape((2 * a_BxN.shape[0],) + a_BxN.shape[1:])


def unpair(x_2BxN: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The inverse of `pair`: (A, B)."""
  x = x_2BxN.reshape((x_2BxN.shape[0] // 2, 2) + x_2BxN.shape[1:])
  return x[:, 0], x[:, 1]


def softmax_attention(q_BxTxNxH: jax.Array, k_BxSxNxH: jax.Array, v_BxSxNxH: jax.Array,
                      scale: float) -> jax.Array:
  """`jax.nn.dot_product_attention(implementation="xla")`: f32 logits and softmax, probabilities
  in v's dtype. Only its gradient differs: the logits' f32 cotangent enters the two backward
  matmuls in the inputs' dtype (as FlashAttention does), where autodiff would run them in f32."""
  logits = _attention_logits(q_BxTxNxH, k_BxSxNxH) * jnp.float32(scale)
  p = jax.nn.softmax(logits, axis=-1).astype(v_BxSxNxH.dtype)
  return jnp.einsum("bnts,bsnh->btnh", p, v_BxSxNxH)


@jax.custom_vjp
def _attention_logits(q_BxTxNxH: jax.Array, k_BxSxNxH: jax.Array) -> jax.Array:
  return jnp.einsum("btnh,bsnh->bnts", q_BxTxNxH, k_BxSxNxH, preferred_element_type=jnp.float32)


def _attention_logits_fwd(q, k):
  return _attention_logits(q, k), (q, k)


def _attention_logits_bwd(res, g_BxNxTxS):
  q, k = res
  g = g_BxNxTxS.astype(q.dtype)
  dq = jnp.einsum("bnts,bsnh->btnh", g, k, preferred_element_type=jnp.float32)
  dk = jnp.einsum("bnts,btnh->bsnh", g, q, preferred_element_type=jnp.float32)
  return dq.astype(q.dtype), dk.astype(k.dtype)


_attention_logits.defvjp(_attention_logits_fwd, _attention_logits_bwd)


def count_params(params: Any) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
