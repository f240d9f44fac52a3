"""FC-EF, FC-Siam-conc, FC-Siam-diff (Daudt et al. 2018): parameter counts from the paper's layer
list, output shapes on even and odd sizes, siamese weight sharing, bfloat16."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd.models import get_model
from jaxcd.models.layers import count_params

MODELS = ("fc_ef", "fc_siam_conc", "fc_siam_diff")

# The networks of Daudt, Le Saux & Boulch (ICIP 2018), layer by layer as in the authors' code:
# (name, kind, input channels, output channels, batchnorm). All kernels 3x3 with bias.
# In the decoder "skip" is a skip connection's width: it is doubled by siamese concatenation.
# `in` is the bands of one date (x2 for early fusion), `K` the number of classes.
ENCODER = [
    ("conv11", "conv", "in", 16, True), ("conv12", "conv", 16, 16, True),
    ("conv21", "conv", 16, 32, True), ("conv22", "conv", 32, 32, True),
    ("conv31", "conv", 32, 64, True), ("conv32", "conv", 64, 64, True),
    ("conv33", "conv", 64, 64, True),
    ("conv41", "conv", 64, 128, True), ("conv42", "conv", 128, 128, True),
    ("conv43", "conv", 128, 128, True),
]
DECODER = [
    ("upconv4", "convT", 128, 128, False),
    ("conv43d", "conv", "128+skip128", 128, True), ("conv42d", "conv", 128, 128, True),
    ("conv41d", "conv", 128, 64, True),
    ("upconv3", "convT", 64, 64, False),
    ("conv33d", "conv", "64+skip64", 64, True), ("conv32d", "conv", 64, 64, True),
    ("conv31d", "conv", 64, 32, True),
    ("upconv2", "convT", 32, 32, False),
    ("conv22d", "conv", "32+skip32", 32, True), ("conv21d", "conv", 32, 16, True),
    ("upconv1", "convT", 16, 16, False),
    ("conv12d", "conv", "16+skip16", 16, True), ("conv11d", "conv", 16, "K", False),
]


def paper_param_count(name: str, bands: int = 3, num_classes: int = 2) -> int:
  in_ch = 2 * bands if name == "fc_ef" else bands  # early fusion stacks the two dates
  skip_factor = 2 if name == "fc_siam_conc" else 1  # conc: [A, B] skips; diff: |A - B|

  def width(w) -> int:
    if w == "in":
      return in_ch
    if w == "K":
      return num_classes
    if isinstance(w, str):  # "up+skipN": upsampled map concatenated with the skip
      up, skip = w.split("+skip")
      return int(up) + skip_factor * int(skip)
    return w

  total = 0
  # The siamese networks share ONE encoder between the dates, so it is counted once.
  for _, kind, cin, cout, bn in ENCODER + DECODER:
    cin, cout = width(cin), width(cout)
    total += 3 * 3 * cin * cout + cout  # conv or transposed conv: weights + bias
    total += 2 * cout if bn else 0  # BatchNorm scale + bias (running stats are not params)
  return total


def _abstract_params(model, size_hw=(64, 64), bands: int = 3):
  x = jax.ShapeDtypeStruct((1, *size_hw, bands), jnp.float32)
  return jax.eval_shape(lambda a, b: model.init(jax.random.key(0), a, b, train=False), x, x)


@pytest.mark.parametrize("name,paper_millions", [("fc_ef", 1.35), ("fc_siam_conc", 1.55),
                                                 ("fc_siam_diff", 1.35)])
def test_param_counts_match_the_paper(name, paper_millions):
  variables = _abstract_params(get_model(name))
  n = count_params(variables["params"])
  assert n == paper_param_count(name)
  assert round(n / 1e6, 2) == paper_millions
  # Fully convolutional: the count does not depend on the input size or aspect.
  assert count_params(_abstract_params(get_model(name), (70, 50))["params"]) == n


def test_param_counts_follow_bands_and_classes():
  for name in MODELS:
    variables = _abstract_params(get_model(name, num_classes=3), bands=4)
    assert count_params(variables["params"]) == paper_param_count(name, bands=4, num_classes=3)


def _random_variables(model, seed: int):
  """Variables of the model's own shapes with He-scaled random kernels and biases, unit BN
  statistics: what `init` would give, without compiling its threefry RNG (tens of seconds on CPU
  for these nets; initialisation is not what these tests are about)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), leaf.dtype)
    if name in ("bias", "mean"):
      return jnp.asarray(rng.normal(0, 0.1, leaf.shape), leaf.dtype)
    return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)  # BN scale, var
  return jax.tree_util.tree_map_with_path(fill, _abstract_params(model))


