"""AdvNet, s4GAN and SemiCDNet (jaxcd/methods/{adversarial,advnet,s4gan,semicdnet}.py): the
discriminators against a torch re-statement of the official code (parameter counts, one forward),
the loss pieces against hand computations, and per method one tiny run through the trainer
(2 steps) whose checkpoints show both optimizers moving their parameters and restore both."""
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import assert_same_checkpoint, set_fields
from jaxcd import checkpointing, state as state_lib, trainer, writers
from jaxcd.config_base import sibling
from jaxcd.errors import ConfigError
from jaxcd.methods import adversarial as adv, get_method, list_methods
from jaxcd.methods.s4gan import minmax
from jaxcd.methods.semicdnet import entropy_map
from jaxcd.models.discriminators import Discriminator
from jaxcd.models.layers import count_params

REPO = Path(__file__).resolve().parents[2]
TORCH_REASON = ("torch not installed (pip install 'jaxcd[torch]'); parity needs the PyTorch "
                "reference")
GAN = ("advnet", "s4gan", "semicdnet")


def tiny_config(method: str, **extra):
  """configs/advnet.py with FC-Siam-diff on 32x32 scenes: 8 of 16 pairs labeled, batches of
  2 + 2, 2 steps, a checkpoint after each, discriminators at ndf 4."""
  c = sibling(str(REPO / "configs" / "x.py"), "advnet")
  c.method = method
  c.model = ml_collections.ConfigDict({"name": "fc_siam_diff", "num_classes": 2})
  c.data.update(image_size=32, num_train=16, num_val=4, num_test=4)
  c.input.update(batch_size=4, eval_batch_size=4)
  c.gan.update(label_fraction=0.5, n_labeled=2, ndf=4, disc_lr=1e-2)
  c.advnet.semi_start = 0.0
  c.s4gan.st_threshold = 0.0  # every pair self-trains: the term is live in 2 steps
  c.optim.warmup_steps = 0
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every, c.progress = 2, 2, 1, 1, False
  c.async_checkpoints = False
  set_fields(c, extra)
  return c


# --- discriminators vs the official code -------------------------------------------------------

def _flax_count(module: Discriminator, channels: int, size: int = 64) -> int:
  x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init({"params": jax.random.key(0)}, x), x)
  return count_params(shapes["params"])


def test_discriminator_param_counts_match_the_official_code():
  torch = pytest.importorskip("torch", reason=TORCH_REASON)
  del torch
  from tests.torch_reference import discriminators_ref as ref
  count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
  pairs = {
      "advnet": (ref.AdvNetDiscriminator(2), Discriminator(64, "map"), 2),
      "semicdnet Ds": (ref.SemiCDNetDiscriminator(1), Discriminator(64, "gap", 2), 1),
      "semicdnet De": (ref.SemiCDNetDiscriminator(2), Discriminator(64, "gap", 2), 2),
      "s4gan": (ref.S4GANDiscriminator(2), Discriminator(64, "fc", dropout=0.5), 8),
  }
  for name, (theirs, ours, channels) in pairs.items():
    assert _flax_count(ours, channels) == count(theirs), name


def _to_flax(state_dict) -> dict:
  """Official names -> our params: conv kernels OIHW -> HWIO, Linear OI -> IO."""
  out: dict = {}
  for key, value in state_dict.items():
    layer, kind = key.rsplit(".", 1)
    v = value.detach().numpy()
    if kind == "weight":
      out.setdefault(layer, {})["kernel"] = v.transpose(2, 3, 1, 0) if v.ndim == 4 else v.T
    else:
      out.setdefault(layer, {})["bias"] = v
  return out


