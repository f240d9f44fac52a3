"""Hopfield retrieval as softmax attention: `softmax(s (q Wq)(k Wk)^T) (v Wv)`.

Matches the official Dsfer-Net `HopfieldRetrieve` as MyNet builds it (`activation=None`,
`logits=False`, `v=True`): three bias-free projections, no activation, no output projection,
no normalisation of q or k, heads split after projecting. The official scale is
`(beta // num_heads) ** -0.5` with beta = 512 = dim in Train.py, i.e. 1/sqrt(head_dim), which is
our default `scale=None`; `beta` is a d_k there, not an inverse temperature. The official module
reshapes k with the query length, so it only runs with as many keys as queries; ours allows any M.

Params `Wq`, `Wk`, `Wv` are (in, out) = (dim, dim): the official `linear_{q,k,v}.linear_qkv.weight`
transposed.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.layers import softmax_attention

Dtype = Any

# PyTorch's default nn.Linear init, so training from scratch starts like the official model.
_torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _split_heads(x_BxNxD: jax.Array, num_heads: int) -> jax.Array:
  b, n, d = x_BxNxD.shape
  return x_BxNxD.reshape(b, n, num_heads, d // num_heads)


def einsum_attention(q_BxNxHxE: jax.Array, k_BxMxHxE: jax.Array, v_BxMxHxE: jax.Array,
                     scale: float) -> jax.Array:
  """softmax(scale q k^T) v as two einsums, the softmax in float32."""
  s_BxHxNxM = jnp.einsum("bnhe,bmhe->bhnm", q_BxNxHxE, k_BxMxHxE,
                         preferred_element_type=jnp.float32) * scale
  p_BxHxNxM = jax.nn.softmax(s_BxHxNxM, axis=-1).astype(v_BxMxHxE.dtype)
  return jnp.einsum("bhnm,bmhe->bnhe", p_BxHxNxM, v_BxMxHxE)


def hopfield_reference(q_BxNxD: jax.Array, k_BxMxD: jax.Array, v_BxMxD: jax.Array,
                       wq_DxD: jax.Array, wk_DxD: jax.Array, wv_DxD: jax.Array, *,
                       num_heads: int = 1, scale: float | None = None) -> jax.Array:
  """Plain einsum version (softmax in float32), the parity reference for the attention kernel."""
  d = wq_DxD.shape[1]
  scale = (d // num_heads) ** -0.5 if scale is None else scale
  q_BxNxHxE = _split_heads(q_BxNxD @ wq_DxD, num_heads)
  k_BxMxHxE = _split_heads(k_BxMxD @ wk_DxD, num_heads)
  v_BxMxHxE = _split_heads(v_BxMxD @ wv_DxD, num_heads)
  out_BxNxHxE = einsum_attention(q_BxNxHxE, k_BxMxHxE, v_BxMxHxE, scale)
  return out_BxNxHxE.reshape(out_BxNxHxE.shape[0], out_BxNxHxE.shape[1], d)


class HopfieldRetrieval(nn.Module):
  """One Hopfield retrieval step; `impl` "xla" (`layers.softmax_attention`), "cudnn" or None
  (`jax.nn.dot_product_attention` chooses), or "reference" for the einsum version."""
  dim: int
  num_heads: int = 1
  scale: float | None = None
  impl: str | None = "xla"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, q_BxNxD: jax.Array, k_BxMxD: jax.Array, v_BxMxD: jax.Array) -> jax.Array:
    if self.dim % self.num_heads:
      raise ValueError(f"HopfieldRetrieval: dim {self.dim} is not divisible by num_heads {self.num_heads}")
    d = self.dim
    wq, wk, wv = (self.param(n, _torch_linear_init, (d, d), self.param_dtype).astype(self.dtype)
                  for n in ("Wq", "Wk", "Wv"))
    q, k, v = (x.astype(self.dtype) for x in (q_BxNxD, k_BxMxD, v_BxMxD))
    scale = (d // self.num_heads) ** -0.5 if self.scale is None else self.scale
    if self.impl == "reference":
      return hopfield_reference(q, k, v, wq, wk, wv, num_heads=self.num_heads, scale=scale)
    q_BxNxHxE = _split_heads(q @ wq, self.num_heads)
    k_BxMxHxE = _split_heads(k @ wk, self.num_heads)
    v_BxMxHxE = _split_heads(v @ wv, self.num_heads)
    if self.impl == "xla":
      out_BxNxHxE = softmax_attention(q_BxNxHxE, k_BxMxHxE, v_BxMxHxE, scale)
    else:
      out_BxNxHxE = jax.nn.dot_product_attention(q_BxNxHxE, k_BxMxHxE, v_BxMxHxE, scale=scale,
                                                 implementation=self.impl)
    return out_BxNxHxE.reshape(q.shape[0], q.shape[1], d)
