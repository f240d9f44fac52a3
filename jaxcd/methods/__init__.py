"""Training algorithms: one module per method, `jaxcd/methods/<config.method>.py`, whose
`METHOD` is a `base.Method` subclass. Adding a method means writing one such file (`base` and
`adversarial` are shared pieces, not methods)."""
import importlib
import pkgutil

from jaxcd.errors import ConfigError

SHARED = ("base", "adversarial")


def list_methods() -> list[str]:
  import jaxcd.methods as pkg
  return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in SHARED)


def get_method(config):
  """The `Method` instance for `config.method`."""
  name = config.method
  try:
    module = importlib.import_module(f"jaxcd.methods.{name}")
  except ModuleNotFoundError as e:
    if e.name == f"jaxcd.methods.{name}":
      raise ConfigError(f"config.method: unknown method {name!r}; known: "
                        f"{', '.join(list_methods())}") from None
    raise
  if not hasattr(module, "METHOD"):
    raise ConfigError(f"config.method: {name!r} is not a method module (no METHOD)")
  return module.METHOD(config)
