"""jaxcd.models.conv: Flax's Conv / ConvTranspose with the per-tap kernel gradient on CPU give
lax's outputs and gradients, and the CPU program really takes the per-tap path."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd.models import conv

CONVS = [  # (size, in, out, kernel, stride, padding, dilation); out >= TAPS_MIN_OUT: per-tap path
    (16, 5, 32, 3, 1, "SAME", 1),
    (17, 4, 33, 3, 2, ((1, 1), (1, 1)), 1),
    (19, 3, 32, 7, 2, ((3, 3), (3, 3)), 1),
    (12, 6, 40, 1, 1, "VALID", 1),
    (14, 4, 32, 3, 1, ((2, 2), (2, 2)), 2),
    (15, 3, 32, 4, 3, "VALID", 1),
    (12, 6, 4, 3, 1, "SAME", 1),  # few outputs: lax's own gradient
]
TRANSPOSED = [  # (size, in, out, kernel, stride, padding): the models' own and lax's strings
    (8, 6, 5, 3, 2, ((1, 2), (1, 2))),
    (8, 4, 4, 4, 2, ((2, 2), (2, 2))),
    (5, 3, 4, 3, 4, ((1, 4), (1, 4))),
    (9, 4, 2, 3, 1, ((1, 1), (1, 1))),
    (7, 5, 3, 2, 2, "VALID"),
    (7, 3, 3, 3, 2, "SAME"),
    (7, 2, 3, 4, 3, "SAME"),
]


def _grads(module, params, x):
  scale = jnp.linspace(1.0, 2.0, module.features)
  loss = lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)) * scale)
  return jax.jit(jax.grad(loss, (0, 1)))(params, x)


def _assert_same(ours, theirs, x, params):
  np.testing.assert_array_equal(ours.apply(params, x), theirs.apply(params, x))
  for a, b in zip(jax.tree.leaves(_grads(ours, params, x)), jax.tree.leaves(_grads(theirs, params, x))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("size,cin,cout,k,s,pad,d", CONVS)
def test_conv_matches_flax(size, cin, cout, k, s, pad, d):
  x = jax.random.normal(jax.random.key(1), (2, size, size + 1, cin))
  kw = dict(strides=(s, s), padding=pad, kernel_dilation=(d, d))
  ours, theirs = conv.Conv(cout, (k, k), **kw), nn.Conv(cout, (k, k), **kw)
  params = theirs.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
  _assert_same(ours, theirs, x, params)


@pytest.mark.parametrize("size,cin,cout,k,s,pad", TRANSPOSED)
def test_conv_transpose_matches_flax(size, cin, cout, k, s, pad):
  x = jax.random.normal(jax.random.key(1), (2, size, size + 2, cin))
  kw = dict(strides=(s, s), padding=pad)
  ours, theirs = conv.ConvTranspose(cout, (k, k), **kw), nn.ConvTranspose(cout, (k, k), **kw)
  params = theirs.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
  _assert_same(ours, theirs, x, params)


def _hlo_convolutions(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().as_text().count(" convolution(")


@pytest.mark.parametrize("cout,ours_count", [(conv.TAPS_MIN_OUT, 2), (conv.TAPS_MIN_OUT - 1, 3)])
def test_cpu_kernel_gradient_is_matmuls_from_taps_min_out(cout, ours_count):
  """lax's gradient costs three convolutions (forward, input and kernel gradient); ours two on
  CPU from TAPS_MIN_OUT output channels on, the kernel gradient being matmuls, else lax's three."""
  if jax.default_backend() != "cpu":
    pytest.skip("the per-tap kernel gradient is the CPU lowering only")
  x = jnp.ones((2, 16, 16, 4))
  w = jnp.ones((3, 3, 4, cout))
  dn = ("NHWC", "HWIO", "NHWC")
  ours = lambda x, w: jnp.sum(conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) ** 2)
  lax_ = lambda x, w: jnp.sum(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) ** 2)
  assert _hlo_convolutions(jax.grad(lax_, (0, 1)), x, w) == 3
  assert _hlo_convolutions(jax.grad(ours, (0, 1)), x, w) == ours_count