@pytest.mark.slow
def test_discriminator_forward_matches_the_torch_reference():
  torch = pytest.importorskip("torch", reason=TORCH_REASON)
  from tests.torch_reference import discriminators_ref as ref
  torch.manual_seed(0)
  x = np.random.default_rng(0).uniform(size=(2, 64, 64, 2)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
  for theirs, ours in ((ref.AdvNetDiscriminator(2, ndf=8), Discriminator(8, "map")),
                       (ref.SemiCDNetDiscriminator(2, ndf=8), Discriminator(8, "gap", 2))):
    theirs.eval()
    want = theirs(xt).detach().numpy().transpose(0, 2, 3, 1)
    got = ours.apply({"params": _to_flax(theirs.state_dict())}, jnp.asarray(x))["logits"]
    np.testing.assert_allclose(np.asarray(got).reshape(want.shape), want, rtol=1e-4, atol=1e-5)


# --- loss pieces against hand computations -----------------------------------------------------

def test_sigmoid_rampup_is_the_official_curve():
  # exp(-5 (1 - t/T)^2): t = 0 -> e^-5, t = T/2 -> e^-1.25, t >= T -> 1; no ramp -> 1.
  got = [float(adv.sigmoid_rampup(jnp.int32(t), 10.0)) for t in (0, 5, 10, 20)]
  np.testing.assert_allclose(got, [math.exp(-5), math.exp(-1.25), 1.0, 1.0], rtol=1e-6)
  assert float(adv.sigmoid_rampup(jnp.int32(0), 0.0)) == 1.0


def test_bce_ce_and_masks_by_hand():
  logits = jnp.array([[0.0, 2.0], [-1.0, 3.0]])
  mask = jnp.array([[True, False], [False, True]])
  # BCE(x, 1) = log(1 + e^-x); mean over the two masked entries x = 0 and x = 3.
  want = (math.log(2.0) + math.log(1 + math.exp(-3.0))) / 2
  np.testing.assert_allclose(float(adv.bce_logits(logits, 1.0, mask)), want, rtol=1e-6)
  # BCE(x, 0) = log(1 + e^x), all four.
  want0 = sum(math.log(1 + math.exp(v)) for v in (0.0, 2.0, -1.0, 3.0)) / 4
  np.testing.assert_allclose(float(adv.bce_logits(logits, 0.0)), want0, rtol=1e-6)
  # Per-image CE: logits (0, ln 3) -> p(1) = 3/4, p(0) = 1/4.
  two = jnp.array([[0.0, math.log(3.0)]] * 2)
  np.testing.assert_allclose(float(adv.class_ce(two, 1)), -math.log(0.75), rtol=1e-6)
  np.testing.assert_allclose(float(adv.class_ce(two, 0)), -math.log(0.25), rtol=1e-6)
  # Masked pixel CE over the one selected pixel (label 1 where p(1) = 3/4); none -> 0.
  px = jnp.broadcast_to(two[0], (1, 2, 2, 2))
  sel = jnp.array([[[True, False], [False, False]]])
  np.testing.assert_allclose(float(adv.masked_ce(px, jnp.ones((1, 2, 2), jnp.int32), sel)),
                             -math.log(0.75), rtol=1e-6)
  assert float(adv.masked_ce(px, jnp.ones((1, 2, 2), jnp.int32), sel & False)) == 0.0


def test_one_hot_entropy_and_minmax_by_hand():
  oh = adv.one_hot_labels(jnp.array([[0, 1, 255]]), 255)
  np.testing.assert_array_equal(np.asarray(oh), [[[1, 0], [0, 1], [0, 0]]])
  p = jnp.array([0.25, 0.75])
  np.testing.assert_allclose(np.asarray(entropy_map(p)),
                             [0.25 * math.log(0.25 + 1e-6), 0.75 * math.log(0.75 + 1e-6)],
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(minmax(jnp.array([-1.0, 0.0, 3.0]))), [0, 0.25, 1])


def test_advnet_generator_loss_by_hand():
  """A discriminator whose logits are 0 everywhere (zero params): sigmoid = 1/2 > T_semi, so
  every unlabeled pixel self-trains; BCE(0, 1) = log 2 for both adversarial terms."""
  c = tiny_config("advnet")
  method = get_method(c)
  method.total_steps = 10
  module, channels = method.discriminators()["d"]
  shapes = jax.eval_shape(lambda x: module.init({"params": jax.random.key(0)}, x),
                          jax.ShapeDtypeStruct((1, 32, 32, channels), jnp.float32))["params"]
  params = {"d": jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)}
  logits = jnp.zeros((2, 32, 32, 2)).at[..., 1].set(math.log(3.0))  # p(change) = 3/4
  split = lambda x: [x[:1], x[1:]]  # noqa: E731  (one device: labeled, then unlabeled)
  v = adv.Views(logits, jnp.zeros((1, 32, 32), jnp.int32), jnp.zeros((2, 32, 32, 3)),
                jnp.zeros((2, 32, 32, 3)), split, jnp.int32(5))
  loss, parts = jax.jit(lambda p: method.generator_loss(p, v, jnp.float32(1.0),
                                                       jax.random.key(1)))(params)
  a = c.advnet
  want = (a.lambda_adv_l + a.lambda_adv_u) * math.log(2.0) + a.lambda_semi * -math.log(0.75)
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)  # float32 sums
  assert float(parts["semi_pixels"]) == 1.0


def test_config_errors_and_method_listing():
  assert set(GAN) <= set(list_methods()) and "adversarial" not in list_methods()
  for field, value, match in (("gan.label_fraction", 1.0, "gan.label_fraction"),
                              ("gan.n_labeled", 4, "gan.n_labeled"),
                              ("gan.disc_optim", "rmsprop", "gan.disc_optim"),
                              ("s4gan.st_threshold", 2.0, "s4gan.st_threshold")):
    with pytest.raises(ConfigError, match=match):
      trainer.check_config(tiny_config("s4gan", **{field: value}))


