"""The registry of networks by name. Network modules import only this (never `jaxcd.models`
itself), so the package imports them lazily without an import cycle."""
from typing import Callable

import flax.linen as nn

REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
  """Decorator registering a module class (or factory) under `name`."""
  def deco(fn):
    if name in REGISTRY:
      raise ValueError(f"model {name!r} registered twice")
    REGISTRY[name] = fn
    return fn
  return deco
