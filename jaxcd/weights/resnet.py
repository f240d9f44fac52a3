"""torchvision ResNet -> jaxcd.models.resnet.ResNet."""
from typing import Any, Mapping

from jaxcd.weights.rules import Variables, _Rule, _apply_rules, _conv, _is_dropped, _same


def _resnet_rules(expected_params: Mapping[str, Any], prefix: str = "") -> dict[str, _Rule]:
  """Rules for every module present in a `ResNet` params tree (torchvision names)."""
  def bn(torch_name: str, path: tuple[str, ...]) -> dict[str, _Rule]:
    return {f"{prefix}{torch_name}.weight": ("params", path + ("scale",), _same),
            f"{prefix}{torch_name}.bias": ("params", path + ("bias",), _same),
            f"{prefix}{torch_name}.running_mean": ("batch_stats", path + ("mean",), _same),
            f"{prefix}{torch_name}.running_var": ("batch_stats", path + ("var",), _same)}

  rules: dict[str, _Rule] = {}
  for name, sub in expected_params.items():
    if name.startswith("conv"):  # stem conv1 (conv2, conv3 with a deep stem)
      rules[f"{prefix}{name}.weight"] = ("params", (name, "kernel"), _conv)
    elif name.startswith("bn"):
      rules.update(bn(name, (name,)))
    elif name.startswith("layer"):
      torch_block = name.replace("_", ".")  # layer2_0 -> layer2.0
      for child in sub:
        if child == "downsample_conv":
          rules[f"{prefix}{torch_block}.downsample.0.weight"] = ("params", (name, child, "kernel"), _conv)
        elif child == "downsample_bn":
          rules.update(bn(f"{torch_block}.downsample.1", (name, child)))
        elif child.startswith("conv"):
          rules[f"{prefix}{torch_block}.{child}.weight"] = ("params", (name, child, "kernel"), _conv)
        else:
          rules.update(bn(f"{torch_block}.{child}", (name, child)))
  return rules


def resnet_from_torchvision(state_dict: Mapping[str, Any], expected: Variables, *,
                            source: str = "state_dict") -> Variables:
  """torchvision `resnet*` state dict -> {'params', 'batch_stats'} of a `ResNet` whose variables
  (arrays or ShapeDtypeStructs) are `expected`. Stages beyond the model's (a truncated trunk)
  and the classifier `fc` are skipped; anything else unknown is an error."""
  num_stages = sum(1 for k in expected["params"] if k.startswith("layer") and k.endswith("_0"))
  unused = tuple(f"layer{s}." for s in range(num_stages + 1, 5)) + ("fc.",)
  ignore = lambda k: _is_dropped(k) or k.startswith(unused)
  return _apply_rules(state_dict, _resnet_rules(expected["params"]), expected, source,
                      "torchvision's ResNet", ignore)