def _pair(shape, seed=0):
  ka, kb = jax.random.split(jax.random.key(seed))
  return jax.random.normal(ka, shape), jax.random.normal(kb, shape)


@pytest.fixture(scope="module")
def initialized():
  """name -> (model, variables); the sizes of the inputs do not change the parameters."""
  out = {}
  for name in MODELS:
    model = get_model(name)
    out[name] = (model, _random_variables(model, seed=1))
  return out


@pytest.mark.parametrize("name", MODELS)
# (70, 50): odd, the decoder pads to the skip sizes (slow tier: 15 s more on 2 cores)
@pytest.mark.parametrize("hw", [(64, 64), pytest.param((70, 50), marks=pytest.mark.slow)])
def test_shapes_and_finite_train_and_eval(initialized, name, hw):
  model, variables = initialized[name]
  a, b = _pair((2, *hw, 3), seed=2)
  out = model.apply(variables, a, b, train=False)
  assert out["logits"].shape == (2, *hw, 2) and out["logits"].dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out["logits"])))
  out_t, upd = model.apply(variables, a, b, train=True, rngs={"dropout": jax.random.key(3)},
                           mutable=["batch_stats"])
  assert out_t["logits"].shape == (2, *hw, 2)
  assert bool(jnp.all(jnp.isfinite(out_t["logits"])))
  # Training mode updates the BatchNorm running statistics (and uses batch statistics).
  before = jax.tree_util.tree_leaves(variables["batch_stats"])
  after = jax.tree_util.tree_leaves(upd["batch_stats"])
  assert len(before) == len(after) and any(not np.allclose(x, y) for x, y in zip(before, after))
  assert not np.allclose(out_t["logits"], out["logits"])


def test_siamese_encoder_is_shared():
  # With |A - B| at every level (skips and bottleneck) and ONE encoder for both dates, swapping
  # the dates cannot change anything; two encoders (or early fusion) would.
  model = get_model("fc_siam_diff", bottleneck="diff")
  a, b = _pair((2, 64, 64, 3), seed=4)
  variables = _random_variables(model, seed=5)
  assert sorted(variables["params"]) == ["decoder", "encoder"]
  ab = model.apply(variables, a, b, train=False)["logits"]
  ba = model.apply(variables, b, a, train=False)["logits"]
  np.testing.assert_array_equal(np.asarray(ab), np.asarray(ba))

  ef = get_model("fc_ef")
  ef_vars = _random_variables(ef, seed=5)
  ef_ab = ef.apply(ef_vars, a, b, train=False)["logits"]
  ef_ba = ef.apply(ef_vars, b, a, train=False)["logits"]
  assert float(jnp.max(jnp.abs(ef_ab - ef_ba))) > 1e-3


@pytest.mark.slow  # bfloat16 is also covered by the Dsfer-Net and RCR tests
@pytest.mark.parametrize("name", MODELS)
def test_bfloat16_compute_float32_logits(initialized, name):
  _, variables = initialized[name]
  model16 = get_model(name, dtype=jnp.bfloat16)
  a, b = _pair((2, 64, 64, 3), seed=6)
  out = model16.apply(variables, a, b, train=False)["logits"]  # float32 params, bf16 compute
  assert out.dtype == jnp.float32 and out.shape == (2, 64, 64, 2)
  assert bool(jnp.all(jnp.isfinite(out)))
  ref = initialized[name][0].apply(variables, a, b, train=False)["logits"]
  rel = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
  assert 0 < rel < 0.1  # really computed in bf16 (not identical), yet the same network
  # Its own init keeps float32 parameters.
  params16 = _abstract_params(model16)["params"]
  assert {x.dtype for x in jax.tree_util.tree_leaves(params16)} == {jnp.dtype(jnp.float32)}


def test_torch_reference_has_the_same_parameter_count():
  # The PyTorch FC-Siam-diff that jaxcd.experiments.vs_torch times against jaxcd's: the same
  # network, so the same count (the paper-checked 1,350,146 of jaxcd.models.fc_siam).
  pytest.importorskip("torch", reason="torch not installed (pip install 'jaxcd[torch]')")
  try:
    from tests.torch_reference import fc_siam_ref
  except ImportError:
    from torch_reference import fc_siam_ref
  # model.init traced for shapes only: the same parameter tree, without compiling its RNG.
  n_jax = count_params(_abstract_params(get_model("fc_siam_diff"))["params"])
  n_torch = fc_siam_ref.count_params(fc_siam_ref.SiamUnetDiff(bands=3, num_classes=2))
  assert n_torch == n_jax == 1_350_146
