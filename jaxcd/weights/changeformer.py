"""The official ChangeFormerV6 (wgcban/ChangeFormer) state dict -> jaxcd.models.changeformer."""
from typing import Any, Mapping

from jaxcd.weights.rules import Variables, _Rule, _apply_rules, _conv, _is_dropped, _linear, _same
from jaxcd.weights.snunet import _convt

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _bn(torch_name: str, path: tuple[str, ...]) -> dict[str, _Rule]:
  return {f"{torch_name}.{leaf}": (coll, path + (name,), _same) for leaf, (coll, name) in _BN.items()}


def _layer(torch_name: str, path: tuple[str, ...], kernel) -> dict[str, _Rule]:
  """A conv/Linear: weight -> kernel (laid out by `kernel`), bias -> bias."""
  return {f"{torch_name}.weight": ("params", path + ("kernel",), kernel),
          f"{torch_name}.bias": ("params", path + ("bias",), _same)}


def _ln(torch_name: str, path: tuple[str, ...]) -> dict[str, _Rule]:
  return {f"{torch_name}.weight": ("params", path + ("scale",), _same),
          f"{torch_name}.bias": ("params", path + ("bias",), _same)}


def _changeformer_rules(expected_params: Mapping[str, Any]) -> dict[str, _Rule]:
  rules: dict[str, _Rule] = {}
  enc, e = "Tenc_x2", ("encoder",)
  for name, module in expected_params["encoder"].items():
    if name.startswith("patch_embed"):
      rules.update(_layer(f"{enc}.{name}.proj", e + (name, "proj"), _conv))
      rules.update(_ln(f"{enc}.{name}.norm", e + (name, "norm")))
    elif name.startswith("norm"):
      rules.update(_ln(f"{enc}.{name}", e + (name,)))
    else:  # "block2_1" -> torch "block2.1"
      stage, i = name.split("_")
      pre, path = f"{enc}.{stage}.{i}", e + (name,)
      for ln in ("norm1", "norm2"):
        rules.update(_ln(f"{pre}.{ln}", path + (ln,)))
      for fc in ("q", "kv", "proj"):
        rules.update(_layer(f"{pre}.attn.{fc}", path + ("attn", fc), _linear))
      if "sr" in module["attn"]:
        rules.update(_layer(f"{pre}.attn.sr", path + ("attn", "sr"), _conv))
        rules.update(_ln(f"{pre}.attn.norm", path + ("attn", "norm")))
      rules.update(_layer(f"{pre}.mlp.fc1", path + ("mlp", "fc1"), _linear))
      rules.update(_layer(f"{pre}.mlp.dwconv.dwconv", path + ("mlp", "dwconv"), _conv))
      rules.update(_layer(f"{pre}.mlp.fc2", path + ("mlp", "fc2"), _linear))
  dec, d = "TDec_x2", ("decoder",)
  for s in range(1, 5):
    rules.update(_layer(f"{dec}.linear_c{s}.proj", d + (f"linear_c{s}",), _linear))
    for head in (f"diff_c{s}", f"make_pred_c{s}"):  # Sequential: 0 conv, 1 ReLU, 2 BN, 3 conv
      rules.update(_layer(f"{dec}.{head}.0", d + (head, "conv1"), _conv))
      rules.update(_bn(f"{dec}.{head}.2", d + (head, "bn")))
      rules.update(_layer(f"{dec}.{head}.3", d + (head, "conv2"), _conv))
  rules.update(_layer(f"{dec}.linear_fuse.0", d + ("linear_fuse",), _conv))
  rules.update(_bn(f"{dec}.linear_fuse.1", d + ("linear_fuse_bn",)))
  for k in ("2x", "1x"):
    rules.update(_layer(f"{dec}.convd{k}.conv2d", d + (f"convd{k}",), _convt))
    for conv in ("conv1", "conv2"):
      rules.update(_layer(f"{dec}.dense_{k}.0.{conv}.conv2d", d + (f"dense_{k}", conv), _conv))
  rules.update(_layer(f"{dec}.change_probability.conv2d", d + ("change_probability",), _conv))
  return rules


def changeformer_from_official(state_dict: Mapping[str, Any], expected: Variables, *,
                               source: str = "state_dict") -> Variables:
  """Official `ChangeFormerV6` state dict (Tenc_x2.*, TDec_x2.*; a training checkpoint's
  `model_G_state_dict`) -> {'params', 'batch_stats'} of the `ChangeFormer` whose variables
  (arrays or ShapeDtypeStructs) are `expected`. A DataParallel `module.` prefix is removed."""
  sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
  return _apply_rules(sd, _changeformer_rules(expected["params"]), expected, source,
                      "the official ChangeFormerV6", _is_dropped)
