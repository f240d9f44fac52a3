"""RCR: parameter counts against the official network (torch reference), the consistency loss and
its ramp by hand, each perturbation's defining property, config errors, the label-fraction row,
and one tiny run of the method (module scope, slow)."""
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcd import losses, trainer, writers
from jaxcd.config_base import sibling
from jaxcd.errors import ConfigError
from jaxcd.experiments import label_fractions as lf
from jaxcd.methods import get_method, rcr
from jaxcd.models import perturbations as pert
from jaxcd.models.layers import count_params
from jaxcd.models.rcr import RCRNet

REPO = Path(__file__).resolve().parents[2]


def rcr_config(**rcr_fields):
  c = sibling(str(REPO / "configs" / "x.py"), "rcr")
  c.rcr.update(rcr_fields)
  return c


# --- parameters ----------------------------------------------------------------------------------

def test_param_counts_match_the_official_model():
  torch = pytest.importorskip("torch", reason="torch: the official network's reference")
  try:
    from tests.torch_reference import rcr_ref
  except ImportError:
    from torch_reference import rcr_ref
  del torch
  official = rcr_ref.CDModel(width=64, aux_decoders=26)
  sd = official.state_dict()
  n_official = sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean",
                                                                        "running_var",
                                                                        "num_batches_tracked")))
  fc = sum(v.numel() for k, v in sd.items() if ".fc." in k)  # in the ImageNet ResNet, unused
  n_aux = sum(v.numel() for k, v in sd.items() if k.startswith("aux_decoders."))
  assert n_official - fc == 50_688_640 and n_official - fc - n_aux == 46_853_120  # RCL Tab. VII
  net = get_method(rcr_config()).build_model()  # the method's network: 26 decoders by default
  assert net.aux_decoders == 26 and net.width == 8  # configs/rcr.py's width
  x = jnp.zeros((1, 64, 64, 3))
  shapes = jax.eval_shape(lambda: RCRNet(width=64, aux_decoders=26).init(jax.random.key(0), x, x))
  params = shapes["params"]
  assert count_params(params) == n_official - fc
  for i in (0, 25):  # official aux_decoders.<i>.upsample.{0,3}.weight (O, I, kh, kw)
    assert params[f"aux_decoders_{i}"]["conv1"]["kernel"].shape == (3, 3, 512, 32)
    assert tuple(sd[f"aux_decoders.{i}.upsample.0.weight"].shape) == (32, 512, 3, 3)
    assert params[f"aux_decoders_{i}"]["conv2"]["kernel"].shape == (1, 1, 32, 2)
    assert tuple(sd[f"aux_decoders.{i}.upsample.3.weight"].shape) == (2, 32, 1, 1)


# --- losses --------------------------------------------------------------------------------------

def test_consistency_loss_and_ramp_by_hand():
  logits = jnp.array([[[[0.0, 0.0], [2.0, 0.0]]]])  # 1 x 1 x 2 x 2
  target = jnp.array([[[[1.0, 0.0], [0.5, 0.5]]]])
  e = math.exp(2) / (1 + math.exp(2))
  want = ((0.5 - 1) ** 2 + 0.5 ** 2 + (e - 0.5) ** 2 + (1 - e - 0.5) ** 2) / 4
  assert float(losses.consistency_mse(logits, target)) == pytest.approx(want, rel=1e-6)
  g = jax.grad(lambda t: losses.consistency_mse(logits, t))(target)
  assert not np.any(np.asarray(g))  # the target is detached
  ramp = [float(losses.sigmoid_rampup(t, 10)) for t in (0, 5, 10, 20)]
  assert ramp == pytest.approx([math.exp(-5), math.exp(-1.25), 1.0, 1.0], rel=1e-6)
  assert float(losses.sigmoid_rampup(3, 0)) == 1.0
  # The method's loss: CE of the labeled rows + w * consistency; unlabeled labels unread.
  loss_fn = rcr.make_loss(losses.from_config(rcr_config().loss), 1, 1)
  out = {"logits": jnp.zeros((1, 2, 2, 2)), "consistency": jnp.float32(0.25),
         "unsup_weight": jnp.float32(30.0)}
  labels = jnp.stack([jnp.zeros((2, 2), jnp.int32), jnp.full((2, 2), 255, jnp.int32)])
  loss, parts = loss_fn(out, labels)
  assert float(loss) == pytest.approx(math.log(2) + 30 * 0.25, rel=1e-6)
  assert float(parts["ce"]) == pytest.approx(math.log(2), rel=1e-6)


