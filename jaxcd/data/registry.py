"""The registry of sources by name. Source modules import only this (never `jaxcd.data`
itself), so the package imports them lazily without an import cycle."""
from typing import Any, Callable, Protocol

SPLITS = ("train", "val", "test")

SOURCES: dict[str, Callable[..., "PairSource"]] = {}


class PairSource(Protocol):
  def __len__(self) -> int: ...
  def __getitem__(self, index: int) -> dict[str, Any]: ...


def register_source(name: str):
  """Decorator registering a source class/factory `f(split, **kwargs)` under `name`."""
  def deco(fn):
    if name in SOURCES:
      raise ValueError(f"source {name!r} registered twice")
    SOURCES[name] = fn
    return fn
  return deco
