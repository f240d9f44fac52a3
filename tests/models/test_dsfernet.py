"""Dsfer-Net: parameter count, shapes, modes, the align-corners upsampling, and its loss.

Parity with the official model's weights and outputs is in tests/test_convert.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd import losses
from jaxcd.errors import ConfigError
from jaxcd.models import get_model
from jaxcd.models.dsfernet import DsferNet, resize_bilinear_align_corners, upsample2x
from jaxcd.models.layers import count_params

S = 64  # test input size; the "chw" LayerNorms are built for it


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _shapes(model, size):
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)


def _torch_ref():
  pytest.importorskip("torch", reason="torch not installed (pip install 'jaxcd[torch]')")
  try:
    from tests.torch_reference import dsfernet_ref
  except ImportError:
    from torch_reference import dsfernet_ref
  return dsfernet_ref


@pytest.fixture(scope="module")
def pair():
  ka, kb = jax.random.split(jax.random.key(42))
  return jax.random.normal(ka, (2, S, S, 3)), jax.random.normal(kb, (2, S, S, 3))


def _random_variables(model, size, seed=0):
  """Random variables with the structure `init` declares (compiling `init` takes 10-30 s here):
  He-normal kernels keep activations O(1) through the 13 VGG convs; running variances > 0."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name in ("kernel", "Wq", "Wk", "Wv"):
      gain = 1.0 if name.startswith("W") else 2.0
      x = rng.standard_normal(s.shape) * np.sqrt(gain / np.prod(s.shape[:-1]))
    elif name == "var":
      x = rng.uniform(0.5, 1.5, s.shape)
    elif name == "scale":
      x = 1.0 + 0.1 * rng.standard_normal(s.shape)
    else:  # biases, running means
      x = 0.1 * rng.standard_normal(s.shape)
    return jnp.asarray(x, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, _shapes(model, size))


@pytest.fixture(scope="module")
def variables():
  return _random_variables(DsferNet(input_size=S), S)


def test_parameter_count_is_the_official_one():
  v = _shapes(DsferNet(), 256)
  # Measured on the official PyTorch MyNet (sum of p.numel() over model.parameters()).
  assert count_params(v["params"]) == 34_085_990
  # BatchNorm running statistics are buffers in PyTorch, not parameters.
  assert set(v) == {"params", "batch_stats"}


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_size_independent_layernorm_variant():
  counts = {s: count_params(_shapes(DsferNet(layernorm="c"), s)["params"]) for s in (64, 128, 256)}
  assert len(set(counts.values())) == 1
  official = count_params(_shapes(DsferNet(input_size=64), 64)["params"])
  assert counts[64] < official  # C-sized affines instead of (C,H,W)-sized ones
  # Runs at a size other than input_size, which the official variant refuses.
  model = DsferNet(layernorm="c")
  v = _random_variables(model, 32)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 32, 32, 3)), jnp.float32)
  out = jax.jit(model.apply)(v, x, -x)
  assert out["logits"].shape == (1, 32, 32, 2) and bool(jnp.all(jnp.isfinite(out["logits"])))


def test_official_layernorm_rejects_other_sizes():
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  with pytest.raises(ConfigError, match="config.model.input_size"):
    jax.eval_shape(lambda a: DsferNet(input_size=256).init(jax.random.key(0), a, a), x)
  with pytest.raises(ConfigError, match="config.model.layernorm"):
    jax.eval_shape(lambda a: DsferNet(layernorm="hw").init(jax.random.key(0), a, a), x)


def test_forward_shapes_eval_and_train(pair, variables):
  a, b = pair
  model = DsferNet(input_size=S)
  forward = jax.jit(lambda v, a, b: model.apply(v, a, b, train=False))
  out = forward(variables, a, b)
  assert {k: v.shape for k, v in out.items()} == {
      "logits": (2, S, S, 2), "aux4": (2, S // 8, S // 8, 2), "aux5": (2, S // 16, S // 16, 2)}
  assert all(v.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(v))) for v in out.values())
  out_t, upd = jax.jit(lambda v, a, b: model.apply(v, a, b, train=True, mutable=["batch_stats"]))(
      variables, a, b)
  # Training mode normalises with batch statistics and moves the running averages.
  assert _rel(out_t["logits"], out["logits"]) > 1e-3
  old, new = variables["batch_stats"]["dec5"]["bn"]["mean"], upd["batch_stats"]["dec5"]["bn"]["mean"]
  assert float(jnp.max(jnp.abs(new - old))) > 0
  # Swapping the dates changes the output (the decoder concatenates (A, B) in order).
  swapped = forward(variables, b, a)
  assert _rel(swapped["logits"], out["logits"]) > 1e-4


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_bfloat16_compute_tracks_float32(pair, variables):
  a, b = pair
  f32 = jax.jit(DsferNet(input_size=S).apply)(variables, a, b)
  bf16 = jax.jit(DsferNet(input_size=S, dtype="bfloat16").apply)(variables, a, b)
  for k in f32:
    assert bf16[k].dtype == jnp.float32
    assert _rel(bf16[k], f32[k]) < 5e-2, k  # measured ~1e-2 at most


def test_registry():
  assert isinstance(get_model("dsfernet", input_size=128), DsferNet)


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_gradients_reach_every_parameter(pair, variables):
  a, b = pair
  model = DsferNet(input_size=S)
  labels = (jax.random.uniform(jax.random.key(3), (2, S, S)) > 0.8).astype(jnp.int32)

  def loss_fn(params):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, a, b,
                         train=True, mutable=["batch_stats"])
    return losses.dsfernet_loss(out, labels, (1.0, 10.0), 0.5)

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
  assert bool(jnp.isfinite(loss))
  norms = jax.tree_util.tree_leaves_with_path(jax.tree_util.tree_map(jnp.linalg.norm, grads))
  dead = [jax.tree_util.keystr(p) for p, n in norms if not (np.isfinite(n) and n > 0)]
  assert not dead


