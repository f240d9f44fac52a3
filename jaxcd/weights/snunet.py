"""The official SNUNet-CD (`SNUNet_ECAM`, likuan6/SNUNet-CD) state dict -> jaxcd.models.snunet."""
from typing import Any, Mapping

import numpy as np

from jaxcd.weights.rules import Variables, _Rule, _apply_rules, _conv, _is_dropped, _same

# ConvTranspose2d (in, out, kh, kw) -> Flax ConvTranspose (kh, kw, in, out); Flax does not flip
# the kernel (transpose_kernel=False), torch's transposed conv does, so flip it here.
_convt = lambda w: np.transpose(w, (2, 3, 0, 1))[::-1, ::-1]


def _snunet_rules(expected_params: Mapping[str, Any]) -> dict[str, _Rule]:
  rules: dict[str, _Rule] = {}
  for name, module in expected_params.items():
    if name.startswith("conv") and name != "conv_final":  # NestedBlock conv{i}_{j}
      for conv in ("conv1", "conv2"):
        rules[f"{name}.{conv}.weight"] = ("params", (name, conv, "kernel"), _conv)
        rules[f"{name}.{conv}.bias"] = ("params", (name, conv, "bias"), _same)
      for bn in ("bn1", "bn2"):
        rules[f"{name}.{bn}.weight"] = ("params", (name, bn, "scale"), _same)
        rules[f"{name}.{bn}.bias"] = ("params", (name, bn, "bias"), _same)
        rules[f"{name}.{bn}.running_mean"] = ("batch_stats", (name, bn, "mean"), _same)
        rules[f"{name}.{bn}.running_var"] = ("batch_stats", (name, bn, "var"), _same)
    elif name.startswith("Up"):
      rules[f"{name}.up.weight"] = ("params", (name, "kernel"), _convt)
      rules[f"{name}.up.bias"] = ("params", (name, "bias"), _same)
    elif name in ("ca", "ca1"):
      for fc in ("fc1", "fc2"):
        rules[f"{name}.{fc}.weight"] = ("params", (name, fc, "kernel"), _conv)
  rules["conv_final.weight"] = ("params", ("conv_final", "kernel"), _conv)
  rules["conv_final.bias"] = ("params", ("conv_final", "bias"), _same)
  return rules


def snunet_from_official(state_dict: Mapping[str, Any], expected: Variables, *,
                         source: str = "state_dict") -> Variables:
  """Official `SNUNet_ECAM` state dict (conv{i}_{j}.*, Up{i}_{j}.up.*, ca.*, ca1.*, conv_final.*)
  -> {'params', 'batch_stats'} of the `SNUNet` whose variables (arrays or ShapeDtypeStructs) are
  `expected`. A DataParallel `module.` prefix is removed."""
  sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
  return _apply_rules(sd, _snunet_rules(expected["params"]), expected, source,
                      "the official SNUNet_ECAM", _is_dropped)
