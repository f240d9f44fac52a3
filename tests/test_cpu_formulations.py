"""cpu_formulations: every alternative computes jaxcd's op (output and every gradient, at small
shapes, tolerances below), the shapes it times are Dsfer-Net's, and a --quick run writes every
row, with and without the torch column.

Tolerances are on the max abs difference over max(1, largest |value|), float32, inputs N(0, 1)
or ReLU(N(0, 1)): upsample 1e-6 forward / 1e-5 gradients (a row has two non-zero weights either
way); LayerNorm 2e-5 / 1e-4 (one-pass variance: fine at mean ~ std, see the cancellation test);
attention 1e-6 / 1e-5 (the same einsums: equal in practice); convolution 1e-5 / 2e-5 (kernel
gradients sum thousands of products in another order: seen 2.2e-6 at 2x64x64, 32 -> 32).
The table rows of a --quick run, whose largest values are ~60 (conv kernel gradients), are
checked against 100x those bounds in absolute terms."""
import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd.errors import ConfigError
from jaxcd.experiments import cpu_formulations as cf
from jaxcd.models.dsfernet import (interpolation_matrix, resize_bilinear_align_corners,
                                   resize_matmul_align_corners)

TOL = {"upsample": (1e-6, 1e-5), "layernorm": (2e-5, 1e-4), "hopfield": (1e-6, 1e-5),
       "conv": (1e-5, 2e-5)}
TORCH_TOL = 1e-5  # torch's ops against jaxcd's, forward and backward, relative as TOL


def _out_and_grads(fn, inputs, g):
  out, vjp = jax.vjp(fn, *[jnp.asarray(a) for a in inputs])
  return np.asarray(out), [np.asarray(d) for d in vjp(jnp.asarray(g))]


def _rel_diff(ref: list[np.ndarray], other: list[np.ndarray]) -> float:
  return cf.max_abs_diff(ref, other) / max(1.0, max(float(np.abs(r).max()) for r in ref))


def _compare(case: cf.Case, tol: tuple[float, float]) -> tuple[float, float]:
  """Relative differences (output, gradients) of the case's alternative from jaxcd's."""
  g = cf._cotangent(case)
  perms = case.alt_perms or (None,) * len(case.inputs)
  out, grads = _out_and_grads(case.current, case.inputs, g)
  alt_out, alt_grads = _out_and_grads(case.alternative, [cf._tx(a, p) for a, p in
                                                         zip(case.inputs, perms)],
                                      cf._tx(g, case.alt_out_perm))
  fwd = _rel_diff([out], [cf._untx(alt_out, case.alt_out_perm)])
  bwd = _rel_diff(grads, [cf._untx(d, p) for d, p in zip(alt_grads, perms)])
  assert fwd <= tol[0] and bwd <= tol[1], (case.experiment, case.shape, fwd, bwd)
  return fwd, bwd


def test_upsample_matmuls_equal_gathers():
  for c in cf.build_cases({"upsample": [(2, 8, 8, 16), (1, 16, 16, 8)]}, ["upsample"]):
    _compare(c, TOL["upsample"])
  # Any sizes, up and down, non-square: the interpolation matrices are the gathers' taps.
  x = np.random.default_rng(0).standard_normal((1, 5, 7, 3), dtype=np.float32)
  for out_h, out_w in ((9, 14), (3, 2), (5, 1)):
    np.testing.assert_allclose(resize_matmul_align_corners(x, out_h, out_w),
                               resize_bilinear_align_corners(x, out_h, out_w), atol=1e-6)
  a = interpolation_matrix(4, 8)
  np.testing.assert_allclose(a.sum(1), 1, atol=1e-6)  # rows are convex weights
  assert a[0, 0] == a[-1, -1] == 1  # corners map onto corners


def test_upsampling_lowers_to_gathers_on_cpu_and_matmuls_elsewhere():
  x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.bfloat16)
  grad = jax.grad(lambda x: jnp.sum(resize_bilinear_align_corners(x, 16, 16)))
  # (the forward gathers, its gradient scatter-adds; the matmuls' gradient is matmuls)
  for platform, want, not_want in (("cpu", ["gather", "scatter"], ["dot_general"]),
                                   ("tpu", ["dot_general"], ["gather", "scatter"]),
                                   ("cuda", ["dot_general"], ["gather", "scatter"])):
    for f in (lambda x: resize_bilinear_align_corners(x, 16, 16), grad):
      text = jax.jit(f).trace(x).lower(lowering_platforms=(platform,)).as_text()
      assert any(op in text for op in want) and not any(op in text for op in not_want), platform