def test_upsample_reproduces_affine_maps_with_aligned_corners():
  # Bilinear interpolation is exact on affine functions; with align_corners=True output pixel i
  # samples input coordinate i * (h - 1) / (2h - 1), so the corners coincide (half-pixel would not).
  h, w = 5, 7
  ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  x = np.stack([3.0 * ii + 5.0 * jj, -2.0 * ii + 1.0], -1)[None].astype(np.float32)
  y = np.asarray(upsample2x(jnp.asarray(x)))
  assert y.shape == (1, 2 * h, 2 * w, 2)
  si = np.arange(2 * h) * (h - 1) / (2 * h - 1)
  sj = np.arange(2 * w) * (w - 1) / (2 * w - 1)
  gi, gj = np.meshgrid(si, sj, indexing="ij")
  np.testing.assert_allclose(y[0, ..., 0], 3.0 * gi + 5.0 * gj, atol=1e-5)
  np.testing.assert_allclose(y[0, ..., 1], -2.0 * gi + 1.0, atol=1e-5)
  np.testing.assert_allclose(y[0, [0, -1]][:, [0, -1]], x[0, [0, -1]][:, [0, -1]])


def test_upsample_matches_torch_align_corners():
  pytest.importorskip("torch", reason="torch not installed (pip install 'jaxcd[torch]')")
  import torch
  import torch.nn.functional as F
  x = np.random.default_rng(0).standard_normal((2, 3, 4, 6)).astype(np.float32)  # NCHW
  want = F.interpolate(torch.from_numpy(x), scale_factor=2, mode="bilinear", align_corners=True)
  got = upsample2x(jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(np.asarray(got), want.numpy().transpose(0, 2, 3, 1), atol=1e-6)
  want = F.interpolate(torch.from_numpy(x), size=(9, 5), mode="bilinear", align_corners=True)
  got = resize_bilinear_align_corners(jnp.asarray(x.transpose(0, 2, 3, 1)), 9, 5)
  np.testing.assert_allclose(np.asarray(got), want.numpy().transpose(0, 2, 3, 1), atol=1e-6)


# ---- loss ---------------------------------------------------------------------------------------

def _onehot(y):
  return jax.nn.one_hot(y, 2)


def test_dice_extremes_from_its_definition():
  y = (np.random.default_rng(0).random((2, 8, 8)) > 0.7).astype(np.int32)
  t = _onehot(y)
  # A confident, correct prediction (p = t): with n pixels of class k, sum p t = n and
  # sum p^2 + t^2 = 2n, so the loss is 1 - (n+1)/(2n+1): this Dice form bottoms out near 0.5.
  perfect = losses.dice_loss(60.0 * (2 * t - 1), t)
  n_BxK = np.stack([(y == 0).sum((1, 2)), (y == 1).sum((1, 2))], -1)
  np.testing.assert_allclose(perfect, np.mean(1 - (n_BxK + 1) / (2 * n_BxK + 1)), rtol=1e-6)
  # Completely wrong: p = 1 - t, so sum p t = 0 and sum p^2 + t^2 = 64 per class.
  wrong = losses.dice_loss(-60.0 * (2 * t - 1), t)
  np.testing.assert_allclose(wrong, 1 - 1 / 65, rtol=1e-6)


def test_max_pool_labels_treats_ignore_as_unchanged():
  y = np.zeros((1, 32, 32), np.int32)
  y[0, :16, :16] = 255  # an ignored cell
  y[0, :16, 16:] = 255
  y[0, 3, 20] = 1  # one changed pixel among ignored ones
  y[0, 20, 2] = 1
  got = np.asarray(losses.max_pool_labels(jnp.asarray(y), 16))
  np.testing.assert_array_equal(got, [[[0, 1], [1, 0]]])
  got8 = np.asarray(losses.max_pool_labels(jnp.asarray(y[:, :, :30]), 8))  # remainder is cropped
  assert got8.shape == (1, 4, 3) and got8.sum() == 2


def test_dsfernet_loss_matches_torch():
  ref = _torch_ref()
  import torch
  import torch.nn.functional as F
  rng = np.random.default_rng(1)
  b, s = 2, 32
  out = {"logits": rng.standard_normal((b, s, s, 2)), "aux4": rng.standard_normal((b, 4, 4, 2)),
         "aux5": rng.standard_normal((b, 2, 2, 2))}
  y = (rng.random((b, s, s)) > 0.9).astype(np.int64)
  y[0, :5, :7] = 255
  weights, lam = (1.048, 21.79), 0.3
  got = losses.dsfernet_loss({k: jnp.asarray(v, jnp.float32) for k, v in out.items()},
                             jnp.asarray(y), weights, lam)

  nchw = lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2)).float()
  ce = torch.nn.CrossEntropyLoss(torch.tensor(weights), ignore_index=255)(nchw(out["logits"]),
                                                                            torch.from_numpy(y))
  y0 = torch.from_numpy(np.where(y == 255, 0, y))[:, None].float()
  onehot = lambda t: F.one_hot(t[:, 0].long(), 2).permute(0, 3, 1, 2).float()
  dice = (ref.dice_loss(nchw(out["aux4"]), onehot(F.max_pool2d(y0, 8)))
          + ref.dice_loss(nchw(out["aux5"]), onehot(F.max_pool2d(y0, 16))))
  np.testing.assert_allclose(float(got), float(ce + lam * 0.5 * dice), rtol=1e-5)
