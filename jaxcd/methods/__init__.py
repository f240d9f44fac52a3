"""Training algorithms: one module per method, each exposing `train_and_evaluate(config, workdir)`."""
import importlib

from jaxcd.errors import ConfigError

METHODS = ("supervised", "cva", "cdcluster", "rcl")


def get_method(name: str):
  try:
    return importlib.import_module(f"jaxcd.methods.{name}")
  except ModuleNotFoundError as e:
    if e.name == f"jaxcd.methods.{name}":
      raise ConfigError(f"config.method: unknown method {name!r}") from None
    raise
