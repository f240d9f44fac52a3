"""Weight import: parity with a PyTorch Dsfer-Net carrying the official names, strictness, files."""
import sys

import jax
import numpy as np
import pytest

from jaxcd import weights
from jaxcd.errors import DataError
from jaxcd.models.dsfernet import DsferNet
from jaxcd.models.vgg import VGG16Features

S = 64  # input size; the reference's (C,H,W) LayerNorms are built for it, as the official ones for 256
TORCH_REASON = "torch not installed (pip install 'jaxcd[torch]'); parity needs the PyTorch reference"


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _ref():
  pytest.importorskip("torch", reason=TORCH_REASON)
  try:
    from tests.torch_reference import dsfernet_ref
  except ImportError:
    from torch_reference import dsfernet_ref
  return dsfernet_ref


def reference():
  """The torch Dsfer-Net with the official names for S x S inputs: seed 0, randomized weights,
  norm affines and BatchNorm statistics."""
  ref = _ref()
  import torch
  torch.manual_seed(0)
  return ref.randomize_(ref.MyNet(input_size=S), seed=1)


@pytest.fixture(scope="module")
def torch_net():
  return reference()


@pytest.fixture(scope="module")
def state_dict(torch_net):
  return {k: v.numpy().copy() for k, v in torch_net.state_dict().items()}


def _nhwc(t):
  return np.asarray(t.detach().numpy()).transpose(0, 2, 3, 1)


def _inputs(seed=2):
  import torch
  g = torch.Generator().manual_seed(seed)
  return torch.randn(2, 3, S, S, generator=g), torch.randn(2, 3, S, S, generator=g)


# Relative L2 error ||jaxcd - torch|| / ||torch||, per output (measured ~1e-6).
PARITY_TOLERANCE = 1e-4


def parity_run(net=None):
  """`net` (`reference()` if None), set to eval mode, and jaxcd's Dsfer-Net with its converted
  weights on the same random pair; S x S, the size its LayerNorms are built for."""
  import torch
  try:
    from tests.torch_reference import ParityRun
  except ImportError:
    from torch_reference import ParityRun
  net = reference() if net is None else net
  sd = {k: v.numpy().copy() for k, v in net.state_dict().items()}
  xa, xb = _inputs()
  net.eval()
  with torch.no_grad():
    want = dict(zip(("logits", "aux4", "aux5"), net(xa, xb)))
  variables = weights.dsfernet_from_torch(sd)
  apply = jax.jit(lambda v, a, b: DsferNet(input_size=S).apply(v, a, b, train=False))
  got = apply(variables, _nhwc(xa), _nhwc(xb))
  return ParityRun(net, {k: np.asarray(v) for k, v in got.items()},
                   {k: _nhwc(v) for k, v in want.items()}, (xa.numpy(), xb.numpy()), sd,
                   variables, apply)


def test_converted_dsfernet_matches_torch_in_eval_mode(torch_net):
  run = parity_run(torch_net)
  for k in run.want:
    assert _rel(run.got[k], run.want[k]) < PARITY_TOLERANCE, k


def test_converted_dsfernet_matches_torch_in_train_mode(torch_net, state_dict):
  # BatchNorm on batch statistics, and the running means move like PyTorch's (momentum 0.1).
  # (Running variances differ by design: PyTorch folds in the unbiased batch variance.)
  import copy

  import torch
  net = copy.deepcopy(torch_net).train()
  xa, xb = _inputs(3)
  with torch.no_grad():
    want = net(xa, xb)[0]
  variables = weights.dsfernet_from_torch(state_dict)
  got, upd = jax.jit(lambda v, a, b: DsferNet(input_size=S).apply(
      v, a, b, train=True, mutable=["batch_stats"]))(variables, _nhwc(xa), _nhwc(xb))
  assert _rel(got["logits"], _nhwc(want)) < 1e-4
  for name in ("dec5", "dec31", "dec11"):
    want_mean = net.get_submodule(name).single_conv[1].running_mean.numpy()
    assert _rel(upd["batch_stats"][name]["bn"]["mean"], want_mean) < 1e-4, name


def test_vgg16_from_torchvision_matches_torch_features():
  ref = _ref()
  import torch
  torch.manual_seed(0)
  vgg = ref.TorchvisionVGG16()
  ref.randomize_(vgg)
  sd = {k: v.numpy() for k, v in vgg.state_dict().items()}
  # torchvision checkpoints also hold the classifier; the encoder skips it (small stand-ins here).
  sd.update({"classifier.0.weight": np.zeros((4, 8), np.float32), "classifier.6.bias": np.zeros(3)})
  params = weights.vgg16_from_torchvision(sd)
  x = torch.randn(1, 3, 32, 32)
  with torch.no_grad():
    want = vgg.taps(x)
  got = jax.jit(VGG16Features().apply)({"params": params}, _nhwc(x))
  assert len(got) == 5
  for g, w in zip(got, want):
    assert g.shape == _nhwc(w).shape
    assert _rel(g, _nhwc(w)) < 1e-5


