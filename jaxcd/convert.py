"""Weight import from PyTorch checkpoints: the official Dsfer-Net and torchvision's VGG16.

State dicts are plain `{name: np.ndarray}` maps (see `load_state_dict`), so only reading `.pth`
needs torch. Conversion is strict: an unknown, missing or mis-shaped entry raises `DataError`
naming it. Layouts: conv OIHW -> HWIO, Linear (out, in) -> (in, out), LayerNorm (C, H, W) ->
(H, W, C), BatchNorm running statistics -> the `batch_stats` collection.
"""
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.errors import DataError, one_line
from jaxcd.models.vgg import CONV_NAMES, TORCHVISION_CONV_INDICES, VGG16_WIDTHS

Variables = dict[str, Any]
_Rule = tuple[str, tuple[str, ...], Callable[[np.ndarray], np.ndarray]]  # collection, path, transform

_same = lambda w: w
_conv = lambda w: np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO
_linear = lambda w: np.transpose(w)  # (out, in) -> (in, out)
_chw = lambda w: np.transpose(w, (1, 2, 0))  # (C, H, W) -> (H, W, C)

# The official decoder's SingleConv3 blocks and 1x1 heads.
_DSFERNET_DECODER = ("dec5", "dec51", "dec4", "dec41", "dec3", "dec31", "dec2", "dec21",
                     "dec1", "dec11")
_DSFERNET_HEADS = ("out4", "out5", "outc")


def _vgg_rules(prefix: str, target: tuple[str, ...]) -> dict[str, _Rule]:
  rules = {}
  for idx, name in zip(TORCHVISION_CONV_INDICES, CONV_NAMES):
    rules[f"{prefix}{idx}.weight"] = ("params", target + (name, "kernel"), _conv)
    rules[f"{prefix}{idx}.bias"] = ("params", target + (name, "bias"), _same)
  return rules


def _dsfernet_rules() -> dict[str, _Rule]:
  rules = _vgg_rules("base.feats.", ("base",))
  for level in ("hopf4", "hopf5"):
    for x in "qkv":
      rules[f"{level}.linear_{x}.linear_qkv.weight"] = ("params", (level, f"W{x}"), _linear)
  for ln in ("layernorm1", "layernorm2"):
    rules[f"{ln}.weight"] = ("params", (ln, "scale"), _chw)
    rules[f"{ln}.bias"] = ("params", (ln, "bias"), _chw)
  for dec in _DSFERNET_DECODER:
    p = f"{dec}.single_conv."
    rules[p + "0.weight"] = ("params", (dec, "conv", "kernel"), _conv)
    rules[p + "0.bias"] = ("params", (dec, "conv", "bias"), _same)
    rules[p + "1.weight"] = ("params", (dec, "bn", "scale"), _same)
    rules[p + "1.bias"] = ("params", (dec, "bn", "bias"), _same)
    rules[p + "1.running_mean"] = ("batch_stats", (dec, "bn", "mean"), _same)
    rules[p + "1.running_var"] = ("batch_stats", (dec, "bn", "var"), _same)
  for head in _DSFERNET_HEADS:
    rules[f"{head}.conv.weight"] = ("params", (head, "kernel"), _conv)
    rules[f"{head}.conv.bias"] = ("params", (head, "bias"), _same)
  return rules


def _is_dropped(key: str) -> bool:
  return key.endswith("num_batches_tracked")  # a training counter; Flax BatchNorm has none


def _apply_rules(state_dict: Mapping[str, Any], rules: Mapping[str, _Rule], expected: Variables,
                 source: str, what: str, ignore: Callable[[str], bool]) -> Variables:
  unknown = sorted(k for k in state_dict if k not in rules and not ignore(k))
  if unknown:
    more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
    raise DataError(f"{source}: unexpected key {unknown[0]!r}{more} for {what}")
  missing = [k for k in rules if k not in state_dict]
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise DataError(f"{source}: missing key {missing[0]!r}{more} for {what}")
  out: Variables = {}
  for key, (collection, path, transform) in rules.items():
    value = transform(np.asarray(state_dict[key], np.float32))
    want = expected[collection]
    for p in path:
      want = want[p]
    if tuple(value.shape) != tuple(want.shape):
      raise DataError(f"{source}: {key!r} has shape {tuple(np.shape(state_dict[key]))}, which does "
                      f"not fit {what} ({'/'.join((collection,) + path)} wants {tuple(want.shape)})")
    node = out.setdefault(collection, {})
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  return out


