"""The official STANet (justchenhao/STANet) state dicts -> jaxcd.models.stanet."""
from typing import Any, Mapping

from jaxcd.weights.dsamnet import _bn, _extractor_rules
from jaxcd.weights.rules import Variables, _Rule, _apply_rules, _conv, _is_dropped, _same


def _stanet_rules(expected_params: Mapping[str, Any]) -> dict[str, _Rule]:
  rules = _extractor_rules(expected_params, prefix="module.")  # F_mynet3 keeps mynet3 in `module`
  att = expected_params["attention"]

  def conv(torch_name: str, path: tuple[str, ...], bias: bool = True) -> None:
    rules[f"{torch_name}.weight"] = ("params", ("attention", *path, "kernel"), _conv)
    if bias:
      rules[f"{torch_name}.bias"] = ("params", ("attention", *path, "bias"), _same)
  if "gamma" in att:  # BAM
    for name in ("query_conv", "key_conv", "value_conv"):
      conv(f"Self_Att.{name}", (name,))
    rules["Self_Att.gamma"] = ("params", ("attention", "gamma"), _same)
    return rules
  for stage in sorted(k for k in att if k.startswith("stage")):  # PAM
    pre = f"Self_Att.stages.{stage.removeprefix('stage')}"
    for name in ("f_key", "f_query"):
      conv(f"{pre}.{name}.0", (stage, name))
      rules.update(_bn(f"{pre}.{name}.1", ("attention", stage, f"{name}_bn")))
    conv(f"{pre}.f_value", (stage, "f_value"))
  conv("Self_Att.conv_bn.0", ("conv_bn",), bias=False)
  return rules


def stanet_from_official(state_dict: Mapping[str, Any], expected: Variables, *,
                         source: str = "state_dict") -> Variables:
  """The official checkpoint's two state dicts merged into one map, `{**net_F, **net_A}` (the
  `*_net_F.pth` keys are module.backbone.* and module.decoder.*, the `*_net_A.pth` keys
  Self_Att.*; they do not overlap) -> {'params', 'batch_stats'} of the `STANet` (attention 'pam'
  or 'bam', as the checkpoint) whose variables are `expected`."""
  return _apply_rules(state_dict, _stanet_rules(expected["params"]), expected, source,
                      "the official STANet", _is_dropped)
