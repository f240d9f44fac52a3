"""SNUNet-CD (ECAM): parameter counts against the official architecture (a torch re-statement
with the official module names) and the paper, shapes, the hybrid loss, and numerical parity
with the torch reference after converting its random parameters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd import losses
from jaxcd.models import get_model
from jaxcd.models.layers import count_params

from .variables import abstract_variables, random_variables

TORCH_REASON = "torch not installed (pip install 'jaxcd[torch]'); parity needs the PyTorch reference"


def nested_count(width: int, bands: int = 3, k: int = 2) -> int:
  """The official SNUNet_ECAM's layer list, counted by hand: NestedBlock(in, mid, out) is two
  3x3 convs with bias and two BatchNorms; Up is ConvTranspose2d(C, C, 2, stride=2) with bias."""
  f = [width * 2 ** i for i in range(5)]
  block = lambda cin, c: 9 * cin * c + c + 2 * c + 9 * c * c + c + 2 * c  # noqa: E731
  n = block(bands, f[0]) + sum(block(f[i - 1], f[i]) for i in range(1, 5))
  for i in range(4):
    for j in range(1, 5 - i):
      n += block(f[i] * (j + 1) + f[i + 1], f[i]) + 4 * f[i + 1] ** 2 + f[i + 1]
  ca = lambda c, r: 2 * c * (c // r)  # noqa: E731
  return n + ca(4 * f[0], 16) + ca(f[0], 4) + 4 * f[0] * k + k


@pytest.mark.parametrize("width,paper_millions", [(16, 3.01), (32, 12.03)])
def test_param_count_matches_the_official_layer_list_and_paper(width, paper_millions):
  n = count_params(abstract_variables(get_model("snunet", width=width))["params"])
  assert n == nested_count(width)  # 32: 12,034,978; 16: 3,012,178
  assert round(n / 1e6, 2) == paper_millions  # SNUNet-CD paper, Table (SNUNet-CD/16, /32)


def test_param_count_matches_the_torch_reference():
  pytest.importorskip("torch", reason=TORCH_REASON)
  from tests.torch_reference.snunet_ref import SNUNetECAM
  for width in (8, 32):
    ref = sum(p.numel() for p in SNUNetECAM(width=width).parameters())
    assert count_params(abstract_variables(get_model("snunet", width=width))["params"]) == ref


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_shapes_and_siamese_sharing():
  model = get_model("snunet", width=4)
  a = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  v = random_variables(model)
  out, upd = model.apply(v, a, a[::-1], train=True, mutable=["batch_stats"])
  assert out["logits"].shape == (2, 64, 64, 2) and out["logits"].dtype == jnp.float32
  assert set(upd["batch_stats"]) == set(v["batch_stats"])
  assert "conv4_0" in v["params"] and "conv0_0" in v["params"]  # one encoder for both dates


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_odd_sizes_and_bfloat16_shapes(dtype):
  model = get_model("snunet", width=4, dtype=dtype)
  x = jax.ShapeDtypeStruct((1, 50, 70, 3), jnp.float32)
  out = jax.eval_shape(lambda a, b: model.init_with_output(jax.random.key(0), a, b)[0], x, x)
  assert out["logits"].shape == (1, 50, 70, 2) and out["logits"].dtype == jnp.float32


def test_snunet_loss_is_ce_plus_dice():
  logits = jax.random.normal(jax.random.key(0), (2, 8, 8, 2))
  labels = (jax.random.uniform(jax.random.key(1), (2, 8, 8)) > 0.7).astype(jnp.int32)
  fn = losses.from_config({"name": "snunet", "class_weights": (), "ignore_label": 255})
  total, parts = fn({"logits": logits}, labels)
  p = np.asarray(jax.nn.softmax(logits, -1))
  t = np.eye(2)[np.asarray(labels)]
  dice = 1 - np.mean(2 * (p * t).sum((0, 1, 2)) / ((p + t).sum((0, 1, 2)) + 1e-7))
  np.testing.assert_allclose(parts["dice"], dice, rtol=1e-5)
  np.testing.assert_allclose(parts["ce"], losses.cross_entropy(logits, labels), rtol=1e-6)
  np.testing.assert_allclose(total, parts["ce"] + parts["dice"], rtol=1e-6)
  # Ignored pixels change neither term.
  ignored = labels.at[0, :2].set(255)
  shifted = logits.at[0, :2].add(5.0)
  np.testing.assert_allclose(fn({"logits": logits}, ignored)[0], fn({"logits": shifted}, ignored)[0],
                             rtol=1e-6)


# Max |jaxcd - torch| over max(1, largest |torch|): float32 rounding.
PARITY_TOLERANCE = 1e-4


def parity_run(width: int = 32, batch: int = 2, hw: tuple[int, int] = (64, 64)):
  """The torch reference (seed 0, randomized BatchNorm, eval) and jaxcd's model with its
  converted weights on the same random pair; `width` 32 is the official model."""
  import torch
  from jaxcd.weights import snunet_from_official
  from tests.torch_reference import ParityRun, random_pair, randomize_batch_norm
  from tests.torch_reference.snunet_ref import SNUNetECAM
  torch.manual_seed(0)
  ref = SNUNetECAM(width=width)
  randomize_batch_norm(ref)
  ref.eval()
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  model = get_model("snunet", width=width)
  variables = snunet_from_official(sd, abstract_variables(model))
  a, b = random_pair(batch, hw)
  with torch.no_grad():
    want = ref(torch.from_numpy(a), torch.from_numpy(b)).numpy().transpose(0, 2, 3, 1)
  got = model.apply(variables, a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1))
  return ParityRun(ref, {k: np.asarray(v) for k, v in got.items()}, {"logits": want}, (a, b), sd,
                   variables, model.apply)


@pytest.mark.parametrize("width", [4, pytest.param(32, marks=pytest.mark.slow)])  # 32: 10 s
def test_parity_with_the_torch_reference(width):
  pytest.importorskip("torch", reason=TORCH_REASON)
  run = parity_run(width)
  want = run.want["logits"]
  scale = float(np.abs(want).max())
  np.testing.assert_allclose(run.got["logits"], want, atol=PARITY_TOLERANCE * max(scale, 1.0), rtol=0)
