"""The official VcT (`Reliable_Transformer`, Event-AHU/VcT_Remote_Sensing_Change_Detection) state
dict -> jaxcd.models.vct."""
from typing import Any, Mapping

from jaxcd.weights.resnet import _resnet_rules
from jaxcd.weights.rules import Variables, _Rule, _apply_rules, _conv, _is_dropped, _linear, _same

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
# Registered by the official module but never used in its forward: torchvision's layer4 and fc
# (the trunk stops after layer3) and the GCN bias (GraphConvolution.forward never adds it).
_UNUSED = ("resnet.layer4.", "resnet.fc.", "gc1.bias")


def _layer_rules(torch_prefix: str, name: str, attention: tuple[str, ...]) -> dict[str, _Rule]:
  """One Residual(PreNorm(attention)) + Residual(PreNorm(FeedForward)) pair of the official
  help_funcs.py (`layers.i.0.fn.{norm,fn.*}`, `layers.i.1.fn.{norm,fn.net.0,fn.net.3}`)."""
  a, f = f"{torch_prefix}.0.fn", f"{torch_prefix}.1.fn"
  rules: dict[str, _Rule] = {}
  for torch_norm, norm in ((f"{a}.norm", "attn_norm"), (f"{f}.norm", "ff_norm")):
    rules[f"{torch_norm}.weight"] = ("params", (name, norm, "scale"), _same)
    rules[f"{torch_norm}.bias"] = ("params", (name, norm, "bias"), _same)
  for proj in attention:  # bias-free projections
    rules[f"{a}.fn.{proj}.weight"] = ("params", (name, "attn", proj, "kernel"), _linear)
  if attention:
    rules[f"{a}.fn.to_out.0.weight"] = ("params", (name, "attn", "to_out", "kernel"), _linear)
    rules[f"{a}.fn.to_out.0.bias"] = ("params", (name, "attn", "to_out", "bias"), _same)
  for idx, fc in (("0", "fc1"), ("3", "fc2")):
    rules[f"{f}.fn.net.{idx}.weight"] = ("params", (name, "ff", fc, "kernel"), _linear)
    rules[f"{f}.fn.net.{idx}.bias"] = ("params", (name, "ff", fc, "bias"), _same)
  return rules


def _vct_rules(expected_params: Mapping[str, Any]) -> dict[str, _Rule]:
  rules: dict[str, _Rule] = {
      k: (coll, ("backbone",) + path, fn)
      for k, (coll, path, fn) in _resnet_rules(expected_params["backbone"], prefix="resnet.").items()}
  rules["conv_pred.weight"] = ("params", ("conv_pred", "kernel"), _conv)
  rules["conv_pred.bias"] = ("params", ("conv_pred", "bias"), _same)
  rules["classifier.0.weight"] = ("params", ("classifier_conv1", "kernel"), _conv)
  rules.update({f"classifier.1.{leaf}": (coll, ("classifier_bn", name), _same)
                for leaf, (coll, name) in _BN.items()})
  rules["classifier.3.weight"] = ("params", ("classifier_conv2", "kernel"), _conv)
  rules["classifier.3.bias"] = ("params", ("classifier_conv2", "bias"), _same)
  rules["pos_embedding"] = ("params", ("pos_embedding",), _same)
  rules["gc1.weight"] = ("params", ("gc1", "kernel"), _same)  # already (in, out)
  for name in expected_params:
    kind, _, i = name.rpartition("_")
    if kind == "encoder":
      rules.update(_layer_rules(f"transformer.layers.{i}", name, ("to_qkv",)))
    elif kind == "cross":
      rules.update(_layer_rules(f"transformerCross.layers.{i}", name, ()))
    elif kind == "decoder":
      rules.update(_layer_rules(f"transformer_decoder.layers.{i}", name, ("to_q", "to_k", "to_v")))
  return rules


def vct_from_official(state_dict: Mapping[str, Any], expected: Variables, *,
                      source: str = "state_dict") -> Variables:
  """Official `Reliable_Transformer` state dict (resnet.*, conv_pred, classifier, pos_embedding,
  transformer, transformerCross, transformer_decoder, gc1; the trainer saves it as
  `model_G_state_dict`, which `load_state_dict` unwraps) -> {'params', 'batch_stats'} of the
  `VcT` whose variables are `expected`. A DataParallel `module.` prefix is removed; the unused
  layer4, fc and GCN bias are skipped."""
  sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
  ignore = lambda k: _is_dropped(k) or k.startswith(_UNUSED)
  return _apply_rules(sd, _vct_rules(expected["params"]), expected, source,
                      "the official VcT Reliable_Transformer", ignore)