@pytest.mark.parametrize("name", ["advnet", "s4gan", "semicdnet"])
def test_configs_load(name):
  for suffix in ("", "_levir", "_whu"):
    c = sibling(str(REPO / "configs" / "x.py"), name + suffix)
    assert c.method == name
    trainer.check_config(c)


# --- tiny runs through the trainer ---------------------------------------------------------------

@pytest.fixture(scope="module", params=GAN)
def tiny_run(request, tmp_path_factory):
  c = tiny_config(request.param)
  wd = tmp_path_factory.mktemp(request.param)
  final = trainer.train_and_evaluate(c, str(wd))
  return request.param, c, wd, final


@pytest.mark.slow
def test_both_optimizers_move_and_checkpoints_restore_both(tiny_run):
  name, c, wd, final = tiny_run
  assert 0 <= final["test"]["f1"] <= 1
  s1, _ = checkpointing.load_numpy(str(wd), 1)
  s2, _ = checkpointing.load_numpy(str(wd), 2)
  moved = lambda k: any(not np.array_equal(a, b) for a, b in zip(  # noqa: E731
      jax.tree_util.tree_leaves(s1[k]), jax.tree_util.tree_leaves(s2[k])))
  assert moved("params") and moved("disc_params"), name
  # The restore target of the final evaluation and of evaluate/predict holds both networks.
  method = get_method(c)
  run = trainer.make_run(c, str(wd), method)
  method.stages(run)
  tx, _ = method.optimizer(run, method.stages(run)[0])
  abstract = method.abstract_state(run.model, tx, run.sample_shape, run.mesh)
  ck = checkpointing.Checkpointer(str(wd))
  state, _, step = ck.restore(abstract)
  ck.close()
  run.writer.close()
  assert isinstance(state, state_lib.AdversarialState) and step == 2
  for got, want in ((state.disc_params, s2["disc_params"]),
                    (state.disc_opt_state, s2["disc_opt_state"]), (state.params, s2["params"])):
    for x, y in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_array_equal(np.asarray(x), y)
  rows = [r for r in writers.read_metrics(str(wd)) if r["split"] == "train"]
  assert {"d_loss", "ce", "unsup_weight"} <= set(rows[-1])
  assert method.load_predictor(str(wd), run.sample_shape).info["step"] >= 1


@pytest.mark.slow
def test_resume_continues_both_optimizers_exactly(tiny_run, tmp_path):
  """A run resumed from step 1 writes the same step-2 checkpoint (generator, discriminators and
  both optimizer states) as the uninterrupted run."""
  name, c, wd, _ = tiny_run
  if name != "advnet":
    pytest.skip("one method suffices: the step and the state are shared")
  resumed = tmp_path / "resumed"
  shutil.copytree(wd, resumed)
  for which in ("checkpoints/2", "best"):
    shutil.rmtree(resumed / which)
  writers_rows = [r for r in writers.read_metrics(str(resumed)) if r["step"] <= 1]
  assert writers_rows
  trainer.train_and_evaluate(c, str(resumed))
  assert_same_checkpoint(wd, resumed, 2)


def test_label_fraction_rows_beside_sup_only(tmp_path):
  """The adversarial rows train on the fraction's split with their own method; Sup. only gets
  their labeled pairs per step and steps; nothing adversarial at 100%; Table IV beside ours."""
  from jaxcd.experiments import label_fractions as lf
  config = sibling(str(REPO / "configs" / "x.py"), "advnet_levir")
  config.num_steps = 50
  calls = []

  def train(c, workdir):
    frac = c.gan.label_fraction if c.method in GAN else c.rcl.label_fraction
    calls.append((c.method, c.rcl.mode, frac, c.input.batch_size, c.rcl.stage1_steps))
    w = writers.MetricWriter(workdir, tensorboard=False)
    w.write({"step": 50, "split": "test", "checkpoint": "best", "iou": 0.5, "f1": 0.6,
             "oa": 0.9, "kappa": 0.4})
    w.close()

  rows = lf.run(config, str(tmp_path), [5.0, 100.0], ["sup_only", *GAN], train_fn=train)
  assert calls == [("rcl", "sup_only", 0.05, 8, 50), ("advnet", "sup_only", 0.05, 16, 0),
                   ("s4gan", "sup_only", 0.05, 16, 0), ("semicdnet", "sup_only", 0.05, 16, 0),
                   ("rcl", "sup_only", 1.0, 8, 50)]
  got = {(r["method"], r["fraction"]): r["paper_iou"] for r in rows}
  assert got == {("Sup. only", 5.0): 61.0, ("Sup. only", 100.0): None, ("AdvNet", 5.0): 66.1,
                 ("s4GAN", 5.0): 64.0, ("SemiCDNet", 5.0): 67.6}
  with pytest.raises(ConfigError, match="configs/advnet.py"):
    lf.run(sibling(str(REPO / "configs" / "x.py"), "rcl"), str(tmp_path), [5.0], ["advnet"],
           train_fn=train)
