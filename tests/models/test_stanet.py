"""STANet: parameter counts (PAM and BAM) against the official architecture (a torch
re-statement with the official module names), rivals.md's measurement of the official code and
Dsfer-Net's Table II; shapes; its BCL loss against hand-computed values; numerical parity with the
torch reference; the ImageNet ResNet-18 import shared with DSAMNet."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcd import losses, weights
from jaxcd.errors import ConfigError, DataError
from jaxcd.models import get_model
from jaxcd.models import stanet
from jaxcd.models.layers import count_params

from .variables import abstract_variables, random_variables, torchvision_resnet18_state_dict

TORCH_REASON = "torch not installed (pip install 'jaxcd[torch]'); parity needs the PyTorch reference"
# The official CDFA networks netF + netA measured in torch (reference/rivals.md). Dsfer-Net Table II
# gives 16.93 M, which is PAM's (the paper's STANet); BAM is 32,111 smaller (5,201 attention
# parameters instead of 37,312).
OFFICIAL = {"pam": 16_929_152, "bam": 16_897_041}


@pytest.fixture(scope="module")
def pam_abstract():
  return abstract_variables(get_model("stanet"))


def test_param_count_matches_the_official_code_and_paper(pam_abstract):
  n = count_params(pam_abstract["params"])
  assert n == OFFICIAL["pam"]
  assert round(n / 1e6, 2) == 16.93  # Dsfer-Net Table II
  bam = count_params(abstract_variables(get_model("stanet", attention="bam"))["params"])
  assert bam == OFFICIAL["bam"]


@pytest.mark.parametrize("attention,hw", [("pam", (50, 70)),
                                          pytest.param("pam", (64, 64), marks=pytest.mark.slow),
                                          pytest.param("bam", (50, 70), marks=pytest.mark.slow)])
def test_output_shapes(attention, hw):
  model = get_model("stanet", attention=attention)
  x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  out = jax.eval_shape(lambda a, b: model.init_with_output(jax.random.key(0), a, b)[0], x, x)
  assert set(out) == {"logits", "distance"}
  assert out["logits"].shape == (2, *hw, 2)
  assert out["distance"].shape == (2, *hw)


def test_bad_options_are_refused():
  x = jnp.zeros((1, 32, 32, 3))
  for kwargs, match in (({"num_classes": 3}, "num_classes must be 2"),
                        ({"attention": "cbam"}, "'pam' or 'bam'"),
                        ({"ds": 3}, "divisible by ds")):
    with pytest.raises(ValueError, match=match):
      jax.eval_shape(lambda a: get_model("stanet", **kwargs).init(jax.random.key(0), a, a), x)


def test_stanet_loss_against_hand_computed_values():
  d = np.array([[[0.5, 1.5], [2.5, 0.0], [9.0, 0.3]]], np.float32)
  y = np.array([[[0, 1], [1, 0], [255, 255]]], np.int32)
  # unchanged: (0.5^2 + 0^2) / (2 + 1e-4); changed: ((2 - 1.5)^2 + 0) / (2 + 1e-4); 255 ignored.
  want = 0.25 / 2.0001 + 0.25 / 2.0001
  np.testing.assert_allclose(losses.stanet_loss({"distance": d}, y), want, rtol=1e-6)
  fn = losses.from_config({"name": "stanet", "class_weights": (), "ignore_label": 255, "margin": 3.0})
  total, parts = fn({"distance": d}, y)
  assert parts == {}
  # margin 3: changed (1.5^2 + 0.5^2) / (2 + 1e-4)
  np.testing.assert_allclose(total, 0.25 / 2.0001 + 2.5 / 2.0001, rtol=1e-6)
  with pytest.raises(ConfigError, match="no class weights"):
    losses.stanet_loss({"distance": d}, y, class_weights=(1.0, 2.0))
  # One BCL for both rivals: DSAMNet's 'bcl' part is this loss.
  out = {"distance": d, "ds2": np.zeros((1, 3, 2, 2), np.float32),
         "ds3": np.zeros((1, 3, 2, 2), np.float32)}
  np.testing.assert_allclose(losses.dsamnet_loss(out, y)[1]["bcl"], want, rtol=1e-6)


def _reference(attention: str, ds: int = 1):
  """The torch reference with random weights, randomised BatchNorm statistics and attention sharp
  enough to matter; its state dicts as numpy; the jaxcd model."""
  torch = pytest.importorskip("torch", reason=TORCH_REASON)
  from tests.torch_reference import randomize_batch_norm
  from tests.torch_reference.stanet_ref import STANet, sharpen_attention
  torch.manual_seed(0)
  ref = STANet(attention.upper(), ds)
  assert sum(p.numel() for p in ref.parameters()) == OFFICIAL[attention]
  randomize_batch_norm(ref)
  sharpen_attention(ref)
  ref.eval()
  sd = {k: v.numpy() for k, v in ref.state_dicts().items()}
  return ref, sd, get_model("stanet", attention=attention, ds=ds)


@pytest.fixture(scope="module")
def pam_reference():
  return _reference("pam")


def test_attention_parity_with_odd_regions(pam_reference, pam_abstract):
  """The PAM alone, converted with the whole checkpoint, on 18x22 maps per date: scales 1 and 2
  cut equal regions (one batch, as the official code), 4 and 8 leave larger last ones."""
  import torch
  ref, sd, _ = pam_reference
  v = weights.stanet_from_official(sd, pam_abstract)
  # Features of 0.1: attention logits of a few units (at 1, of hundreds, the softmax is so sharp
  # that float32 rounding alone moves outputs by 3e-5 of the largest, in torch as here).
  x = 0.1 * np.random.default_rng(0).standard_normal((2, 64, 18, 44)).astype(np.float32)
  with torch.no_grad():
    want = ref.netA.Self_Att(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
  att = {c: v[c]["attention"] for c in ("params", "batch_stats")}
  got = jax.jit(lambda v, x: stanet.PAM().apply(v, x, train=False))(att, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5 * float(np.abs(want).max()), rtol=0)


def parity_run(reference=None, hw: tuple[int, int] = (64, 64), batch: int = 2):
  """`reference` (`_reference(...)`'s triple; the official PAM if None) and jaxcd's model with
  its converted weights on the same random pair: jaxcd's distance map and logits, the
  reference's distance map (the official model's output)."""
  import torch
  from tests.torch_reference import ParityRun, random_pair
  ref, sd, model = reference if reference is not None else _reference("pam")
  variables = weights.stanet_from_official(sd, abstract_variables(model, hw))
  a, b = random_pair(batch, hw)
  with torch.no_grad():
    want = ref(torch.from_numpy(a), torch.from_numpy(b)).numpy()[:, 0]
  apply = jax.jit(model.apply)
  got = apply(variables, a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1))
  return ParityRun(ref, {k: np.asarray(v) for k, v in got.items()}, {"distance": want}, (a, b), sd,
                   variables, apply)


def _parity(ref, sd, model, hw: tuple[int, int], batch: int) -> float:
  """Max |distance - torch| / max(|torch|, 1); asserts the logits' argmax against `dist > 1`."""
  run = parity_run((ref, sd, model), hw, batch)
  want, dist = run.want["distance"], run.got["distance"]
  assert 0.05 < np.mean(want > 1) < 0.95  # the attention matters: some pixels change, some not
  clear = np.abs(want - 1.0) > 1e-4  # away from the threshold the decisions must agree
  pred = np.argmax(run.got["logits"], -1)
  np.testing.assert_array_equal(pred[clear], (want > 1)[clear])
  return np.abs(dist - want).max() / max(float(np.abs(want).max()), 1.0)