def test_layernorm_one_pass_equals_models():
  for c in cf.build_cases({"layernorm": [(4, 16, 16, 32), (2, 8, 8, 64)]}, ["layernorm"]):
    _compare(c, TOL["layernorm"])


def test_one_pass_variance_cancels_when_the_mean_dwarfs_the_spread():
  """Why the model keeps the two-pass variance: Var = E[x^2] - E[x]^2 loses the digits of the
  spread when |mean| >> std (here mean 100, std 1), which the two-pass form keeps."""
  x = 100 + np.random.default_rng(0).standard_normal((2, 16, 16, 32), dtype=np.float32)
  x64 = x.astype(np.float64)
  ref = ((x64 - x64.mean((1, 2, 3), keepdims=True))
         / np.sqrt(x64.var((1, 2, 3), keepdims=True) + cf.LN_EPS))
  scale, bias = np.ones(x.shape[1:], np.float32), np.zeros(x.shape[1:], np.float32)
  two = np.abs(np.asarray(cf.layernorm_model(x, scale, bias)) - ref).max()
  one = np.abs(np.asarray(cf.layernorm_one_pass(x, scale, bias)) - ref).max()
  assert two < 1e-4 and one > 1e-3, (two, one)


def test_one_pass_sums_are_accurate_and_differentiable():
  x = np.maximum(np.random.default_rng(0).standard_normal((2, 32, 32, 64), dtype=np.float32), 0)
  s, s2 = cf._sums(x)
  x64 = x.astype(np.float64)
  np.testing.assert_allclose(s, x64.sum((1, 2, 3)), rtol=1e-6)
  np.testing.assert_allclose(s2, (x64 ** 2).sum((1, 2, 3)), rtol=1e-6)
  g = jax.grad(lambda x: jnp.sum(cf._sums(x)[0] * 3 + cf._sums(x)[1]))(x)
  np.testing.assert_allclose(g, 3 + 2 * x, rtol=1e-6)


def test_attention_einsum_equals_dot_product_attention():
  for c in cf.build_cases({"hopfield": [(2, 64, 1, 32), (4, 16, 1, 64)]}, ["hopfield"]):
    _compare(c, TOL["hopfield"])


def test_conv_nchw_equals_jaxcd_nhwc():
  # >= 32 output channels: jaxcd's side takes its per-tap kernel gradient (conv.TAPS_MIN_OUT).
  for c in cf.build_cases({"conv": [(2, 64, 64, 32, 32), (1, 8, 8, 64, 48)]}, ["conv"]):
    _compare(c, TOL["conv"])


def test_shapes_are_dsfernets():
  """The timed shapes are what DsferNet's modules see (traced at batch 2, 64x64): upsample2x's
  inputs are dec51..dec21's outputs, the LayerNorms' and Hopfield retrievals' inputs, and three
  of VGG's convolutions (the model runs those at batch 4: A and B stacked)."""
  import flax.linen as nn
  from jaxcd.models.dsfernet import DsferNet

  seen = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__":
      seen.append((context.module, [a.shape for a in args if hasattr(a, "shape")], out))
    return out

  a = jnp.zeros((2, 64, 64, 3))
  with nn.intercept_methods(record):
    jax.eval_shape(DsferNet(input_size=64).init, jax.random.key(0), a, a)
  by_name = lambda *names: [s for s in seen if s[0].name in names]  # noqa: E731
  spec = cf.shapes(batch=2, size=64)
  assert sorted(tuple(o.shape) for _, _, o in by_name("dec51", "dec41", "dec31", "dec21")) \
      == sorted(spec["upsample"])
  lns = by_name("layernorm1", "layernorm2")
  assert sorted(tuple(shp[0]) for _, shp, _ in lns) == sorted(spec["layernorm"])
  for m, _, _ in lns:  # the same LayerNorm as cf.layernorm_model
    assert (m.epsilon, m.use_fast_variance, m.reduction_axes, m.feature_axes) == \
        (cf.LN_EPS, False, (1, 2, 3), (1, 2, 3))
  hops = by_name("hopf4", "hopf5")
  assert sorted((shp[0][0], shp[0][1], m.num_heads, shp[0][2]) for m, shp, _ in hops) == \
      sorted(spec["hopfield"])
  for m, shp, _ in hops:  # the attention as cf.attention_xla runs it
    assert m.impl == "xla" and m.scale == pytest.approx(shp[0][2] ** -0.5)
  vgg = {(shp[0][0], shp[0][1], shp[0][2], shp[0][3], m.features) for m, shp, _ in seen
         if m.name and m.name.startswith("conv") and tuple(m.kernel_size) == (3, 3)}
  for b, h, w, cin, cout in spec["conv"]:
    assert (2 * b, h, w, cin, cout) in vgg


