"""`python -m jaxcd.convert MODEL --torch CKPT --workdir W --config C`: the stored checkpoint
is the converted model (Dsfer-Net: checked against a PyTorch MyNet with the official names where
torch is installed, and against explicit layout transposes of an .npz elsewhere; SNUNet-CD and
ChangeFormer: a torch re-statement's random state dict), and `jaxcd.evaluate` loads it; the
config is checked against the weights; --config is required."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd import checkpointing
from jaxcd.config_base import sibling
from jaxcd.data import source_from_config
from jaxcd.data.normalize import make_normalizer
from jaxcd.evaluate import evaluate_workdir
from jaxcd.models.dsfernet import DsferNet
from jaxcd.optim import make_optimizer
from jaxcd.state import build_model, create_state
from jaxcd.weights.dsfernet import _dsfernet_rules
from jaxcd.weights.rules import _chw, _conv, _linear

try:
  from tests.conftest import REPO, last_json, run_module
except ImportError:
  from conftest import REPO, last_json, run_module

S = 64  # configs/dsfernet.py builds the official model for 64x64 inputs
TORCH_REASON = "torch not installed (pip install 'jaxcd[torch]'); the check needs the PyTorch reference"
TINY = {"data.num_train": 4, "data.num_val": 2, "data.num_test": 3, "input.eval_batch_size": 3,
        "progress": False}


def _config(**extra):
  c = sibling(str(REPO / "configs" / "x.py"), "dsfernet")
  for key, value in {**TINY, **extra}.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def _flags(**extra) -> list[str]:
  return [f"--config.{k}={v}" for k, v in {**TINY, **extra}.items()]


def _convert(ckpt, workdir, *extra, check=True):
  return run_module("jaxcd.convert", "dsfernet", "--torch", str(ckpt), "--workdir", str(workdir),
                    "--config", str(REPO / "configs" / "dsfernet.py"), *extra, check=check,
                    timeout=900)


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.slow
def test_converted_torch_checkpoint_evaluates_like_the_torch_model(tmp_path):
  pytest.importorskip("torch", reason=TORCH_REASON)
  import torch
  try:
    from tests.torch_reference import dsfernet_ref
  except ImportError:
    from torch_reference import dsfernet_ref
  torch.manual_seed(0)
  net = dsfernet_ref.randomize_(dsfernet_ref.MyNet(input_size=S), seed=5).eval()
  ckpt = tmp_path / "official.pth"
  torch.save(net.state_dict(), ckpt)
  workdir = tmp_path / "run"
  res = last_json(_convert(ckpt, workdir, *_flags()).stdout)
  assert res["input_size"] == S and res["converted_from"] == str(ckpt)

  config = _config()
  # The torch model's predictions on the tiny synthetic test split, normalised as jaxcd does.
  src = source_from_config(config.data, "test")
  mean, std = np.asarray(config.data.mean, np.float32), np.asarray(config.data.std, np.float32)
  to_torch = lambda x: torch.from_numpy(((x.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None])
  tp = fp = fn = tn = 0
  recs = [src[i] for i in range(len(src))]
  with torch.no_grad():
    torch_logits = [net(to_torch(r["image_a"]), to_torch(r["image_b"]))[0][0].numpy().transpose(1, 2, 0)
                    for r in recs]
  for r, lg in zip(recs, torch_logits):
    pred, y = lg.argmax(-1), r["label"]
    valid = y != 255
    tp += np.sum((pred == 1) & (y == 1) & valid)
    fp += np.sum((pred == 1) & (y == 0) & valid)
    fn += np.sum((pred == 0) & (y == 1) & valid)
    tn += np.sum((pred == 0) & (y == 0) & valid)
  assert tp + fp > 0 and fn + tn > 0, "degenerate reference: it predicts one class only"

  # The stored state, restored as evaluate/predict do, gives the torch logits.
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  model = build_model(config)
  tx, _ = make_optimizer(config.optim, config.num_steps)
  abstract = create_state(model, tx, (1, S, S, 3), config.seed, mesh, abstract=True)
  state, meta, step, which = checkpointing.restore_for_inference(str(workdir), abstract)
  assert (step, which, meta["converted_from"]) == (0, "best", str(ckpt))
  norm = make_normalizer(config)
  got = model.apply(state.variables(), norm(jnp.asarray(recs[0]["image_a"][None])),
                    norm(jnp.asarray(recs[0]["image_b"][None])), train=False)["logits"][0]
  assert _rel(got, torch_logits[0]) < 1e-4

  # And jaxcd.evaluate's metrics of the workdir are those of the torch predictions.
  m = evaluate_workdir(config, str(workdir), "test")
  assert m["pairs"] == len(src) and m["step"] == 0
  total = tp + fp + fn + tn
  assert m["oa"] == pytest.approx((tp + tn) / total, abs=2 / total)  # an argmax tie may flip a pixel
  assert m["precision"] == pytest.approx(tp / (tp + fp), abs=2e-3)


def _npz_state_dict(path, seed=0) -> dict[str, np.ndarray]:
  """Random arrays in the official layout (OIHW convs, (out, in) Linear, (C,H,W) LayerNorm)."""
  x = jax.ShapeDtypeStruct((1, S, S, 3), jnp.float32)
  shapes = jax.eval_shape(lambda a: DsferNet(input_size=S).init(jax.random.key(0), a, a), x)
  rng = np.random.default_rng(seed)
  to_torch = {_conv: (3, 2, 0, 1), _linear: (1, 0), _chw: (2, 0, 1)}
  sd = {}
  for key, (coll, tree_path, transform) in _dsfernet_rules().items():
    leaf = shapes[coll]
    for p in tree_path:
      leaf = leaf[p]
    shape = leaf.shape
    if transform in to_torch:
      shape = tuple(shape[i] for i in to_torch[transform])
    value = rng.normal(0, 0.05, shape).astype(np.float32)
    sd[key] = np.abs(value) + 0.5 if key.endswith("running_var") else value
  np.savez(path, **sd)
  return sd


@pytest.mark.slow
def test_npz_checkpoint_without_torch(tmp_path):
  sd = _npz_state_dict(tmp_path / "official.npz")
  workdir = tmp_path / "run"
  res = last_json(_convert(tmp_path / "official.npz", workdir, *_flags()).stdout)
  # The official count at 256 with the (C,H,W) LayerNorms resized to 64x64 inputs.
  ln = lambda size: 2 * 512 * ((size // 16) ** 2 + (size // 8) ** 2)
  assert res["params"] == 34_085_990 - ln(256) + ln(S)
  state, step = checkpointing.load_numpy(str(workdir), which=checkpointing.BEST)
  assert step == 0
  p, bs = state["params"], state["batch_stats"]
  np.testing.assert_array_equal(p["base"]["conv3_2"]["kernel"],
                                sd["base.feats.12.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["hopf4"]["Wq"], sd["hopf4.linear_q.linear_qkv.weight"].T)
  np.testing.assert_array_equal(p["layernorm2"]["scale"], sd["layernorm2.weight"].transpose(1, 2, 0))
  np.testing.assert_array_equal(bs["dec31"]["bn"]["var"], sd["dec31.single_conv.1.running_var"])
  np.testing.assert_array_equal(p["outc"]["bias"], sd["outc.conv.bias"])
  assert int(state["step"]) == 0
  m = evaluate_workdir(_config(), str(workdir), "test")
  assert m["pairs"] == 3 and 0.0 <= m["oa"] <= 1.0


@pytest.mark.slow  # several command-line runs
def test_cli_errors_are_one_line(tmp_path):
  _npz_state_dict(tmp_path / "w.npz")
  proc = _convert(tmp_path / "w.npz", tmp_path / "run", "--config.model.input_size=128", check=False)
  err = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode == 2 and err.startswith("error: ")
  assert "w.npz" in err and "config.model.input_size=128" in err and "64x64" in err
  proc = _convert(tmp_path / "missing.pth", tmp_path / "run", check=False)
  assert proc.returncode == 2 and "missing.pth: checkpoint file not found" in proc.stderr


def test_config_is_required(tmp_path):
  # No default config is looked up under configs/: without --config absl refuses to start.
  proc = run_module("jaxcd.convert", "dsfernet", "--torch", str(tmp_path / "w.npz"), "--workdir",
                    str(tmp_path / "run"), check=False)
  assert proc.returncode != 0 and "Flag --config must have a value" in proc.stderr
  assert not (tmp_path / "run").exists()


# Small official-layout networks (tests/torch_reference) and the config fields that match them.
SMALL_CF = dict(embed_dim=32, embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))
RIVALS = {"snunet": {"width": 8}, "changeformer": SMALL_CF}


def _torch_reference(model: str):
  try:
    from tests.torch_reference import changeformer_ref, snunet_ref
  except ImportError:
    from torch_reference import changeformer_ref, snunet_ref
  if model == "snunet":
    return snunet_ref.SNUNetECAM(width=8)
  return changeformer_ref.ChangeFormerV6(**SMALL_CF)


def _config_file(tmp_path, model: str, fields: dict) -> str:
  """A config file that is configs/<model>.py with `fields` set in config.model."""
  lines = ["from jaxcd.config_base import load", "", "", "def get_config():",
           f"  c = load({str(REPO / 'configs' / f'{model}.py')!r})"]
  lines += [f"  c.model.{k} = {v!r}" for k, v in fields.items()]
  lines += ["  return c", ""]
  path = tmp_path / f"{model}_small.py"
  path.write_text("\n".join(lines))
  return str(path)


@pytest.mark.slow  # a CLI run each (no model compile: abstract shapes and the optimizer init)
@pytest.mark.parametrize("model", sorted(RIVALS))
def test_rival_checkpoint_is_the_converted_state_dict(tmp_path, model):
  pytest.importorskip("torch", reason=TORCH_REASON)
  import torch
  from jaxcd import weights
  from jaxcd.models import get_model
  torch.manual_seed(0)
  net = _torch_reference(model)
  ckpt = tmp_path / "official.pth"
  torch.save(net.state_dict(), ckpt)
  sd = {k: v.numpy() for k, v in net.state_dict().items()}
  proc = run_module("jaxcd.convert", model, "--torch", str(ckpt), "--workdir",
                    str(tmp_path / "run"), "--config", _config_file(tmp_path, model, RIVALS[model]),
                    timeout=900)
  res = last_json(proc.stdout)
  assert res["model"] == model and res["converted_from"] == str(ckpt)
  # Every parameter of the torch module is stored (BatchNorm statistics are not parameters).
  assert res["params"] == sum(p.numel() for p in net.parameters())

  state, step = checkpointing.load_numpy(str(tmp_path / "run"), which=checkpointing.BEST)
  assert step == 0 and int(state["step"]) == 0
  x = jax.ShapeDtypeStruct((1, S, S, 3), jnp.float32)
  net_j = get_model(model, **RIVALS[model])
  expected = jax.eval_shape(lambda a: net_j.init(jax.random.key(0), a, a, train=False), x)
  convert = getattr(weights, f"{model}_from_official")
  want = convert(sd, expected)
  for coll in ("params", "batch_stats"):
    got_leaves = jax.tree_util.tree_leaves_with_path(state[coll])
    want_leaves = dict(jax.tree_util.tree_leaves_with_path(want[coll]))
    assert len(got_leaves) == len(want_leaves)
    for path, leaf in got_leaves:
      np.testing.assert_array_equal(leaf, want_leaves[path], err_msg=jax.tree_util.keystr(path))
  # And a few leaves against the torch tensors directly (layouts written out, not converted).
  p = state["params"]
  if model == "snunet":
    np.testing.assert_array_equal(p["conv_final"]["kernel"], sd["conv_final.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["Up1_0"]["kernel"],
                                  sd["Up1_0.up.weight"].transpose(2, 3, 0, 1)[::-1, ::-1])
  else:
    np.testing.assert_array_equal(p["encoder"]["block1_0"]["attn"]["q"]["kernel"],
                                  sd["Tenc_x2.block1.0.attn.q.weight"].T)
    np.testing.assert_array_equal(state["batch_stats"]["decoder"]["linear_fuse_bn"]["var"],
                                  sd["TDec_x2.linear_fuse.1.running_var"])


def test_wrong_model_for_the_config_is_one_line(tmp_path):
  # The model name is checked before the checkpoint is read: no file is needed.
  proc = run_module("jaxcd.convert", "snunet", "--torch", str(tmp_path / "w.npz"), "--workdir",
                    str(tmp_path / "run"), "--config", str(REPO / "configs" / "dsamnet.py"),
                    check=False)
  err = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert err == ("error: config.model.name is 'dsamnet'; converting snunet weights needs a "
                 "snunet config (e.g. configs/snunet.py)")


def test_config_disagreeing_with_the_weights_names_the_field(tmp_path):
  # In-process and without jit: a model without a converter, the bands and classes the weights
  # imply, and STANet's two files.
  from jaxcd import convert
  with pytest.raises(Exception, match=r"no official-weights converter for 'bit'; choose from "
                     r"changeformer, dsamnet, dsfernet, rcr, snunet, stanet, vct$"):
    convert.convert_to_workdir("bit", sibling(str(REPO / "configs" / "x.py"), "bit"),
                               tmp_path / "w.npz", tmp_path / "run")
  c = sibling(str(REPO / "configs" / "x.py"), "snunet")
  sd = {"conv0_0.conv1.weight": np.zeros((8, 4, 3, 3), np.float32),
        "conv_final.weight": np.zeros((3, 32, 1, 1), np.float32)}
  with pytest.raises(Exception, match=r"^w.npz: the weights take 4 bands but config.data.num_bands=3$"):
    convert.check_implied("snunet", sd, c, "w.npz")
  sd["conv0_0.conv1.weight"] = np.zeros((8, 3, 3, 3), np.float32)
  with pytest.raises(Exception, match=r"the weights have 3 classes but config.model.num_classes=2$"):
    convert.check_implied("snunet", sd, c, "w.npz")
  np.savez(tmp_path / "f.npz", **{"module.backbone.conv1.weight": np.ones((2, 3, 1, 1), np.float32)})
  np.savez(tmp_path / "a.npz", **{"Self_Att.gamma": np.full((1,), 2.0, np.float32)})
  merged = convert.load_merged(f"{tmp_path / 'f.npz'},{tmp_path / 'a.npz'}")
  assert sorted(merged) == ["Self_Att.gamma", "module.backbone.conv1.weight"]
  assert float(merged["Self_Att.gamma"][0]) == 2.0
  with pytest.raises(Exception, match="also in an earlier --torch file"):
    convert.load_merged(f"{tmp_path / 'f.npz'},{tmp_path / 'f.npz'}")
