"""Weight import for the RCR/RCL network: ImageNet ResNet-50s (deep and standard stem) into its
encoder, the official SemiCD/RCL model, `config.init.backbone`; parity with a PyTorch reference."""
import functools
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcd import weights
from jaxcd.errors import ConfigError, DataError
from jaxcd.models.rcr import RCRNet
from jaxcd.models.resnet import ResNet, output_stride

TORCH_REASON = "torch not installed (pip install 'jaxcd[torch]'); parity needs the PyTorch reference"
BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
      "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def imagenet_state_dict(deep: bool, width: int = 64, bands: int = 3, seed: int = 0) -> dict:
  """A ResNet-50 ImageNet checkpoint's names and shapes, written from the architecture: the
  CSAIL/CCT deep stem (conv1-conv3, bn1-bn3) or torchvision's 7x7 conv1 + bn1, then layerN.i, fc."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(name, o, i, k):
    sd[f"{name}.weight"] = rng.standard_normal((o, i, k, k)).astype(np.float32)

  def bn(name, c):
    for p in BN:
      sd[f"{name}.{p}"] = rng.standard_normal(c).astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

  w = width
  if deep:
    for i, (o, c_in) in enumerate(((w, bands), (w, w), (2 * w, w)), start=1):
      conv(f"conv{i}", o, c_in, 3)
      bn(f"bn{i}", o)
    c = 2 * w
  else:
    conv("conv1", w, bands, 7)
    bn("bn1", w)
    c = w
  for s, blocks in enumerate((3, 4, 6, 3), start=1):
    p = w * 2 ** (s - 1)
    for i in range(blocks):
      pre = f"layer{s}.{i}."
      conv(pre + "conv1", p, c, 1), bn(pre + "bn1", p)
      conv(pre + "conv2", p, p, 3), bn(pre + "bn2", p)
      conv(pre + "conv3", 4 * p, p, 1), bn(pre + "bn3", 4 * p)
      if i == 0:
        conv(pre + "downsample.0", 4 * p, c, 1), bn(pre + "downsample.1", 4 * p)
      c = 4 * p
  sd["fc.weight"] = rng.standard_normal((1000, c)).astype(np.float32)
  sd["fc.bias"] = rng.standard_normal(1000).astype(np.float32)
  return sd


def flax_location(key: str) -> tuple[str, tuple[str, ...]] | None:
  """Where a torch ResNet entry belongs in the Flax ResNet: (collection, path); None if skipped."""
  if key.startswith("fc.") or key.endswith("num_batches_tracked"):
    return None
  m = re.fullmatch(r"(?:layer(\d)\.(\d+)\.)?(conv\d|bn\d|downsample\.[01])\.(\w+)", key)
  assert m, key
  stage, block, module, leaf = m.groups()
  where = () if stage is None else (f"layer{stage}_{block}",)
  module = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(module, module)
  if leaf == "weight" and "conv" in module:
    return "params", where + (module, "kernel")
  coll, name = BN[leaf]
  return coll, where + (module, name)


@functools.lru_cache
def backbone_shapes(deep: bool, width: int = 64, bands: int = 3) -> dict:
  model = RCRNet(width=width, stem="deep" if deep else "standard")
  x = jax.ShapeDtypeStruct((1, 32, 32, bands), jnp.float32)
  v = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)
  return {c: v[c]["backbone"] for c in ("params", "batch_stats")}


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


@pytest.mark.parametrize("deep", [True, False])
def test_every_imagenet_tensor_lands(deep):
  sd = imagenet_state_dict(deep)
  expected = backbone_shapes(deep)
  got = weights.rcr_backbone_from_imagenet(sd, expected, stem="deep" if deep else "standard")
  n = 0
  for key, value in sd.items():
    loc = flax_location(key)
    if loc is None:
      continue
    coll, path = loc
    want = np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value  # OIHW -> HWIO
    np.testing.assert_array_equal(_get(got[coll], path), want, err_msg=key)
    n += 1
  leaves = jax.tree_util.tree_leaves(got)
  assert n == len(leaves) == len(jax.tree_util.tree_leaves(expected))
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
  # torchcv (SemiCD's ResNet) files the deep stem under `prefix.`: the same weights.
  if deep:
    prefixed = {("prefix." + k if re.match(r"(conv|bn)\d\.", k) else k): v for k, v in sd.items()}
    again = weights.rcr_backbone_from_imagenet(prefixed, expected, stem="deep")
    np.testing.assert_array_equal(again["params"]["conv3"]["kernel"], got["params"]["conv3"]["kernel"])


def test_imagenet_mismatches_are_one_line_errors():
  deep, std = imagenet_state_dict(True, width=16), imagenet_state_dict(False, width=16)
  with pytest.raises(DataError, match=r"x\.pth: a deep-stem .* config.model.stem='standard'; "
                                      r"set config.model.stem='deep'"):
    weights.rcr_backbone_from_imagenet(deep, backbone_shapes(False, 16), stem="standard", source="x.pth")
  with pytest.raises(DataError, match=r"set config.model.stem='standard'"):
    weights.rcr_backbone_from_imagenet(std, backbone_shapes(True, 16), stem="deep")
  bad = dict(deep)
  bad.pop("layer4.2.bn3.running_var")
  with pytest.raises(DataError, match=r"w\.npz: missing key 'layer4\.2\.bn3\.running_var'"):
    weights.rcr_backbone_from_imagenet(bad, backbone_shapes(True, 16), source="w.npz")
  with pytest.raises(DataError, match=r"'conv1\.weight' has shape \(16, 3, 3, 3\).*\(3, 3, 4, 16\)"):
    weights.rcr_backbone_from_imagenet(deep, backbone_shapes(True, 16, bands=4))
  with pytest.raises(DataError, match=r"has shape .*config.model.width=64"):
    weights.rcr_backbone_from_imagenet(deep, backbone_shapes(True, 8))
  with pytest.raises(DataError, match="unexpected key 'layer5.0.conv1.weight'"):
    weights.rcr_backbone_from_imagenet({**deep, "layer5.0.conv1.weight": np.zeros(1)},
                                       backbone_shapes(True, 16))


def _config(path, stem="deep", width=16, name="rcr"):
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict({"name": name, "stem": stem, "width": width})
  c.init = ml_collections.ConfigDict({"backbone": str(path)})
  return c


def test_init_backbone_variables_from_file(tmp_path):
  sd = imagenet_state_dict(True, width=16)
  path = tmp_path / "3x3resnet50-imagenet.npz"
  np.savez(path, **sd)
  shapes = backbone_shapes(True, 16)
  zeros = lambda tree: jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), tree)
  params = {"backbone": zeros(shapes["params"]), "psp": {"keep": np.ones(2)}}
  batch_stats = {"backbone": zeros(shapes["batch_stats"]), "psp": {"keep": np.ones(3)}}
  new_params, new_stats = weights.init_backbone_variables(_config(path), params, batch_stats)
  assert new_params["psp"] is params["psp"] and new_stats["psp"] is batch_stats["psp"]
  np.testing.assert_array_equal(new_params["backbone"]["layer3_5"]["conv2"]["kernel"],
                                sd["layer3.5.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(new_stats["backbone"]["bn2"]["var"], sd["bn2.running_var"])
  assert params["backbone"]["bn2"]["scale"].sum() == 0  # inputs untouched
  # Without batch_stats (a model without BatchNorm state wanted): params only.
  only, none = weights.init_backbone_variables(_config(path), params, None)
  assert none is None and np.array_equal(only["backbone"]["bn1"]["bias"], sd["bn1.bias"])
  # The wrong stem for the file: one line naming the file and what to set.
  with pytest.raises(DataError) as e:
    weights.init_backbone_variables(_config(path, stem="standard"), params, batch_stats)
  msg = str(e.value)
  assert "\n" not in msg and str(path) in msg and "config.model.stem='deep'" in msg
  with pytest.raises(ConfigError, match="no ImageNet backbone import for model 'fc_siam_diff'"):
    weights.init_backbone_variables(_config(path, name="fc_siam_diff"), params, batch_stats)


# --- parity with a PyTorch reference (tests/torch_reference/rcr_ref.py) -------------------------

def _ref():
  pytest.importorskip("torch", reason=TORCH_REASON)
  try:
    from tests.torch_reference import rcr_ref
  except ImportError:
    from torch_reference import rcr_ref
  return rcr_ref


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _nhwc(t):
  return np.asarray(t.detach().numpy()).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("deep,width", [(True, 64), (False, 16)])
def test_imagenet_encoder_matches_torch(deep, width):
  ref = _ref()
  import torch
  net = ref.randomize_(ref.ResNet50(deep_stem=deep, width=width), seed=1).eval()
  sd = {k: v.numpy() for k, v in net.state_dict().items()}
  x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    want = _nhwc(net(x))
  variables = weights.rcr_backbone_from_imagenet(sd, backbone_shapes(deep, width),
                                                 stem="deep" if deep else "standard")
  trunk = ResNet(stage_sizes=(3, 4, 6, 3), block="bottleneck", deep_stem=deep, width=width,
                 **output_stride(8))
  got = jax.jit(lambda v, x: trunk.apply(v, x, train=False)[-1])(variables, _nhwc(x))
  assert got.shape == want.shape == (2, 4, 4, 32 * width)
  assert _rel(got, want) < 1e-4


def official_reference(width: int = 64):
  """The torch CD_Model (deep stem; seed 0, randomized weights and BatchNorm statistics; `width`
  64 is the official model), its state dict, jaxcd's model, its variables' shapes, two random
  2 x 3 x 64 x 64 dates."""
  ref = _ref()
  import torch
  torch.manual_seed(0)
  net = ref.randomize_(ref.CDModel(deep_stem=True, width=width), seed=3)
  sd = {k: v.numpy().copy() for k, v in net.state_dict().items()}
  model = RCRNet(width=width)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  expected = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)
  g = torch.Generator().manual_seed(4)
  xa, xb = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
  return net, sd, model, expected, xa, xb


@pytest.fixture(scope="module")
def official():
  return official_reference(width=16)


# Relative L2 error ||jaxcd - torch|| / ||torch|| of the eval-mode logits (measured ~1e-6).
PARITY_TOLERANCE = 1e-4


def parity_run(official=None, train: bool = False):
  """`official` (`official_reference()`'s tuple; the official width if None) in eval mode and
  jaxcd's model with its converted weights on its pair. `train`: also jaxcd's training-mode
  outputs and batch statistics, in `extra["train"]`, compiled with the eval forward as one."""
  import copy

  import torch
  try:
    from tests.torch_reference import ParityRun
  except ImportError:
    from torch_reference import ParityRun
  net, sd, model, expected, xa, xb = official_reference() if official is None else official
  variables = weights.rcr_from_official(sd, expected)
  if train:
    @jax.jit  # one compilation for both modes
    def apply(v, a, b):
      return (model.apply(v, a, b, train=False),
              model.apply(v, a, b, train=True, mutable=["batch_stats"]))
    got_eval, extra = apply(variables, _nhwc(xa), _nhwc(xb))
  else:
    apply = jax.jit(lambda v, a, b: model.apply(v, a, b, train=False))
    got_eval, extra = apply(variables, _nhwc(xa), _nhwc(xb)), None
  ref = copy.deepcopy(net).eval()
  with torch.no_grad():
    want = _nhwc(ref(xa, xb))
  return ParityRun(ref, {k: np.asarray(v) for k, v in got_eval.items()}, {"logits": want},
                   (xa.numpy(), xb.numpy()), sd, variables, apply, {"train": extra})


def test_official_model_matches_torch_in_eval_and_train_mode(official):
  import copy

  import torch
  net, sd, model, expected, xa, xb = official
  run = parity_run(official, train=True)
  assert jax.tree_util.tree_structure(run.variables) == jax.tree_util.tree_structure(expected)
  got, upd = run.extra["train"]
  want = run.want["logits"]
  assert run.got["logits"].shape == want.shape == (2, 64, 64, 2)
  assert _rel(run.got["logits"], want) < PARITY_TOLERANCE
  # Training: each date's batch statistics; every backbone BatchNorm is updated twice per step.
  net_t = copy.deepcopy(net).train()
  with torch.no_grad():
    want = _nhwc(net_t(xa, xb))
  # Batch statistics over few values (the 1-bin PSP BatchNorm sees 2 per channel) amplify float32
  # rounding: measured 1.9e-4 here (eval: ~1e-6); in float64 both sides agree to 7e-13.
  assert _rel(got["logits"], want) < 1e-3
  stem_bn = net_t.encoder.base[0][0].bn1.running_mean.numpy()
  assert _rel(upd["batch_stats"]["backbone"]["bn1"]["mean"], stem_bn) < 1e-4
  psp_bn = net_t.encoder.psp.bottleneck[1].running_mean.numpy()
  assert _rel(upd["batch_stats"]["psp"]["bottleneck_bn"]["mean"], psp_bn) < 1e-3  # as the logits


def test_official_names_prefix_and_strictness(official):
  _, sd, _, expected, _, _ = official
  plain = weights.rcr_from_official(sd, expected)
  # A DataParallel checkpoint, with RCR's auxiliary decoders: the same network.
  wrapped = {f"module.{k}": v for k, v in sd.items()}
  wrapped["module.aux_decoders.0.upsample.0.weight"] = np.zeros((8, 128, 3, 3), np.float32)
  again = weights.rcr_from_official(wrapped, expected)
  for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(again)):
    np.testing.assert_array_equal(a, b)
  k = sd["encoder.psp.stages.3.1.weight"]
  np.testing.assert_array_equal(plain["params"]["psp"]["stage3_conv"]["kernel"], k.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(plain["params"]["backbone"]["layer2_0"]["downsample_conv"]["kernel"],
                                sd["encoder.base.2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(plain["batch_stats"]["backbone"]["bn3"]["var"],
                                sd["encoder.base.0.0.bn3.running_var"])
  bad = dict(sd)
  bad.pop("main_decoder.upsample.3.weight")
  with pytest.raises(DataError, match=r"best\.pth: missing key 'main_decoder\.upsample\.3\.weight'"):
    weights.rcr_from_official(bad, expected, source="best.pth")