def _read(out) -> tuple[list[dict], list[str]]:
  with open(out / "cpu_formulations.csv", newline="") as f:
    table = list(csv.DictReader(f))
  return table, (out / "cpu_formulations.md").read_text().splitlines()


def _expected_rows() -> list[tuple[str, str, str]]:
  return [(c.experiment, c.shape, p) for c in cf.build_cases(cf.quick_shapes())
          for p in ("forward", "backward")]


def test_quick_run_without_torch_writes_every_row(tmp_path):
  rows = cf.run(str(tmp_path), reps=1, quick=True, use_torch=False)
  table, md = _read(tmp_path)
  assert [(r["experiment"], r["shape"], r["pass"]) for r in table] == _expected_rows()
  assert {r["experiment"] for r in table} == set(cf.EXPERIMENTS)
  assert len(rows) == len(table) and list(table[0]) == list(cf.COLUMNS)
  for r in table:
    assert r["torch_ms"] == r["jaxcd_torch_ratio"] == r["torch_max_abs_diff"] == ""
    assert float(r["jaxcd_ms"]) > 0 and float(r["alternative_ms"]) > 0
    assert float(r["alternative_speedup"]) == pytest.approx(
        float(r["jaxcd_ms"]) / float(r["alternative_ms"]), rel=1e-9)
    assert float(r["max_abs_diff"]) <= 100 * TOL[r["experiment"]][r["pass"] == "backward"], r
  assert "torch: not installed or disabled" in md[0]
  body = [ln for ln in md if " | forward | " in ln or " | backward | " in ln]
  assert len(body) == len(table) and all(" | - | " in ln for ln in body)


def test_quick_run_with_torch_fills_its_columns(tmp_path):
  pytest.importorskip("torch", reason="torch not installed: no torch column to check")
  import torch
  threads = torch.get_num_threads()
  cf.run(str(tmp_path), reps=1, quick=True, torch_threads=1, experiments=["upsample", "conv"])
  assert torch.get_num_threads() == threads  # restored
  table, md = _read(tmp_path)
  assert [(r["experiment"], r["shape"], r["pass"]) for r in table] == [
      e for e in _expected_rows() if e[0] in ("upsample", "conv")]
  for r in table:
    assert float(r["torch_ms"]) > 0 and r["torch_impl"]
    assert float(r["jaxcd_torch_ratio"]) == pytest.approx(
        float(r["torch_ms"]) / float(r["jaxcd_ms"]), rel=1e-9)
    assert float(r["torch_max_abs_diff"]) <= 100 * TORCH_TOL, r
  assert "1 threads" in md[0]


def test_torch_ops_compute_jaxcds_on_every_experiment():
  torch = pytest.importorskip("torch", reason="torch not installed: nothing to compare")
  for c in cf.build_cases(cf.quick_shapes())[::2]:  # one shape of each experiment and more
    g = cf._cotangent(c)
    _, grads = _out_and_grads(c.current, c.inputs, g)
    perms = c.torch_perms
    t_grads = [t.numpy() for t in cf.torch_pass(torch, c, g, backward=True)()]
    assert _rel_diff(grads, [cf._untx(d, p) for d, p in zip(t_grads, perms)]) <= TORCH_TOL, c
    (t_out,) = cf.torch_pass(torch, c, g, backward=False)()
    assert _rel_diff([np.asarray(c.current(*c.inputs))],
                     [cf._untx(t_out.numpy(), c.torch_out_perm)]) <= TORCH_TOL, c


def test_bad_input_names_the_flag():
  with pytest.raises(ConfigError, match=r"^--experiments: choose from upsample, layernorm"):
    cf.parse_experiments("upsample,nope")
  with pytest.raises(ConfigError, match=r"^--experiments: choose from"):
    cf.parse_experiments(" , ")
  with pytest.raises(ConfigError, match=r"^--reps must be positive, got 0"):
    cf.run("/nonexistent/never-written", reps=0)
  with pytest.raises(ConfigError, match=r"^--torch_threads must be positive, got -1"):
    cf.check_args(5, -1)