# float32 rounding: the torch reference itself is 1.75e-5 (of the largest distance) away from
# its float64 run on the 64x64 PAM pair.
PARITY_TOLERANCE = 5e-5


@pytest.mark.slow  # 10-20 s: a compile of the 17 M-parameter model; the PAM parity stays fast
def test_parity_with_the_torch_reference(pam_reference):
  ref, sd, model = pam_reference
  err = _parity(ref, sd, model, (64, 64), batch=2)
  assert err < PARITY_TOLERANCE, err


@pytest.mark.slow  # a compile of the 17 M-parameter model
def test_bam_parity_with_ds_pooling():
  err = _parity(*_reference("bam", ds=2), (64, 64), batch=2)
  assert err < PARITY_TOLERANCE, err


def test_converter_is_strict(pam_reference, pam_abstract):
  _, sd, _ = pam_reference
  missing = {k: v for k, v in sd.items() if k != "Self_Att.stages.3.f_key.1.running_var"}
  with pytest.raises(DataError, match="missing key 'Self_Att.stages.3.f_key.1.running_var'"):
    weights.stanet_from_official(missing, pam_abstract)
  with pytest.raises(DataError, match="unexpected key 'Self_Att.gamma'"):  # a BAM checkpoint's
    weights.stanet_from_official(dict(sd, **{"Self_Att.gamma": np.zeros(1, np.float32)}), pam_abstract)


