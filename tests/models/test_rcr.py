"""RCR/RCL network: parameter count (RCL paper Table VII), shapes, siamese symmetry, PSP pieces."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd.errors import ConfigError
from jaxcd.models import get_model, list_models
from jaxcd.models.layers import count_params
from jaxcd.models.rcr import RCRNet, adaptive_avg_pool, resize_bilinear

TORCH_REASON = "torch not installed (pip install 'jaxcd[torch]'); the check compares with PyTorch"


def count_from_layer_shapes(width: int = 64, bands: int = 3, classes: int = 2, deep: bool = True) -> int:
  """The spec's layers, counted by hand: conv k*k*in*out (no biases), BatchNorm 2*C."""
  w = width
  if deep:  # 3x3: bands->w (s2), w->w, w->2w
    n = 9 * bands * w + 9 * w * w + 9 * w * 2 * w + 2 * (w + w + 2 * w)
    c = 2 * w
  else:  # 7x7: bands->w
    n, c = 49 * bands * w + 2 * w, w
  for stage, blocks in enumerate((3, 4, 6, 3)):
    p = w * 2 ** stage
    for i in range(blocks):
      n += c * p + 9 * p * p + p * 4 * p + 2 * (p + p + 4 * p)  # 1x1, 3x3, 1x1 x4, three BNs
      if i == 0:
        n += c * 4 * p + 2 * 4 * p  # projection shortcut
      c = 4 * p
  assert c == 32 * w  # 2048 at width 64
  psp = c // 4  # 512
  n += 4 * (c * psp + 2 * psp)  # bins 1, 2, 3, 6: 1x1 conv + BN each
  n += 9 * (c + 4 * psp) * psp + 2 * psp  # 3x3 bottleneck on the 4096-channel concat
  n += 9 * psp * (w // 2) + (w // 2) * classes  # decoder: 3x3 512->32, 1x1 32->K
  return n


def _shapes(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)


def random_variables(model, shape, seed: int = 0):
  """Random variables from the shapes alone (no compiled init): He-normal kernels, BN near 1/0."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      return (rng.standard_normal(s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(np.float32)
    if name in ("scale", "var"):
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    return (0.1 * rng.standard_normal(s.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, _shapes(model, shape))


def test_registered():
  assert "rcr" in list_models()
  assert isinstance(get_model("rcr", width=8), RCRNet)


def test_param_count_matches_paper():
  n = count_params(_shapes(RCRNet(), (1, 64, 64, 3))["params"])
  assert n == count_from_layer_shapes()
  assert round(n / 1e6, 2) == 46.85  # RCL paper Table VII


@pytest.mark.parametrize("width,bands,deep", [(8, 5, True), (16, 3, False), (64, 4, False)])
def test_param_count_other_configs(width, bands, deep):
  model = RCRNet(width=width, stem="deep" if deep else "standard")
  n = count_params(_shapes(model, (1, 32, 32, bands))["params"])
  assert n == count_from_layer_shapes(width, bands, deep=deep)


@pytest.fixture(scope="module")
def small():
  model = RCRNet(width=8)
  variables = random_variables(model, (1, 64, 64, 4))
  rng = np.random.default_rng(1)
  a, b = (rng.standard_normal((2, 64, 64, 4)).astype(np.float32) for _ in range(2))

  @jax.jit  # one compilation: (eval outputs, (train outputs, updated state))
  def both(v, a, b):
    return (model.apply(v, a, b, train=False),
            model.apply(v, a, b, train=True, mutable=["batch_stats"]))
  return variables, a, b, both


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_shapes_train_and_eval(small):
  variables, a, b, both = small
  out, (out_t, upd) = both(variables, a, b)
  assert out["logits"].shape == (2, 64, 64, 2) and out["logits"].dtype == jnp.float32
  assert out["features"].shape == (2, 8, 8, 64)  # PSP output: 8 * width at H/8
  assert np.isfinite(np.asarray(out["logits"])).all()
  assert out_t["logits"].shape == (2, 64, 64, 2) and np.isfinite(np.asarray(out_t["logits"])).all()
  assert not np.allclose(out_t["logits"], out["logits"])  # batch statistics, not running ones
  assert jax.tree_util.tree_structure(upd["batch_stats"]) == jax.tree_util.tree_structure(
      variables["batch_stats"])
  moved = upd["batch_stats"]["psp"]["bottleneck_bn"]["mean"]
  assert not np.allclose(moved, variables["batch_stats"]["psp"]["bottleneck_bn"]["mean"])


def test_siamese_symmetry(small):
  # diff = |f(A) - f(B)|, and in training each date is normalised with its own statistics.
  variables, a, b, both = small
  (ab, (ab_t, _)), (ba, (ba_t, _)) = both(variables, a, b), both(variables, b, a)
  np.testing.assert_array_equal(ab["logits"], ba["logits"])
  np.testing.assert_array_equal(ab_t["logits"], ba_t["logits"])
  # Identical dates: no difference reaches the head, whatever the images.
  np.testing.assert_allclose(both(variables, a, a)[0]["logits"], both(variables, b, b)[0]["logits"],
                             atol=1e-6)


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_bfloat16_runs():
  model = RCRNet(width=8, dtype=jnp.bfloat16)
  variables = random_variables(model, (1, 32, 32, 3))
  x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
  out = jax.jit(lambda v, a, b: model.apply(v, a, b, train=False))(variables, x, x[:, ::-1])
  assert out["logits"].dtype == jnp.float32 and out["features"].dtype == jnp.bfloat16
  assert np.isfinite(np.asarray(out["logits"])).all()


def test_input_and_field_errors():
  with pytest.raises(ValueError, match="not a multiple of 8"):
    _shapes(RCRNet(width=8), (1, 36, 36, 3))
  with pytest.raises(ConfigError, match="config.model.stem"):
    _shapes(RCRNet(width=8, stem="7x7"), (1, 32, 32, 3))
  with pytest.raises(ConfigError, match="config.model.width"):
    _shapes(RCRNet(width=7), (1, 32, 32, 3))
  # Output stride 16 takes inputs that are multiples of 16 and upsamples x16.
  out = _shapes(RCRNet(width=8, output_stride=16), (1, 32, 32, 3))
  assert out["params"]["decoder"]["conv2"]["kernel"].shape == (1, 1, 4, 2)


def adaptive_pool_loops(x_HxW: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """torch AdaptiveAvgPool2d by its definition: bin i spans [floor(i*H/o), ceil((i+1)*H/o))."""
  h, w = x_HxW.shape
  y = np.zeros((out_h, out_w))
  for i in range(out_h):
    h0, h1 = int(np.floor(i * h / out_h)), int(np.ceil((i + 1) * h / out_h))
    for j in range(out_w):
      w0, w1 = int(np.floor(j * w / out_w)), int(np.ceil((j + 1) * w / out_w))
      y[i, j] = x_HxW[h0:h1, w0:w1].mean()
  return y


@pytest.mark.parametrize("hw,bins", [((7, 7), 3), ((10, 13), 6), ((4, 5), 6), ((9, 6), 1), ((6, 6), 2)])
def test_adaptive_avg_pool_matches_definition(hw, bins):
  x = np.random.default_rng(0).standard_normal((2, *hw, 3)).astype(np.float32)
  got = np.asarray(adaptive_avg_pool(jnp.asarray(x), (bins, bins)))
  assert got.shape == (2, bins, bins, 3)
  for n in range(2):
    for c in range(3):
      np.testing.assert_allclose(got[n, :, :, c], adaptive_pool_loops(x[n, :, :, c], bins, bins),
                                 rtol=1e-6, atol=1e-6)
  # bf16: the same bins within bf16's rounding (the row sums, the bin sums and the result rounded
  # once each), and only bf16 matmul operands in the program and in its gradient's (no float32
  # matmul, no cast of the whole map).
  xb = jnp.asarray(x, jnp.bfloat16)
  got = np.asarray(adaptive_avg_pool(xb, (bins, bins)), np.float32)
  xr = np.asarray(xb, np.float32)
  for n in range(2):
    for c in range(3):
      want = adaptive_pool_loops(xr[n, :, :, c], bins, bins)
      np.testing.assert_allclose(got[n, :, :, c], want, rtol=2 ** -7, atol=2 ** -7)
  hlo = jax.jit(lambda x: adaptive_avg_pool(x, (bins, bins))).lower(xb).as_text()
  dots = [line for line in hlo.splitlines() if "dot_general" in line]
  assert len(dots) == 2 and all("tensor<" in d and "xf32>" not in d.split(":")[-1].split("->")[0]
                                for d in dots), dots
  r = jnp.asarray(np.random.default_rng(1).standard_normal((2, bins, bins, 3)), jnp.float32)
  grad = jax.grad(lambda x: jnp.sum(adaptive_avg_pool(x, (bins, bins)).astype(jnp.float32) * r))
  dots = [line for line in jax.jit(grad).lower(xb).as_text().splitlines() if "dot_general" in line]
  assert len(dots) == 2 and all("xf32>" not in d.split(":")[-1].split("->")[0] for d in dots), dots


def test_adaptive_pool_and_resize_match_torch():
  torch = pytest.importorskip("torch", reason=TORCH_REASON)
  F = torch.nn.functional
  rng = np.random.default_rng(0)
  for hw, bins in (((10, 13), 6), ((4, 5), 6), ((7, 7), 3)):
    x = rng.standard_normal((2, *hw, 3)).astype(np.float32)
    want = F.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), bins).permute(0, 2, 3, 1)
    np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), (bins, bins)), want.numpy(),
                               rtol=1e-5, atol=1e-6)
  # Upsampling (1, 2, 3 bins onto 8x8; x8 in the decoder) and shrinking (6 bins onto 4x5).
  for src, dst in (((1, 1), (8, 8)), ((2, 2), (8, 8)), ((3, 3), (8, 6)), ((4, 5), (32, 40)),
                   ((6, 6), (4, 5))):
    x = rng.standard_normal((2, *src, 3)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=dst, mode="bilinear",
                         align_corners=False).permute(0, 2, 3, 1)
    np.testing.assert_allclose(resize_bilinear(jnp.asarray(x), dst), want.numpy(), rtol=1e-5,
                               atol=1e-6, err_msg=f"{src} -> {dst}")
