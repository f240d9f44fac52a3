"""The official Dsfer-Net `MyNet` -> jaxcd.models.dsfernet.DsferNet."""
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.errors import DataError
from jaxcd.weights.rules import (Variables, _Rule, _apply_rules, _chw, _conv, _is_dropped,
                                 _linear, _same)
from jaxcd.weights.vgg import _vgg_rules

# The official decoder's SingleConv3 blocks and 1x1 heads.
_DSFERNET_DECODER = ("dec5", "dec51", "dec4", "dec41", "dec3", "dec31", "dec2", "dec21",
                     "dec1", "dec11")
_DSFERNET_HEADS = ("out4", "out5", "outc")


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


def dsfernet_from_torch(state_dict: Mapping[str, Any], *, source: str = "state_dict") -> Variables:
  """Official `MyNet.state_dict()` (as numpy) -> {'params', 'batch_stats'} for `DsferNet`.

  The input size and class count are read from the LayerNorm and classifier shapes; build the
  model as `DsferNet(num_classes=K, input_size=S)` (S = 256 for the official weights).
  """
  from jaxcd.models.dsfernet import DsferNet  # keeps `import jaxcd.weights` light
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