LARGE = [  # (size, in, out, kernel, stride, padding): >= LARGE_TAPS taps over >= TAPS_MIN_IN inputs
    (4, 40, 48, 7, 2, ((3, 3), (3, 3))),  # ChangeFormer's later patch embeddings, small
    (9, 32, 8, 5, 2, ((2, 2), (2, 2))),  # few outputs: lax's kernel gradient, per-tap dx
    (8, 33, 32, 5, 1, "SAME"),
    (11, 32, 16, 5, 3, ((1, 2), (2, 1))),  # uneven padding, a stride that skips pixels
]


@pytest.mark.parametrize("size,cin,cout,k,s,pad", LARGE)
def test_large_kernels_match_lax_and_are_matmuls_on_cpu(size, cin, cout, k, s, pad):
  """Large kernels over many channels: on CPU the forward pass and the input gradient are per-tap
  matmuls as well (no convolution left in either program); values are lax's up to float32
  summation order."""
  assert k * k >= conv.LARGE_TAPS and cin >= conv.TAPS_MIN_IN
  x = jax.random.normal(jax.random.key(1), (2, size, size + 1, cin))
  kw = dict(strides=(s, s), padding=pad)
  ours, theirs = conv.Conv(cout, (k, k), **kw), nn.Conv(cout, (k, k), **kw)
  params = theirs.init(jax.random.key(0), x)
  y = theirs.apply(params, x)
  np.testing.assert_allclose(ours.apply(params, x), y, rtol=1e-5, atol=1e-5 * float(jnp.abs(y).max()))
  for a, b in zip(jax.tree.leaves(_grads(ours, params, x)), jax.tree.leaves(_grads(theirs, params, x))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))
  if jax.default_backend() == "cpu":
    dx = jax.grad(lambda x: jnp.sum(ours.apply(params, x) ** 2))
    assert _hlo_convolutions(lambda x: ours.apply(params, x), x) == 0
    assert _hlo_convolutions(dx, x) == 0


def test_large_kernel_with_a_negative_pad_stays_lax():
  x = jax.random.normal(jax.random.key(1), (1, 9, 9, 32))
  kw = dict(padding=((-1, 2), (2, 2)))
  ours, theirs = conv.Conv(8, (5, 5), **kw), nn.Conv(8, (5, 5), **kw)
  params = theirs.init(jax.random.key(0), x)
  _assert_same(ours, theirs, x, params)


def test_grouped_and_bf16_fall_back_or_match():
  """Grouped convolutions keep lax's path; bfloat16 gradients keep the kernel's dtype."""
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 4))
  grouped = conv.Conv(4, (3, 3), feature_group_count=2)
  p = grouped.init(jax.random.key(0), x)
  _assert_same(grouped, nn.Conv(4, (3, 3), feature_group_count=2), x, p)
  half = conv.Conv(4, (3, 3), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  ph = half.init(jax.random.key(0), x)
  g = jax.grad(lambda p: jnp.sum(half.apply(p, x).astype(jnp.float32)))(ph)
  assert g["params"]["kernel"].dtype == jnp.bfloat16


@pytest.mark.parametrize("shape", [(2, 8, 10, 3), (1, 9, 7, 2)])
def test_max_pool2_gradient_goes_to_the_first_maximum_as_lax(shape):
  """Windows with tied maxima (small integers) and odd sizes: layers.max_pool2's elementwise
  gradient equals lax's select-and-scatter one, value for value."""
  from jaxcd.models.layers import max_pool2
  x = jax.random.randint(jax.random.key(0), shape, 0, 3).astype(jnp.float32)
  pooled = nn.max_pool(x, (2, 2), strides=(2, 2))
  w = jnp.arange(1.0, 1.0 + pooled.size).reshape(pooled.shape)
  ours = jax.grad(lambda x: jnp.sum(max_pool2(x) * w))(x)
  theirs = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) * w))(x)
  np.testing.assert_array_equal(max_pool2(x), pooled)
  np.testing.assert_array_equal(ours, theirs)
  assert int(jnp.sum(ours != 0)) == pooled.size  # one winner per window, ties included


def test_max_pool2_gradient_is_selections_on_cpu_and_xlas_own_elsewhere():
  from jaxcd.models.layers import max_pool2
  x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.bfloat16)
  grad = jax.grad(lambda x: jnp.sum(max_pool2(x).astype(jnp.float32)))
  for platform, scatters in (("cpu", False), ("tpu", True), ("cuda", True)):
    text = jax.jit(grad).trace(x).lower(lowering_platforms=(platform,)).as_text()
    assert ("select_and_scatter" in text) == scatters, platform
