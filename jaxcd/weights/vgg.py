"""torchvision VGG16 (`features.N.*`) -> jaxcd.models.vgg.VGG16Features."""
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxcd.models.vgg import CONV_NAMES, TORCHVISION_CONV_INDICES, VGG16_WIDTHS
from jaxcd.weights.rules import _Rule, _apply_rules, _conv, _same


def _vgg_rules(prefix: str, target: tuple[str, ...]) -> dict[str, _Rule]:
  rules = {}
  for idx, name in zip(TORCHVISION_CONV_INDICES, CONV_NAMES):
    rules[f"{prefix}{idx}.weight"] = ("params", target + (name, "kernel"), _conv)
    rules[f"{prefix}{idx}.bias"] = ("params", target + (name, "bias"), _same)
  return rules


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
