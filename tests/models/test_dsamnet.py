"""DSAMNet: parameter count against the official architecture (a torch re-statement with the
official module names), rivals.md's measurement of the official code and Dsfer-Net's Table II;
shapes; its BCL + Dice loss; numerical parity with the torch reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd import losses
from jaxcd.models import get_model
from jaxcd.models.layers import count_params

from .variables import abstract_variables, random_variables

TORCH_REASON = "torch not installed (pip install 'jaxcd[torch]'); parity needs the PyTorch reference"
OFFICIAL = 16_950_728  # the official DSAMNet() measured in torch (reference/rivals.md)


def test_param_count_matches_the_official_code_and_paper():
  n = count_params(abstract_variables(get_model("dsamnet"))["params"])
  assert n == OFFICIAL
  assert round(n / 1e6, 2) == 16.95  # Dsfer-Net Table II


def test_param_count_matches_the_torch_reference():
  pytest.importorskip("torch", reason=TORCH_REASON)
  from tests.torch_reference.dsamnet_ref import DSAMNet
  assert sum(p.numel() for p in DSAMNet().parameters()) == OFFICIAL


@pytest.mark.parametrize("hw", [(64, 64), (50, 70)])
def test_output_shapes(hw):
  model = get_model("dsamnet")
  x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  out = jax.eval_shape(lambda a, b: model.init_with_output(jax.random.key(0), a, b)[0], x, x)
  assert out["logits"].shape == out["ds2"].shape == out["ds3"].shape == (2, *hw, 2)
  assert out["distance"].shape == (2, *hw)


@pytest.mark.slow  # 18 s: a backward pass of the 17 M-parameter model; parity covers the forward
def test_train_step_updates_batch_stats_and_logits_threshold_the_distance():
  model = get_model("dsamnet")
  a = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  v = random_variables(model)
  out, upd = model.apply(v, a, a[::-1], train=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.key(2)})
  assert set(upd["batch_stats"]) == set(v["batch_stats"])
  pred = np.argmax(np.asarray(out["logits"]), -1)
  np.testing.assert_array_equal(pred, np.asarray(out["distance"]) > 1.0)  # official predict.py
  fn = losses.from_config({"name": "dsamnet", "class_weights": (), "ignore_label": 255})
  labels = (jax.random.uniform(jax.random.key(3), (2, 32, 32)) > 0.8).astype(jnp.int32)
  total, parts = fn(out, labels)
  assert np.isfinite(total) and set(parts) == {"bcl", "dice"}


def test_dsamnet_loss_matches_the_official_formulas():
  rng = np.random.default_rng(0)
  d = rng.uniform(0, 3, (2, 8, 8)).astype(np.float32)
  ds2, ds3 = (rng.standard_normal((2, 8, 8, 2)).astype(np.float32) for _ in range(2))
  y = (rng.uniform(size=(2, 8, 8)) > 0.7).astype(np.int32)
  out = {"distance": d, "ds2": ds2, "ds3": ds3}
  total, parts = losses.dsamnet_loss(out, y)
  bcl = ((y == 0) * d ** 2).sum() / ((y == 0).sum() + 1e-4) + \
      ((y == 1) * np.maximum(2 - d, 0) ** 2).sum() / ((y == 1).sum() + 1e-4)
  t = np.eye(2)[y]

  def dice(z):
    p = 1 / (1 + np.exp(-z))
    return np.mean(1 - ((p * t).sum((1, 2)) + 1) / ((p ** 2 + t ** 2).sum((1, 2)) + 1))
  np.testing.assert_allclose(parts["bcl"], bcl, rtol=1e-5)
  np.testing.assert_allclose(total, bcl + 0.1 * 0.5 * (dice(ds2) + dice(ds3)), rtol=1e-5)
  ignored = y.copy()
  ignored[0, :2] = 255
  moved = dict(out, distance=d.copy())
  moved["distance"][0, :2] += 1.0
  np.testing.assert_allclose(losses.dsamnet_loss(out, ignored)[0],
                             losses.dsamnet_loss(moved, ignored)[0], rtol=1e-6)


# Max |jaxcd - torch| over max(1, largest |torch|), per output: float32 rounding.
PARITY_TOLERANCE = 1e-4


def parity_run(batch: int = 2, hw: tuple[int, int] = (64, 64)):
  """The official-size torch reference (seed 0, randomized BatchNorm, eval) and jaxcd's model
  with its converted weights on the same random pair: the distance map and both deep-supervision
  outputs."""
  import torch
  from jaxcd.weights import dsamnet_from_official
  from tests.torch_reference import ParityRun, random_pair, randomize_batch_norm
  from tests.torch_reference.dsamnet_ref import DSAMNet
  torch.manual_seed(0)
  ref = DSAMNet()
  randomize_batch_norm(ref)
  ref.eval()
  model = get_model("dsamnet")
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  variables = dsamnet_from_official(sd, abstract_variables(model))
  a, b = random_pair(batch, hw)
  with torch.no_grad():
    outs = ref(torch.from_numpy(a), torch.from_numpy(b))
  dist, ds2, ds3 = (t.numpy().transpose(0, 2, 3, 1) for t in outs)
  got = model.apply(variables, a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1))
  return ParityRun(ref, {k: np.asarray(v) for k, v in got.items()},
                   {"distance": dist[..., 0], "ds2": ds2, "ds3": ds3}, (a, b), sd, variables,
                   model.apply)


def test_parity_with_the_torch_reference():
  pytest.importorskip("torch", reason=TORCH_REASON)
  run = parity_run()
  for name, want in run.want.items():
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(run.got[name], want, atol=PARITY_TOLERANCE * scale, rtol=0,
                               err_msg=name)
