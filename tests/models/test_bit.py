"""BiT (Chen et al. 2021, official base_transformer_pos_s4_dd8) and its ResNet-18 trunk: parameter
counts from the layer list, shapes, feature differencing, ImageNet ResNet-18 import (torchvision
names), and parity of the imported trunk with a PyTorch ResNet-18 where torch is installed."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcd import weights
from jaxcd.errors import ConfigError, DataError
from jaxcd.models import get_model
from jaxcd.models.layers import count_params
from jaxcd.models.resnet import ResNet

from .variables import torchvision_resnet18_state_dict

TORCH_REASON = "torch not installed (pip install 'jaxcd[torch]'); parity needs a PyTorch ResNet"


def _conv(cin, cout, k, bias=False):
  return k * k * cin * cout + (cout if bias else 0)


def _basic_block(cin, cout):
  # conv3-BN-ReLU-conv3-BN (+ 1x1 conv + BN projection where the shape changes); no conv biases.
  n = _conv(cin, cout, 3) + 2 * cout + _conv(cout, cout, 3) + 2 * cout
  return n + (_conv(cin, cout, 1) + 2 * cout if cin != cout else 0)


def resnet18_count(stages: int, fc_classes: int = 0) -> int:
  n = _conv(3, 64, 7) + 2 * 64  # stem
  widths = (64, 128, 256, 512)[:stages]
  cin = 64
  for w in widths:
    n += _basic_block(cin, w) + _basic_block(w, w)
    cin = w
  return n + (cin * fc_classes + fc_classes if fc_classes else 0)


def bit_head_count(dim=32, tokens=4, heads=8, dim_head=64, enc=1, dec=8, classes=2) -> int:
  inner = heads * dim_head
  layer = (2 * 2 * dim  # two LayerNorms
           + 3 * dim * inner  # q, k, v (fused in the encoder, separate in the decoder), no bias
           + inner * dim + dim  # output projection
           + dim * 2 * dim + 2 * dim + 2 * dim * dim + dim)  # MLP dim -> 2 dim -> dim
  return (_conv(256, dim, 3, bias=True)  # conv_pred
          + _conv(dim, tokens, 1)  # tokenizer's spatial attention
          + 2 * tokens * dim  # learned position embedding of the 2L tokens
          + (enc + dec) * layer
          + _conv(dim, dim, 3) + 2 * dim + _conv(dim, classes, 3, bias=True))  # classifier


def _variables(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)


def test_resnet18_count_is_torchvisions():
  assert resnet18_count(4, fc_classes=1000) == 11_689_512  # torchvision resnet18, a known figure
  v = jax.eval_shape(lambda x: ResNet().init(jax.random.key(0), x),
                     jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert count_params(v["params"]) == resnet18_count(4)


def test_bit_param_count():
  v = _variables(get_model("bit"), (1, 64, 64, 3))
  assert count_params(v["params"]["backbone"]) == resnet18_count(3) == 2_782_784
  assert count_params(v["params"]) == resnet18_count(3) + bit_head_count() == 3_495_778
  # The official module also registers ResNet-18's unused layer4 and fc: 12,402,506 in all.
  unused = resnet18_count(4, 1000) - resnet18_count(3)
  assert count_params(v["params"]) + unused == 12_402_506


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_bit_shapes_and_differencing():
  model = get_model("bit")
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((2, 48, 64, 3)), jnp.float32)
  b = jnp.asarray(rng.standard_normal((2, 48, 64, 3)), jnp.float32)
  v = model.init(jax.random.key(0), a, b)
  out = model.apply(v, a, b)["logits"]
  assert out.shape == (2, 48, 64, 2) and np.isfinite(np.asarray(out)).all()
  # Identical dates with the same position embedding for both dates' tokens: the two branches
  # agree, |X_A - X_B| = 0, and away from the zero-padded border every pixel gets the same
  # logits; different dates do not. (The learned embedding itself tells the dates apart.)
  pos = v["params"]["pos_embedding"]
  tied = {**v, "params": {**v["params"], "pos_embedding": jnp.concatenate([pos[:, :4], pos[:, :4]], 1)}}
  same = np.asarray(model.apply(tied, a, a)["logits"])[:, 2:-2, 2:-2]
  np.testing.assert_allclose(same, np.broadcast_to(same[:, :1, :1], same.shape), atol=1e-5)
  diff = np.asarray(out)[:, 2:-2, 2:-2]
  assert np.ptp(diff[..., 1] - diff[..., 0]) > 1e-3
  _, upd = model.apply(v, a, b, train=True, mutable=["batch_stats"])
  assert not np.allclose(upd["batch_stats"]["backbone"]["bn1"]["mean"],
                         v["batch_stats"]["backbone"]["bn1"]["mean"])
  with pytest.raises(ValueError, match="multiple of 8"):
    model.apply(v, a[:, :44], b[:, :44])


def _bit_config(backbone: str, name: str = "bit") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict({"name": name})
  c.init = ml_collections.ConfigDict({"backbone": backbone})
  return c


@pytest.mark.slow
def test_init_backbone_loads_torchvision_resnet18_into_bit(tmp_path):
  sd = torchvision_resnet18_state_dict()
  path = tmp_path / "resnet18-test.npz"
  np.savez(path, **sd)
  x = jnp.zeros((1, 32, 32, 3))
  v = jax.device_get(get_model("bit").init(jax.random.key(0), x, x))
  params, stats = weights.init_backbone_variables(_bit_config(str(path)), v["params"], v["batch_stats"])
  bb, bs = params["backbone"], stats["backbone"]
  np.testing.assert_array_equal(bb["conv1"]["kernel"], sd["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(bb["layer3_0"]["downsample_conv"]["kernel"],
                                sd["layer3.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(bb["layer2_1"]["bn2"]["scale"], sd["layer2.1.bn2.weight"])
  np.testing.assert_array_equal(bs["layer1_0"]["bn1"]["var"], sd["layer1.0.bn1.running_var"])
  assert "layer4_0" not in bb  # BiT stops after layer3; layer4 and fc are skipped
  # Everything outside the backbone is untouched; the inputs are not modified.
  np.testing.assert_array_equal(params["conv_pred"]["kernel"], v["params"]["conv_pred"]["kernel"])
  assert not np.array_equal(v["params"]["backbone"]["conv1"]["kernel"], bb["conv1"]["kernel"])
  # The trainer's path (state_lib.init_pretrained on a replicated state) loads the same values.
  from jaxcd import state as state_lib
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=jax.device_put(v["params"]),
                            batch_stats=jax.device_put(v["batch_stats"]), opt_state=())
  loaded = state_lib.init_pretrained(state, _bit_config(str(path)))
  np.testing.assert_array_equal(loaded.params["backbone"]["layer1_1"]["conv2"]["kernel"],
                                bb["layer1_1"]["conv2"]["kernel"])
  np.testing.assert_array_equal(loaded.batch_stats["backbone"]["layer1_0"]["bn1"]["var"],
                                sd["layer1.0.bn1.running_var"])


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_init_backbone_errors(tmp_path):
  x = jnp.zeros((1, 32, 32, 3))
  v = jax.device_get(get_model("bit").init(jax.random.key(0), x, x))
  sd = torchvision_resnet18_state_dict()
  sd["layer2.0.conv1.weight"] = sd["layer2.0.conv1.weight"][:, :32]
  np.savez(tmp_path / "bad.npz", **sd)
  with pytest.raises(DataError, match=r"bad.npz: 'layer2.0.conv1.weight' has shape"):
    weights.init_backbone_variables(_bit_config(str(tmp_path / "bad.npz")), v["params"])
  with pytest.raises(DataError, match="missing.pth: checkpoint file not found"):
    weights.init_backbone_variables(_bit_config(str(tmp_path / "missing.pth")), v["params"])
  with pytest.raises(ConfigError, match="config.init.backbone") as e:
    weights.init_backbone_variables(_bit_config(str(tmp_path / "bad.npz"), name="fc_siam_diff"), v["params"])
  assert "\n" not in str(e.value)


def test_imported_trunk_matches_a_pytorch_resnet18(tmp_path):
  torch = pytest.importorskip("torch", reason=TORCH_REASON)
  from torch import nn
  import torch.nn.functional as F

  class Block(nn.Module):  # torchvision BasicBlock's structure and names
    def __init__(self, cin, w, stride):
      super().__init__()
      self.conv1, self.bn1 = nn.Conv2d(cin, w, 3, stride, 1, bias=False), nn.BatchNorm2d(w)
      self.conv2, self.bn2 = nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w)
      self.downsample = (nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                         if stride != 1 or cin != w else None)

    def forward(self, x):
      out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
      return F.relu(out + (x if self.downsample is None else self.downsample(x)))

  class Trunk(nn.Module):  # BiT's: layer3 at stride 1
    def __init__(self):
      super().__init__()
      self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
      self.layer1 = nn.Sequential(Block(64, 64, 1), Block(64, 64, 1))
      self.layer2 = nn.Sequential(Block(64, 128, 2), Block(128, 128, 1))
      self.layer3 = nn.Sequential(Block(128, 256, 1), Block(256, 256, 1))

    def forward(self, x):
      x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
      return self.layer3(self.layer2(self.layer1(x)))

  net = Trunk().eval()
  full = torchvision_resnet18_state_dict(seed=3)
  net.load_state_dict({k: torch.from_numpy(np.asarray(full[k])) for k in net.state_dict()})
  path = tmp_path / "resnet18.npz"
  np.savez(path, **full)
  xa = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
  with torch.no_grad():
    want = net(xa).numpy().transpose(0, 2, 3, 1)
  x = jnp.zeros((1, 64, 64, 3))
  v = jax.device_get(get_model("bit").init(jax.random.key(0), x, x))
  params, stats = weights.init_backbone_variables(_bit_config(str(path)), v["params"], v["batch_stats"])
  from jaxcd.models.bit import resnet18_trunk
  got = resnet18_trunk().apply({"params": params["backbone"], "batch_stats": stats["backbone"]},
                               xa.numpy().transpose(0, 2, 3, 1), train=False)[-1]
  assert got.shape == want.shape == (1, 8, 8, 256)
  rel = np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want)
  assert rel < 1e-5, rel
