"""Hopfield retrieval: the attention kernel against the einsum reference, and retrieval itself."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd.models import layers
from jaxcd.models.hopfield import HopfieldRetrieval, hopfield_reference

B, N, M, D = 2, 48, 32, 64  # M != N: retrieval from a memory of another size than the queries


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _inputs(seed: int = 0):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (B, N, D)), jax.random.normal(kk, (B, M, D)),
          jax.random.normal(kv, (B, M, D)))


def _reference(params, q, k, v, num_heads):
  p = params["params"]
  return hopfield_reference(q, k, v, p["Wq"], p["Wk"], p["Wv"], num_heads=num_heads)


@pytest.mark.parametrize("num_heads", [1, 4])
def test_attention_matches_reference_float32(num_heads):
  q, k, v = _inputs()
  hop = HopfieldRetrieval(D, num_heads=num_heads, impl="xla")
  params = hop.init(jax.random.key(1), q, k, v)
  out = hop.apply(params, q, k, v)
  assert out.shape == (B, N, D) and out.dtype == jnp.float32
  # Same maths, different contraction order inside XLA: float32 rounding only.
  assert _rel(out, _reference(params, q, k, v, num_heads)) < 1e-5


@pytest.mark.parametrize("num_heads", [1, 4])
def test_attention_matches_reference_bfloat16(num_heads):
  q, k, v = _inputs()
  hop = HopfieldRetrieval(D, num_heads=num_heads, impl="xla", dtype=jnp.bfloat16)
  params = hop.init(jax.random.key(1), q, k, v)
  assert params["params"]["Wq"].dtype == jnp.float32  # bf16 compute, float32 parameters
  out = hop.apply(params, q, k, v)
  assert out.dtype == jnp.bfloat16
  # bf16 has an 8-bit mantissa (~4e-3 per rounding); a few roundings per path.
  assert _rel(out, _reference(params, q, k, v, num_heads)) < 2e-2


def test_heads_are_independent_attentions():
  # 2 heads over D must equal two 1-head retrievals over the halves of the projected features.
  q, k, v = _inputs(3)
  hop2 = HopfieldRetrieval(D, num_heads=2)
  params = hop2.init(jax.random.key(0), q, k, v)
  p = params["params"]
  out = hop2.apply(params, q, k, v)
  eye = jnp.eye(D // 2)
  for h in range(2):
    cols = slice(h * D // 2, (h + 1) * D // 2)
    one = hopfield_reference(q @ p["Wq"][:, cols], k @ p["Wk"][:, cols], v @ p["Wv"][:, cols],
                             eye, eye, eye, num_heads=1)
    assert _rel(out[..., cols], one) < 1e-5


def test_retrieves_the_stored_pattern_closest_to_the_query():
  # Classic Hopfield property, independent of the einsum reference: with identity projections and
  # a large inverse temperature, a noisy query returns the stored pattern it came from.
  rng = np.random.default_rng(0)
  patterns = np.sign(rng.standard_normal((1, 10, D))).astype(np.float32)
  which = np.array([3, 7, 0, 9])
  queries = patterns[:, which] + 0.6 * rng.standard_normal((1, 4, D)).astype(np.float32)
  hop = HopfieldRetrieval(D, scale=1.0)
  eye = jnp.eye(D)
  params = {"params": {"Wq": eye, "Wk": eye, "Wv": eye}}
  out = hop.apply(params, jnp.asarray(queries), jnp.asarray(patterns), jnp.asarray(patterns))
  np.testing.assert_allclose(out[0], patterns[0, which], atol=1e-3)


def test_jit_and_reference_impl_agree():
  q, k, v = _inputs(5)
  hop = HopfieldRetrieval(D, num_heads=2)
  params = hop.init(jax.random.key(2), q, k, v)
  eager = hop.apply(params, q, k, v)
  jitted = jax.jit(hop.apply)(params, q, k, v)
  ref_impl = HopfieldRetrieval(D, num_heads=2, impl="reference").apply(params, q, k, v)
  assert _rel(jitted, eager) < 1e-6
  assert _rel(ref_impl, eager) < 1e-5


def test_heads_must_divide_dim():
  q, k, v = _inputs()
  with pytest.raises(ValueError, match="num_heads"):
    HopfieldRetrieval(D, num_heads=5).init(jax.random.key(0), q, k, v)


def test_softmax_attention_is_xlas_forward_and_gradient_with_bf16_backward_matmuls():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 6, 3, 4)), jnp.float32) for _ in range(3))
  grad = lambda fn: jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), argnums=(0, 1, 2))
  ours = lambda q, k, v: layers.softmax_attention(q, k, v, 0.5)
  xla = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=0.5, implementation="xla")
  np.testing.assert_array_equal(ours(q, k, v), xla(q, k, v))  # f32: the same computation
  for a, b in zip(grad(ours)(q, k, v), grad(xla)(q, k, v)):
    np.testing.assert_array_equal(a, b)
  # bf16: every matmul of the gradient takes bf16 operands (autodiff's takes the f32 cotangent).
  b16 = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  for fn, f32_dots in ((ours, 0), (xla, 2)):
    text = jax.jit(grad(fn)).trace(*b16).lower(lowering_platforms=("tpu",)).as_text()
    dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
    assert len(dots) == 6 and sum("xf32>, tensor" in d for d in dots) == f32_dots, dots
  for a, b in zip(grad(ours)(*b16), grad(xla)(*b16)):
    np.testing.assert_allclose(np.float32(a), np.float32(b), atol=2 ** -7)
