"""FC-EF-Res / FresUNet (Daudt et al. 2019): parameter count from the authors' block list, shapes on
even and odd sizes, BatchNorm statistics in training, bfloat16."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd.models import get_model
from jaxcd.models.layers import count_params


def _conv(cin: int, cout: int, k: int) -> int:
  return k * k * cin * cout + cout  # all convs of FresUNet have a bias


def _bn(c: int) -> int:
  return 2 * c  # scale + bias (running statistics are not parameters)


def _res_down(cin: int, cout: int) -> int:
  # BasicBlock_ss: conv3-BN, conv3-BN, plus a 1x1 "couple" conv + BN when the width changes.
  n = _conv(cin, cout, 3) + _bn(cout) + _conv(cout, cout, 3) + _bn(cout)
  return n + (_conv(cin, cout, 1) + _bn(cout) if cin != cout else 0)


def _res_up(cin: int) -> int:
  # BasicBlock_us: transposed conv3 (cin -> cin/2)-BN, conv3-BN, transposed-conv3 shortcut + BN.
  c = cin // 2
  return 2 * (_conv(cin, c, 3) + _bn(c)) + _conv(c, c, 3) + _bn(c)


def fresunet_param_count(bands: int = 3, classes: int = 2) -> int:
  """The authors' FresUNet(2 * bands, classes), block by block (fresunet.py, base_depth 8)."""
  enc = [(2 * bands, 8), (8, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128)]
  dec_res = [(128, 128), (64 + 64, 64), (32 + 32, 32), (16 + 16, 16)]  # upsampled + skip
  dec_up = [128, 64, 32, 16]
  return (sum(_res_down(i, o) for i, o in enc + dec_res) + sum(_res_up(c) for c in dec_up)
          + _conv(8 + 8, classes, 1))


def _variables(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)


def test_param_count_matches_the_authors_layers():
  v = _variables(get_model("fc_ef_res"), (1, 64, 64, 3))
  expected = fresunet_param_count()
  assert count_params(v["params"]) == expected
  assert round(expected / 1e6, 2) == 1.10  # Dsfer-Net paper, Table II
  # More bands widen only the first block's convs (early fusion stacks 2 x bands).
  v4 = _variables(get_model("fc_ef_res"), (1, 64, 64, 4))
  assert count_params(v4["params"]) == fresunet_param_count(bands=4)


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_shapes_even_and_odd_and_train_mode_updates_stats():
  model = get_model("fc_ef_res")
  rng = np.random.default_rng(0)
  for size in (64, 37):  # odd sizes: pooled maps floor, upsampled maps are edge-padded back
    a = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)
    v = model.init(jax.random.key(1), a, b)
    out, upd = model.apply(v, a, b, train=True, mutable=["batch_stats"])
    assert out["logits"].shape == (2, size, size, 2)
    assert np.isfinite(np.asarray(out["logits"])).all()
    before = v["batch_stats"]["encres1_1"]["bn1"]["mean"]
    after = upd["batch_stats"]["encres1_1"]["bn1"]["mean"]
    assert not np.allclose(before, after)  # running statistics move in training
  # Early fusion is not symmetric in the dates: swapping A and B changes the map.
  swapped = model.apply(v, b, a)["logits"]
  assert not np.allclose(model.apply(v, a, b)["logits"], swapped)


@pytest.mark.slow  # bfloat16 is also covered by the Dsfer-Net and RCR tests
def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = get_model("fc_ef_res", dtype=jnp.bfloat16)
  a = jnp.ones((1, 32, 32, 3), jnp.float32)
  v = model.init(jax.random.key(0), a, a)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(v["params"]))
  out = model.apply(v, a, 0.5 * a)["logits"]
  assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()