# --- perturbations -------------------------------------------------------------------------------

def _z(shape=(2, 8, 8, 16), seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_dropout2d_drops_whole_channels_and_rescales():
  z = _z((4, 8, 8, 64))
  out = np.asarray(pert.dropout2d(jax.random.key(1), z, 0.5))
  ratio = out / np.asarray(z)
  per_channel = ratio.reshape(4, -1, 64)
  assert np.all(per_channel.min(1) == per_channel.max(1))  # constant over each channel
  assert set(np.unique(per_channel)) <= {0.0, 2.0}
  assert 0.35 < (per_channel[:, 0] == 0).mean() < 0.65  # about half of 256 channels dropped


def test_feature_drop_zeroes_the_most_active_positions():
  z = jnp.abs(_z())
  out = np.asarray(pert.feature_drop(jax.random.key(2), z))
  att = np.asarray(z).mean(-1)
  frac = att / att.max(axis=(1, 2), keepdims=True)
  dropped = np.all(out == 0, axis=-1)
  assert np.all(dropped[frac >= 0.9]) and not np.any(dropped[frac < 0.7])
  np.testing.assert_array_equal(out[~dropped], np.asarray(z)[~dropped])


def test_feature_noise_is_multiplicative_bounded_and_shared_by_the_batch():
  z = _z()
  out = np.asarray(pert.feature_noise(jax.random.key(3), z, 0.3))
  n = out / np.asarray(z) - 1
  assert np.abs(n).max() <= 0.3 + 1e-5 and np.abs(n).max() > 0.25
  np.testing.assert_allclose(n[0], n[1], atol=1e-5)


def test_context_and_object_masking_split_the_features_by_the_nearest_mask():
  z = _z((2, 4, 4, 3))
  mask = np.zeros((2, 32, 32), bool)
  mask[0, 8:16, :] = True  # rows 8..15 -> feature row 1 (nearest: pixel 8 * i)
  mask[1, 0, 0] = True  # pixel (0, 0) -> feature (0, 0)
  mask[1, 1:8, 1:8] = True  # never sampled by the nearest rule
  down = np.asarray(pert.nearest_down(jnp.asarray(mask), (4, 4)))
  np.testing.assert_array_equal(down, mask[:, ::8, ::8])
  ctx = np.asarray(pert.context_masking(z, jnp.asarray(mask)))
  obj = np.asarray(pert.object_masking(z, jnp.asarray(mask)))
  np.testing.assert_allclose(ctx + obj, np.asarray(z))
  assert np.all(ctx[0, 1] == np.asarray(z)[0, 1]) and not np.any(ctx[0, [0, 2, 3]])
  assert np.count_nonzero(np.any(ctx[1] != 0, -1)) == 1


def test_connected_components_match_scipy_with_8_connectivity():
  ndimage = pytest.importorskip("scipy.ndimage")
  mask = np.random.default_rng(4).random((24, 24)) < 0.45
  ours = np.asarray(jax.jit(pert.connected_components)(jnp.asarray(mask)))
  want, n = ndimage.label(mask, structure=np.ones((3, 3)))
  assert n > 3
  assert np.all((ours > 0) == mask)
  pairs = set(zip(ours[mask].tolist(), want[mask].tolist()))
  assert len(pairs) == n == len({a for a, _ in pairs})  # the same partition


@pytest.mark.parametrize("min_boundary", [0, 10, 50])
def test_component_boxes_match_scipy_without_scatters(min_boundary):
  """The boxes of the components with more than `min_boundary` boundary pixels (4-neighbour
  outside the mask or the image), in label order, against scipy's labels and boxes; and no
  scatter in the program (TPUs offload scatters to SparseCores, where XLA's cost model has no
  step time and libtpu's compiler aborted on RCR's large batches)."""
  ndimage = pytest.importorskip("scipy.ndimage")
  rng = np.random.default_rng(min_boundary)
  boxes_fn = jax.jit(pert.component_boxes, static_argnums=1)
  for t in range(3):
    mask = ndimage.binary_dilation(rng.random((64, 64)) < 0.02, iterations=t + 1)
    boxes = {k: np.asarray(v) for k, v in boxes_fn(jnp.asarray(mask), min_boundary).items()}
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    plus = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    boundary = mask & ~ndimage.binary_erosion(mask, structure=plus, border_value=0)
    want = sorted((np.flatnonzero(lab.reshape(-1) == k).max(), sl[0].start, sl[0].stop - 1,
                   sl[1].start, sl[1].stop - 1)
                  for k, sl in enumerate(ndimage.find_objects(lab), 1)
                  if boundary[lab == k].sum() > min_boundary)
    cut = boxes["cut"]
    got = list(zip(*(boxes[k][cut].tolist() for k in ("r0", "r1", "c0", "c1"))))
    assert n > 1 and got == [w[1:] for w in want]
    assert not cut[len(want):].any()  # the cut components fill the first slots
  hlo = jax.jit(lambda m, k: pert.cutout_keep(k, pert.component_boxes(m, 50), (64, 64))).lower(
      jnp.asarray(mask), jax.random.key(0)).as_text()
  assert "scatter" not in hlo


def test_guided_cutout_erases_one_box_inside_each_large_component():
  mask = np.zeros((64, 64), bool)
  mask[4:34, 10:40] = True  # 30 x 30 square: 116 boundary pixels, bb 29 -> box 11 x 11
  mask[50:55, 50:55] = True  # 5 x 5: 16 boundary pixels, kept whole
  boxes = jax.jit(pert.component_boxes, static_argnums=1)(jnp.asarray(mask), 50)
  keep_fn = jax.jit(pert.cutout_keep, static_argnums=(2, 3))
  for seed in range(3):
    keep = np.asarray(keep_fn(jax.random.key(seed), boxes, (64, 64), 0.4))
    erased = np.argwhere(keep == 0)
    (r0, c0), (r1, c1) = erased.min(0), erased.max(0)
    assert (r1 - r0 + 1, c1 - c0 + 1) == (11, 11) and len(erased) == 121
    assert 4 <= r0 and r1 < 34 and 10 <= c0 and c1 < 40  # inside the component's box
  z = jnp.ones((1, 8, 8, 2))
  out = np.asarray(jax.jit(pert.guided_cutout, static_argnums=(3, 4))(
      jax.random.key(0), z, jnp.asarray(mask)[None], 0.4, 50))
  assert set(np.unique(out)) <= {0.0, 1.0} and out[0, 6, 6, 0] == 1  # the small one untouched


def test_vat_moves_the_features_eps_along_the_adversarial_direction():
  k = jax.random.normal(jax.random.key(5), (16, 2))
  decode = lambda x: jnp.einsum("bhwc,ck->bhwk", x, k)  # noqa: E731  a linear decoder
  z = _z()
  norms = lambda r: np.sqrt(np.sum(np.square(np.asarray(r)), axis=(1, 2, 3)))  # noqa: E731

  def kl(r):
    p = jax.nn.softmax(decode(z), -1)
    return float(jnp.sum(p * (jax.nn.log_softmax(decode(z), -1)
                              - jax.nn.log_softmax(decode(z + r), -1))))

  rand = pert._l2_normalize(jax.random.normal(jax.random.key(7), z.shape)) * 2.0
  vat = jax.jit(pert.vat, static_argnums=(2, 5, 6))
  key = jax.random.key(6)
  for direction, xi in (("hessian", 1e-6), ("finite_difference", 1e-1)):
    r = vat(key, z, decode, xi, 2.0, 1, direction) - z
    np.testing.assert_allclose(norms(r), 2.0, rtol=1e-4)
    assert kl(r) > 3 * kl(rand), direction
  # The code's step at its xi = 1e-6 in float32: rounding noise, r_adv near 0 instead of eps.
  r = vat(key, z, decode, 1e-6, 2.0, 1, "finite_difference") - z
  assert norms(r).max() < 0.01


# --- config --------------------------------------------------------------------------------------

def test_decoder_kinds_and_config_errors():
  kinds = rcr.decoder_kinds(rcr_config().rcr)
  assert len(kinds) == 26 and kinds[:2] == ["vat", "vat"] and kinds[-1] == "feature_noise"
  assert kinds.count("cutout") == 5 and kinds.count("context_masking") == 2
  with pytest.raises(ConfigError, match="config.rcr.decoders: unknown perturbation 'blur'"):
    c = rcr_config()
    c.rcr.decoders = ml_collections.ConfigDict({"blur": 1})
    get_method(c).check_config()
  with pytest.raises(ConfigError, match=r"config.rcr.label_fraction must be in \(0, 1\)"):
    get_method(rcr_config(label_fraction=1.0)).check_config()
  c = rcr_config()
  c.model.name = "fc_siam_diff"
  with pytest.raises(ConfigError, match="config.model.name must be 'rcr'"):
    get_method(c).check_config()
  with pytest.raises(ConfigError, match="config.rcr.backbone_lr_mult"):
    get_method(rcr_config(backbone_lr_mult=0.1)).check_config()  # Adam: not a per-group lr


def test_label_fractions_runs_rcr_on_the_same_split(tmp_path):
  calls = []

  def train(config, workdir):
    mode = config.rcl.mode if config.method == "rcl" else None
    calls.append((config.method, mode, config.rcl.label_fraction, config.rcr.label_fraction,
                  Path(workdir).name))
    w = writers.MetricWriter(workdir, tensorboard=False)
    w.write({"step": 5, "split": "test", "checkpoint": "best", "stage": 1, "iou": 0.5, "f1": 0.6,
             "oa": 0.9, "kappa": 0.4})
    w.close()

  c = rcr_config()
  c.rcl.paper_table = "IV"
  rows = lf.run(c, str(tmp_path), [5.0], ["sup_only", "rcr"], train_fn=train)
  assert calls == [("rcl", "sup_only", 0.05, 0.1, "sup_only_5pct"),
                   ("rcr", None, 0.05, 0.05, "rcr_5pct")]
  assert [(r["method"], r["iou"], r["paper_iou"]) for r in rows] == [
      ("Sup. only", 50.0, 61.0), ("RCR", 50.0, 72.5)]
  with pytest.raises(ConfigError, match="needs a config with an rcr block"):
    lf.run(sibling(str(REPO / "configs" / "x.py"), "rcl"), str(tmp_path), [5.0], ["rcr"],
           train_fn=train)


# --- a tiny run ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """configs/rcr.py at width 2 on 32x32 scenes: 4 labeled + 12 unlabeled pairs, 2 + 2 per step,
  one decoder per perturbation, 6 steps (ramp over the first 3)."""
  c = rcr_config(label_fraction=0.25, unlabeled_batch_size=2, rampup=0.5)
  c.rcr.decoders = ml_collections.ConfigDict({k: 1 for k in rcr.KINDS})
  c.rcr.cutout_min_boundary = 4
  c.model.width = 2
  c.data.update(image_size=32, num_train=16, num_val=4, num_test=4)
  c.input.update(batch_size=2, eval_batch_size=4)
  c.optim.warmup_steps = 0
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every, c.progress = 6, 3, 3, 1, False
  wd = tmp_path_factory.mktemp("rcr")
  final = trainer.train_and_evaluate(c, str(wd))
  return c, wd, final


@pytest.mark.slow
def test_tiny_run_trains_the_auxiliary_decoders_and_evaluates_the_main_one(tiny_run):
  c, wd, final = tiny_run
  rows = writers.read_metrics(str(wd))
  train = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
  # w(t) = 30 exp(-5 (1 - t/3)^2) at t = step - 1, then 30.
  want = [30 * math.exp(-5 * (1 - min(t, 3) / 3) ** 2) for t in range(6)]
  assert [r["unsup_weight"] for r in train] == pytest.approx(want, rel=1e-5)
  for r in train:
    assert r["loss"] == pytest.approx(r["ce"] + r["unsup_weight"] * r["consistency"], rel=1e-5)
    assert 0 < r["consistency"] < 0.5
  assert 0 <= final["test"]["f1"] <= 1
  assert [r["step"] for r in rows if r["split"] == "val"] == [3, 6]
  split = (wd / "splits" / "labeled.txt").read_text().splitlines()
  assert len(split) == 4  # 25% of 16, drawn as RCL's
  # The evaluation tools restore the trained network (aux decoders included) and use its main
  # decoder: the same test metrics as the run's final row.
  from jaxcd.data import source_from_config
  predictor = get_method(c).load_predictor(str(wd), (1, 32, 32, 3))
  assert "aux_decoders_6" in predictor.params
  again = predictor.evaluate(source_from_config(c.data, "test"), "test")
  assert again["f1"] == pytest.approx(final["test"]["f1"], abs=1e-6)
