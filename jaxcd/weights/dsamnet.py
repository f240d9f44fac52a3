"""The official DSAMNet (liumency/DSAMNet) state dict -> jaxcd.models.dsamnet."""
from typing import Any, Mapping

from jaxcd.weights.rules import Variables, _Rule, _apply_rules, _conv, _is_dropped, _same
from jaxcd.weights.snunet import _convt

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _bn(torch_name: str, path: tuple[str, ...]) -> dict[str, _Rule]:
  return {f"{torch_name}.{leaf}": (coll, path + (name,), _same) for leaf, (coll, name) in _BN.items()}


def _extractor_rules(expected_params: Mapping[str, Any], prefix: str = "") -> dict[str, _Rule]:
  """The official ResNet-18 + multi-grid backbone (`{prefix}backbone.*`) and decoder
  (`{prefix}decoder.*`) that DSAMNet and STANet share -> params['backbone'], params['decoder']."""
  bb = f"{prefix}backbone"
  rules: dict[str, _Rule] = {f"{bb}.conv1.weight": ("params", ("backbone", "conv1", "kernel"), _conv)}
  rules.update(_bn(f"{bb}.bn1", ("backbone", "bn1")))
  for block, module in expected_params["backbone"].items():
    if not block.startswith("layer"):
      continue
    stage, i = block.split("_")  # "layer2_0" -> torch "layer2.0"
    pre, path = f"{bb}.{stage}.{i}", ("backbone", block)
    for k in ("1", "2"):
      rules[f"{pre}.conv{k}.weight"] = ("params", path + (f"conv{k}", "kernel"), _conv)
      rules.update(_bn(f"{pre}.bn{k}", path + (f"bn{k}",)))
    if "downsample_conv" in module:
      rules[f"{pre}.downsample.0.weight"] = ("params", path + ("downsample_conv", "kernel"), _conv)
      rules.update(_bn(f"{pre}.downsample.1", path + ("downsample_bn",)))
  dec = f"{prefix}decoder"
  for k in (2, 3, 4, 5):
    rules[f"{dec}.dr{k}.conv1.weight"] = ("params", ("decoder", f"dr{k}_conv", "kernel"), _conv)
    rules.update(_bn(f"{dec}.dr{k}.bn1", ("decoder", f"dr{k}_bn")))
  for idx, (conv, bn) in ((0, ("last_conv1", "last_bn1")), (4, ("last_conv2", "last_bn2"))):
    rules[f"{dec}.last_conv.{idx}.weight"] = ("params", ("decoder", conv, "kernel"), _conv)
    rules.update(_bn(f"{dec}.last_conv.{idx + 1}", ("decoder", bn)))
  return rules


def _dsamnet_rules(expected_params: Mapping[str, Any]) -> dict[str, _Rule]:
  rules = _extractor_rules(expected_params)
  for cb in ("cbam0", "cbam1"):
    for torch_name, name in (("ca.fc1", "ca_fc1"), ("ca.fc2", "ca_fc2"), ("sa.conv1", "sa_conv")):
      rules[f"{cb}.{torch_name}.weight"] = ("params", (cb, name, "kernel"), _conv)
  for ds in ("ds_lyr2", "ds_lyr3"):
    for conv in ("dsconv", "outconv"):
      rules[f"{ds}.{conv}.weight"] = ("params", (ds, conv, "kernel"), _convt)
      rules[f"{ds}.{conv}.bias"] = ("params", (ds, conv, "bias"), _same)
    rules.update(_bn(f"{ds}.bn", (ds, "bn")))
  return rules


def dsamnet_from_official(state_dict: Mapping[str, Any], expected: Variables, *,
                          source: str = "state_dict") -> Variables:
  """Official `DSAMNet` state dict (backbone.*, decoder.*, cbam0/1.*, ds_lyr2/3.*) ->
  {'params', 'batch_stats'} of the `DSAMNet` whose variables are `expected`. A DataParallel
  `module.` prefix is removed."""
  sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
  return _apply_rules(sd, _dsamnet_rules(expected["params"]), expected, source,
                      "the official DSAMNet", _is_dropped)
