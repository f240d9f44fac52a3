"""ImageNet backbones for training (`config.init.backbone`)."""
from typing import Any, Mapping

from jaxcd.errors import ConfigError
from jaxcd.weights.rcr import rcr_backbone_from_imagenet
from jaxcd.weights.resnet import resnet_from_torchvision
from jaxcd.weights.rules import _check_fits, _shape_tree
from jaxcd.weights.torch_io import load_state_dict
from jaxcd.weights.vgg import vgg16_from_torchvision


def init_backbone_variables(config, params: Any, batch_stats: Any = None) -> tuple[Any, Any]:
  """(params, batch_stats) with the encoder replaced by the weights in `config.init.backbone`.

  dsfernet: torchvision `vgg16` into params['base'] (VGG16 has no BatchNorm);
  bit, vct: torchvision `resnet18` (layer1-3; layer4 and fc skipped) into params['backbone'], and
  its ImageNet running statistics into batch_stats['backbone'] when `batch_stats` is given;
  rcr: a ResNet-50 the same way, the deep-stem `3x3resnet50-imagenet.pth` of CCT/SemiCD for
  config.model.stem='deep', torchvision `resnet50` for 'standard' (`rcr_backbone_from_imagenet`);
  dsamnet, stanet: torchvision `resnet18` into the stem, layer1-3 and layer4.0-1 of their
  multi-grid ResNet-18 (fc skipped); its third layer4 block, which torchvision lacks, keeps its
  initialisation, as the official `_load_pretrained_model` leaves it.
  Trees are numpy (host) pytrees; the inputs are not modified.
  """
  path = config.init.backbone
  name = config.model.name
  if name not in ("dsfernet", "bit", "vct", "rcr", "dsamnet", "stanet"):
    raise ConfigError(f"config.init.backbone: no ImageNet backbone import for model {name!r} "
                      "(supported: dsfernet <- vgg16, bit, vct, dsamnet, stanet <- resnet18, "
                      "rcr <- resnet50)")
  state_dict = load_state_dict(path)
  params = dict(params)
  if name == "dsfernet":
    base = vgg16_from_torchvision(state_dict, source=str(path))
    _check_fits(base, params["base"], str(path), "torchvision VGG16")
    params["base"] = base
    return params, batch_stats
  expected = {"params": _shape_tree(params["backbone"]),
              "batch_stats": _shape_tree((batch_stats or {}).get("backbone", {}))}
  if not batch_stats:  # running statistics not wanted: shapes from the matching BN scales
    expected["batch_stats"] = _bn_stats_like(expected["params"])
  if name == "rcr":
    new = rcr_backbone_from_imagenet(state_dict, expected, stem=config.model.get("stem", "deep"),
                                     source=str(path))
  elif name in ("dsamnet", "stanet"):  # layer4_2: the multi-grid block torchvision has not
    expected = {k: {b: v for b, v in tree.items() if b != "layer4_2"} for k, tree in expected.items()}
    loaded = resnet_from_torchvision(state_dict, expected, source=str(path))
    new = {"params": {**params["backbone"], **loaded["params"]},
           "batch_stats": {**(batch_stats or {}).get("backbone", {}), **loaded["batch_stats"]}}
  else:
    new = resnet_from_torchvision(state_dict, expected, source=str(path))
  params["backbone"] = new["params"]
  if batch_stats:
    batch_stats = dict(batch_stats)
    batch_stats["backbone"] = new["batch_stats"]
  return params, batch_stats


def _bn_stats_like(resnet_params: Mapping[str, Any]) -> dict[str, Any]:
  def walk(node):
    out = {}
    for k, v in node.items():
      if isinstance(v, Mapping) and "scale" in v:
        out[k] = {"mean": v["scale"], "var": v["scale"]}
      elif isinstance(v, Mapping):
        sub = walk(v)
        if sub:
          out[k] = sub
    return out
  return walk(resnet_params)