def dsfernet_from_torch(state_dict: Mapping[str, Any], *, source: str = "state_dict") -> Variables:
  """Official `MyNet.state_dict()` (as numpy) -> {'params', 'batch_stats'} for `DsferNet`.

  The input size and class count are read from the LayerNorm and classifier shapes; build the
  model as `DsferNet(num_classes=K, input_size=S)` (S = 256 for the official weights).
  """
  from jaxcd.models.dsfernet import DsferNet  # keeps `import jaxcd.convert` light
  what = "the official Dsfer-Net MyNet"
  ln, head = "layernorm1.weight", "outc.conv.weight"
  for key in (ln, head):
    if key not in state_dict:
      raise DataError(f"{source}: missing key {key!r} for {what}")
  ln_shape, head_shape = np.shape(state_dict[ln]), np.shape(state_dict[head])
  if len(ln_shape) != 3 or ln_shape[1] != ln_shape[2] or len(head_shape) != 4:
    raise DataError(f"{source}: {ln!r} {ln_shape} / {head!r} {head_shape} are not MyNet's shapes")
  size = 16 * ln_shape[1]
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  model = DsferNet(num_classes=head_shape[0], input_size=size)
  expected = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)
  return _apply_rules(state_dict, _dsfernet_rules(), expected, source, what, _is_dropped)


def vgg16_from_torchvision(state_dict: Mapping[str, Any], *, source: str = "state_dict") -> dict[str, Any]:
  """torchvision `vgg16` state dict (`features.0.weight`, ...) -> `VGG16Features` params.

  The classifier is not part of the encoder and is skipped; anything else unknown is an error
  (e.g. a `vgg16_bn` checkpoint, whose conv indices differ).
  """
  expected: dict[str, Any] = {}
  c_in = 3
  for name, width in zip(CONV_NAMES, (w for ws in VGG16_WIDTHS for w in ws)):
    expected[name] = {"kernel": jax.ShapeDtypeStruct((3, 3, c_in, width), jnp.float32),
                      "bias": jax.ShapeDtypeStruct((width,), jnp.float32)}
    c_in = width
  ignore = lambda k: k.startswith("classifier.")
  out = _apply_rules(state_dict, _vgg_rules("features.", ()), {"params": expected}, source,
                     "torchvision's VGG16", ignore)
  return out["params"]


def _to_numpy(key: str, value: Any, path: Path) -> np.ndarray:
  import torch
  if not isinstance(value, torch.Tensor):
    raise DataError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
  value = value.detach().cpu()
  if value.is_floating_point():
    value = value.float()  # numpy has no bfloat16
  return value.numpy()


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
  """Reads a state dict from `.pth`/`.pt` (needs torch), `.safetensors` or `.npz` as numpy arrays."""
  path = Path(path)
  if not path.is_file():
    raise DataError(f"{path}: checkpoint file not found")
  suffix = path.suffix.lower()
  if suffix in (".pth", ".pt"):
    try:
      import torch
    except ImportError:
      raise DataError(f"{path}: reading a .pth checkpoint needs PyTorch: "
                      "pip install 'jaxcd[torch]'") from None
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or foreign files
      raise DataError(f"{path}: not a readable PyTorch checkpoint: {one_line(e)[:300]}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
      obj = obj["state_dict"]  # common {'state_dict': ..., 'epoch': ...} wrapping
    if not isinstance(obj, Mapping):
      raise DataError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {k: _to_numpy(k, v, path) for k, v in obj.items()}
  if suffix == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise DataError(f"{path}: reading .safetensors needs safetensors: "
                      "pip install 'jaxcd[torch]'") from None
    try:
      return dict(load_file(str(path)))
    except Exception as e:
      raise DataError(f"{path}: not a readable safetensors file: {one_line(e)[:300]}") from None
  if suffix == ".npz":
    try:
      with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
    except Exception as e:
      raise DataError(f"{path}: not a readable .npz file: {one_line(e)[:300]}") from None
  raise DataError(f"{path}: unknown checkpoint format {suffix!r}; use .pth, .safetensors or .npz")