@pytest.mark.parametrize("attention", [pytest.param("pam", marks=pytest.mark.slow), "bam"])
def test_attention_trains(attention):
  """Train mode through the attention alone (two 8x8 dates): its BatchNorm statistics move and
  the gradient of a date difference reaches every weight."""
  # PAM with two of its four scales: the same weights per stage, half the compile.
  module = stanet.PAM(scales=(2, 8)) if attention == "pam" else stanet.BAM()
  x = jax.random.normal(jax.random.key(0), (2, 8, 16, 64))
  v = jax.jit(lambda x: module.init(jax.random.key(1), x, train=False))(x)

  def f(params):
    y, upd = module.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(jnp.square(y[:, :, :8] - y[:, :, 8:])), upd
  grads, upd = jax.jit(jax.grad(f, has_aux=True))(v["params"])
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    name = jax.tree_util.keystr(path)
    if name == "['gamma']":  # the official BAM's unused parameter
      assert not np.any(g), name
    else:
      assert np.isfinite(g).all() and np.any(g), name
  if attention == "pam":
    moved = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), upd["batch_stats"],
                                   v["batch_stats"])
    assert all(jax.tree_util.tree_leaves(moved))


def _config(backbone: str, name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict({"name": name})
  c.init = ml_collections.ConfigDict({"backbone": backbone})
  return c


def _torchvision_leaf(tree: dict, key: str) -> np.ndarray:
  """The leaf of a jaxcd backbone tree that a torchvision resnet18 key names (written out here,
  not with the converter under test)."""
  parts = key.split(".")
  if parts[0].startswith("layer"):
    tree, parts = tree[f"{parts[0]}_{parts[1]}"], parts[2:]
  if parts[0] == "downsample":
    parts = ["downsample_conv" if parts[1] == "0" else "downsample_bn", parts[2]]
  module, leaf = parts
  name = {"weight": "kernel" if module.endswith("conv") or module.startswith("conv") else "scale",
          "bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf]
  return tree[module][name]


@pytest.mark.parametrize("name,suffix", [("stanet", "npz"),
                                         pytest.param("dsamnet", "npz", marks=pytest.mark.slow),
                                         pytest.param("stanet", "pth", marks=pytest.mark.slow)])
def test_init_backbone_loads_torchvision_resnet18(tmp_path, name, suffix, pam_abstract):
  """DSAMNet shares the backbone, so its import is checked here too."""
  sd = torchvision_resnet18_state_dict(seed=1)
  path = tmp_path / f"resnet18-test.{suffix}"
  if suffix == "pth":
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, path)
  else:
    np.savez(path, **sd)
  v = random_variables(get_model(name), abstract=pam_abstract if name == "stanet" else None)
  before = jax.tree_util.tree_map(np.copy, v)
  params, stats = weights.init_backbone_variables(_config(str(path), name), v["params"],
                                                  v["batch_stats"])
  loaded = 0
  for key, value in sd.items():
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
      continue
    stat = key.endswith(("running_mean", "running_var"))
    got = _torchvision_leaf((stats if stat else params)["backbone"], key)
    want = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
    np.testing.assert_array_equal(got, want, err_msg=key)
    loaded += 1
  assert loaded == 100  # 20 convs + 20 BatchNorms x 4 tensors
  # The third multi-grid block (not in torchvision) and everything past the backbone keep their
  # values; the inputs are not modified.
  for coll, tree in (("params", params), ("batch_stats", stats)):
    for part in set(tree) - {"backbone"}:
      jax.tree_util.tree_map(np.testing.assert_array_equal, tree[part], before[coll][part])
    jax.tree_util.tree_map(np.testing.assert_array_equal, tree["backbone"]["layer4_2"],
                           before[coll]["backbone"]["layer4_2"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, v, before)
