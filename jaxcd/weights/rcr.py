"""The RCR / RCL network (jaxcd.models.rcr): ImageNet ResNet-50 encoders, official checkpoints."""
from typing import Any, Mapping

from jaxcd.errors import DataError
from jaxcd.weights.resnet import _resnet_rules
from jaxcd.weights.rules import Variables, _Rule, _apply_rules, _conv, _is_dropped, _same


def _stem_kind(state_dict: Mapping[str, Any]) -> str | None:
  if "conv2.weight" in state_dict:
    return "deep"
  return "standard" if "conv1.weight" in state_dict else None


def rcr_backbone_from_imagenet(state_dict: Mapping[str, Any], expected: Variables, *,
                               stem: str = "deep", source: str = "state_dict") -> Variables:
  """ImageNet ResNet-50 -> {'params', 'batch_stats'} of `RCRNet`'s backbone, whose variables
  (arrays or ShapeDtypeStructs) are `expected`.

  stem='deep': the CSAIL / CCT `3x3resnet50-imagenet.pth` that SemiCD and RCL load: `conv1.weight`
  (64, 3, 3, 3), `bn1.*`, `conv2.*`, `bn2.*`, `conv3.weight` (128, 64, 3, 3), `bn3.*`, then
  torchvision's `layerN.i.*` and `fc.*`; torchcv's `prefix.conv1.weight` spelling is accepted.
  stem='standard': torchvision `resnet50` (`conv1.weight` (64, 3, 7, 7), `bn1.*`, ...).
  `fc` is skipped; a checkpoint of the other stem is an error naming the config.model.stem it needs.
  """
  sd = {k.removeprefix("prefix."): v for k, v in state_dict.items()}
  found = _stem_kind(sd)
  if found is not None and found != stem:
    kind = ("deep-stem (3x3 conv1-conv3)" if found == "deep" else "standard-stem (7x7 conv1, "
            "no conv2.weight)")
    raise DataError(f"{source}: a {kind} ResNet checkpoint, but config.model.stem={stem!r}; "
                    f"set config.model.stem={found!r}")
  what = (f"the rcr encoder (stem={stem!r}; ImageNet weights need config.model.width=64 and "
          "3 bands)")
  ignore = lambda k: _is_dropped(k) or k.startswith("fc.")
  return _apply_rules(sd, _resnet_rules(expected["params"]), expected, source, what, ignore)


def _rcr_official_rules(expected_params: Mapping[str, Any]) -> dict[str, _Rule]:
  def bn(torch_name: str, path: tuple[str, ...]) -> dict[str, _Rule]:
    return {f"{torch_name}.weight": ("params", path + ("scale",), _same),
            f"{torch_name}.bias": ("params", path + ("bias",), _same),
            f"{torch_name}.running_mean": ("batch_stats", path + ("mean",), _same),
            f"{torch_name}.running_var": ("batch_stats", path + ("var",), _same)}

  rules: dict[str, _Rule] = {}
  # SemiCD's encoder.base = Sequential(Sequential(prefix, maxpool), layer1, ..., layer4).
  for key, (coll, path, fn) in _resnet_rules(expected_params["backbone"]).items():
    if key.startswith("layer"):
      key = f"encoder.base.{key[len('layer')]}.{key[len('layerN.'):]}"
    else:
      key = f"encoder.base.0.0.{key}"
    rules[key] = (coll, ("backbone",) + path, fn)
  psp = expected_params["psp"]
  for i in range(sum(1 for k in psp if k.startswith("stage") and k.endswith("_conv"))):
    rules[f"encoder.psp.stages.{i}.1.weight"] = ("params", ("psp", f"stage{i}_conv", "kernel"), _conv)
    rules.update(bn(f"encoder.psp.stages.{i}.2", ("psp", f"stage{i}_bn")))
  rules["encoder.psp.bottleneck.0.weight"] = ("params", ("psp", "bottleneck_conv", "kernel"), _conv)
  rules.update(bn("encoder.psp.bottleneck.1", ("psp", "bottleneck_bn")))
  rules["main_decoder.upsample.0.weight"] = ("params", ("decoder", "conv1", "kernel"), _conv)
  rules["main_decoder.upsample.3.weight"] = ("params", ("decoder", "conv2", "kernel"), _conv)
  return rules


def rcr_from_official(state_dict: Mapping[str, Any], expected: Variables, *,
                      source: str = "state_dict") -> Variables:
  """Official SemiCD (RCR) / RC-Change-Detection (RCL) model state dict (`encoder.base.*`,
  `encoder.psp.*`, `main_decoder.upsample.*`) -> {'params', 'batch_stats'} of the `RCRNet` whose
  variables are `expected`. A DataParallel `module.` prefix is removed; RCR's `aux_decoders.*`
  (training-only) are skipped."""
  sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
  ignore = lambda k: _is_dropped(k) or k.startswith("aux_decoders.")
  return _apply_rules(sd, _rcr_official_rules(expected["params"]), expected, source,
                      "the official SemiCD/RCL CD_Model", ignore)