def test_strictness_without_torch():
  with pytest.raises(DataError, match="missing key 'layernorm1.weight'"):
    weights.dsfernet_from_torch({})
  with pytest.raises(DataError, match="missing key 'features.0.weight'"):
    weights.vgg16_from_torchvision({})
  # vgg16_bn numbers its layers differently: index 1 is a BatchNorm there.
  with pytest.raises(DataError, match="unexpected key 'features.1.weight'"):
    weights.vgg16_from_torchvision({"features.1.weight": np.zeros(64, np.float32)},
                                   source="/x/vgg16_bn.pth")


def test_dsfernet_strictness(state_dict):
  bad = dict(state_dict)
  bad.pop("dec3.single_conv.1.running_var")
  with pytest.raises(DataError, match=r"ckpt.pth: missing key 'dec3.single_conv.1.running_var'"):
    weights.dsfernet_from_torch(bad, source="ckpt.pth")
  with pytest.raises(DataError, match="unexpected key 'module.outc.conv.bias'"):
    weights.dsfernet_from_torch({**state_dict, "module.outc.conv.bias": np.zeros(2)})
  bad = dict(state_dict)
  bad["hopf4.linear_v.linear_qkv.weight"] = np.zeros((512, 256), np.float32)
  with pytest.raises(DataError, match="'hopf4.linear_v.linear_qkv.weight' has shape"):
    weights.dsfernet_from_torch(bad)
  # num_batches_tracked is a PyTorch-only counter: accepted when present, not required.
  lean = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  assert len(lean) < len(state_dict)
  weights.dsfernet_from_torch(lean)


def test_load_state_dict_npz_and_errors(tmp_path):
  sd = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b.bias": np.ones(2, np.float32)}
  np.savez(tmp_path / "w.npz", **sd)
  got = weights.load_state_dict(tmp_path / "w.npz")
  assert set(got) == set(sd) and all(np.array_equal(got[k], sd[k]) for k in sd)
  with pytest.raises(DataError, match="nope.pth: checkpoint file not found"):
    weights.load_state_dict(tmp_path / "nope.pth")
  (tmp_path / "w.ckpt").write_bytes(b"x")
  with pytest.raises(DataError, match="w.ckpt: unknown checkpoint format"):
    weights.load_state_dict(tmp_path / "w.ckpt")
  (tmp_path / "broken.npz").write_bytes(b"not a zip")
  with pytest.raises(DataError, match="broken.npz"):
    weights.load_state_dict(tmp_path / "broken.npz")


def test_load_state_dict_safetensors(tmp_path):
  st = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
  sd = {"features.0.weight": np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)}
  st.save_file(sd, str(tmp_path / "w.safetensors"))
  got = weights.load_state_dict(tmp_path / "w.safetensors")
  np.testing.assert_array_equal(got["features.0.weight"], sd["features.0.weight"])


def test_load_state_dict_pth(tmp_path):
  torch = pytest.importorskip("torch", reason=TORCH_REASON)
  sd = {"w": torch.randn(3, 2), "h": torch.randn(4).to(torch.bfloat16),
        "n": torch.tensor(7, dtype=torch.long)}
  torch.save(sd, tmp_path / "plain.pth")
  torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pth")
  torch.save({"epoch_id": 3, "best_val_acc": 0.9, "model_G_state_dict": sd,  # ChangeFormer's trainer
              "optimizer_G_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4}]}},
             tmp_path / "trainer.pth")
  for name in ("plain.pth", "wrapped.pth", "trainer.pth"):
    got = weights.load_state_dict(tmp_path / name)
    assert set(got) == {"w", "h", "n"}
    np.testing.assert_array_equal(got["w"], sd["w"].numpy())
    np.testing.assert_array_equal(got["h"], sd["h"].float().numpy())
    assert got["h"].dtype == np.float32 and int(got["n"]) == 7
  (tmp_path / "corrupt.pth").write_bytes(b"\x00garbage")
  with pytest.raises(DataError, match="corrupt.pth: not a readable PyTorch checkpoint"):
    weights.load_state_dict(tmp_path / "corrupt.pth")


def test_reading_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
  path = tmp_path / "official.pth"
  path.write_bytes(b"whatever")
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail, as without torch
  with pytest.raises(DataError) as e:
    weights.load_state_dict(path)
  msg = str(e.value)
  assert "\n" not in msg and str(path) in msg and "pip install 'jaxcd[torch]'" in msg
