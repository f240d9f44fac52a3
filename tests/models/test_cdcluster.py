"""CDCluster network: parameter count derived layer by layer from the paper's description, shapes
for any band count, the feature-only path, Sobel on a known edge, CBAM gates, head re-init."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd.errors import ConfigError
from jaxcd.models import get_model, list_models
from jaxcd.models.attention import CBAM, ChannelGate, Sobel, SpatialGate
from jaxcd.models.cdcluster import reinit_head
from jaxcd.models.layers import count_params


def conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
  return k * k * cin * cout + (cout if bias else 0)


def bn(c: int) -> int:
  return 2 * c  # scale + bias; running statistics are not parameters


def cbam(c: int) -> int:
  h = max(1, c // 16)
  channel_mlp = (c * h + h) + (h * c + c)  # shared MLP C -> C/16 -> C, with biases
  spatial = conv(2, 1, k=7, bias=False) + bn(1)  # [max, mean] -> 7x7 conv -> BN
  return channel_mlp + spatial


def derived_count(bands: int, sobel_channels: int, widths=(16, 32, 64), feat: int = 16,
                  k: int = 20) -> int:
  w1, w2, w3 = widths
  total, cin = 0, bands + sobel_channels
  for w in widths:  # block: conv -> BN -> conv (the encoder is shared by A and B: counted once)
    total += conv(cin, w) + bn(w) + conv(w, w)
    cin = w
  total += cbam(w1) + cbam(w2) + cbam(w3)
  total += conv(w3 + w3, w3) + bn(w3)  # [bottom difference, CBAM skip 3] -> 64
  total += conv(w3, w2)  # transposed 3x3, x2
  total += conv(w2 + w2, w2) + bn(w2)
  total += conv(w2, w1)
  total += conv(w1 + w1, w1) + bn(w1)
  total += conv(w1, feat) + bn(feat)  # the clustered features
  total += (feat * feat + feat) + (feat * k + k)  # MLP head of two 1x1 convs
  return total


def init(model, bands: int = 3, size: int = 64, batch: int = 2, abstract: bool = False):
  """The model's variables: shapes from `model.init` (traced, not run), values drawn with numpy
  (He-normal kernels, unit scales and variances, zero biases and means). Running Flax's
  initialisers op by op costs tens of seconds of compilation on a loaded 2-core machine."""
  x = jnp.zeros((batch, size, size, bands), jnp.float32)
  shapes = jax.eval_shape(lambda key: model.init(key, x, x, train=False), jax.random.key(0))
  if abstract:
    return shapes
  rng = np.random.default_rng(bands)

  def value(path, s):
    name = jax.tree_util.keystr(path[-1:])
    if name == "['kernel']":
      return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype)
    return jnp.full(s.shape, 1.0 if name in ("['scale']", "['var']") else 0.0, s.dtype)
  return jax.tree_util.tree_map_with_path(value, shapes)


def test_registered_and_param_count_matches_the_derivation():
  assert "cdcluster" in list_models()
  # RGB + Sobel magnitude = the paper's four channels.
  v = init(get_model("cdcluster"), abstract=True)
  assert derived_count(3, 1) == 196_695
  assert count_params(v["params"]) == derived_count(3, 1)
  v = init(get_model("cdcluster", sobel="gradients", num_clusters=7, features=8), bands=1,
           abstract=True)
  assert count_params(v["params"]) == derived_count(1, 2, feat=8, k=7)


@pytest.mark.parametrize("bands", [pytest.param(1, marks=pytest.mark.slow), 3, 4])  # 1: 11 s
def test_any_band_count_shapes_and_features_path(bands):
  model = get_model("cdcluster", num_clusters=5, features=8, num_classes=2)
  v = init(model, bands)
  rng = np.random.default_rng(bands)
  a = jnp.asarray(rng.normal(size=(2, 64, 64, bands)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(2, 64, 64, bands)), jnp.float32)
  out = model.apply(v, a, b, train=False)
  assert out["logits"].shape == (2, 64, 64, 5) and out["logits"].dtype == jnp.float32
  assert out["features"].shape == (2, 64, 64, 8)
  assert np.isfinite(np.asarray(out["logits"])).all()
  feat = model.apply(v, a, b, train=False, method="features")
  np.testing.assert_allclose(np.asarray(feat), np.asarray(out["features"]), rtol=1e-6, atol=1e-6)
  # Identical dates: every A-B difference is 0, so the output cannot depend on the image.
  same1 = model.apply(v, a, a, train=False)["features"]
  same2 = model.apply(v, b, b, train=False)["features"]
  np.testing.assert_allclose(np.asarray(same1), np.asarray(same2), atol=1e-5)
  assert not np.allclose(np.asarray(same1), np.asarray(feat), atol=1e-3)


def test_odd_size_and_train_mode_updates_batch_stats():
  model = get_model("cdcluster", num_clusters=4)
  v = init(model, 3, size=66)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 66, 66, 3)), jnp.float32)
  out, upd = model.apply(v, x, x[::-1], train=True, mutable=["batch_stats"])
  assert out["logits"].shape == (2, 66, 66, 4)
  # The features end with BatchNorm (no ReLU): in train mode each channel is standardised.
  f = np.asarray(out["features"])
  np.testing.assert_allclose(f.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(f.std(axis=(0, 1, 2)), 1.0, atol=1e-2)
  assert (f < 0).mean() > 0.2
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b),
                                   v["batch_stats"], upd["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))


def test_bad_model_fields():
  with pytest.raises(ConfigError, match="config.model.sobel"):
    get_model("cdcluster", sobel="laplace")
  with pytest.raises(ConfigError, match="config.model.widths"):
    get_model("cdcluster", widths=(16, 32))


def test_sobel_of_a_vertical_edge():
  img = np.zeros((1, 8, 10, 3), np.float32)
  img[:, :, 5:, :] = 1.0  # dark left, bright right: a vertical edge between columns 4 and 5
  grads = np.asarray(Sobel("gradients").apply({}, jnp.asarray(img)))
  gx, gy = grads[0, ..., 0], grads[0, ..., 1]
  expected_gx = np.zeros((8, 10), np.float32)
  expected_gx[:, 4:6] = 4.0  # (1 + 2 + 1) x the unit step, on both columns beside the edge
  np.testing.assert_allclose(gx, expected_gx)
  np.testing.assert_allclose(gy, 0.0)  # edge padding: the image border is not an edge
  mag = np.asarray(Sobel("magnitude").apply({}, jnp.asarray(img)))
  assert mag.shape == (1, 8, 10, 1)
  np.testing.assert_allclose(mag[0, ..., 0], expected_gx)
  # The grey image is the band mean: one bright band out of three gives a third of the edge.
  img1 = np.zeros_like(img)
  img1[:, :, 5:, 0] = 1.0
  np.testing.assert_allclose(np.asarray(Sobel("magnitude").apply({}, jnp.asarray(img1)))[0, ..., 0],
                             expected_gx / 3, rtol=1e-6)


def test_cbam_gates_in_unit_interval_and_shapes():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 32)) * 5, jnp.float32)
  cg = ChannelGate()
  g = np.asarray(cg.apply(cg.init(jax.random.key(0), x), x))
  assert g.shape == (2, 1, 1, 32) and (g >= 0).all() and (g <= 1).all()
  sg = SpatialGate()
  vs = sg.init(jax.random.key(1), x, train=False)
  s, _ = sg.apply(vs, x, train=True, mutable=["batch_stats"])
  s = np.asarray(s)
  assert s.shape == (2, 16, 16, 1) and (s >= 0).all() and (s <= 1).all()
  assert s.std() > 0.01  # a real per-pixel gate, not a constant
  m = CBAM()
  vm = m.init(jax.random.key(2), x, train=False)
  y = np.asarray(m.apply(vm, x, train=False))
  # Two multiplicative gates in [0, 1]: |y| <= |x| everywhere.
  assert y.shape == x.shape and (np.abs(y) <= np.abs(np.asarray(x)) + 1e-6).all()


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_reinit_head_only_touches_the_top_layer():
  model = get_model("cdcluster", num_clusters=6)
  params = init(model)["params"]
  new = reinit_head(params, jax.random.key(7))
  flat_old = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_new = dict(jax.tree_util.tree_flatten_with_path(new)[0])
  for path, leaf in flat_old:
    name = jax.tree_util.keystr(path)
    same = np.array_equal(np.asarray(leaf), np.asarray(flat_new[path]))
    assert same == (name != "['head']['fc2']['kernel']"), name  # the bias stays 0
  top = new["head"]["fc2"]
  assert top["kernel"].shape == (16, 6)
  np.testing.assert_array_equal(np.asarray(top["bias"]), 0.0)
  assert 0.005 < float(jnp.std(top["kernel"])) < 0.02  # N(0, 0.01), as DeepCluster
  wider = reinit_head(params, jax.random.key(7), num_clusters=9)
  assert wider["head"]["fc2"]["kernel"].shape == (16, 9)
  out = get_model("cdcluster", num_clusters=9).apply(
      {**init(model), "params": wider}, jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 3)))
  assert out["logits"].shape == (1, 64, 64, 9)
