"""The registry of sources by name, and their declared options. Source modules import only this
(never `jaxcd.data` itself), so the package imports them lazily without an import cycle.

A source's options are declared once, by its signature: the keyword parameters of the registered
function (or class `__init__`) with their typed defaults, plus `COMMON_OPTIONS` when it
takes `**kwargs` (which it passes on to `PairListSource`). Configs declare the same fields
(`config_base.declare_options`), so each is settable as `--config.data.X=...` and checked.
"""
import ast
import difflib
import inspect
from typing import Any, Callable, Mapping, Protocol

from jaxcd.errors import ConfigError

SPLITS = ("train", "val", "test")
# Fields of a config's data block read by the input pipeline and the model, not by the source.
PIPELINE_FIELDS = ("name", "band_order", "mean", "std", "rgb_bands")

# Options every `PairListSource`-based source takes through its **kwargs, with their defaults.
COMMON_OPTIONS = {"num_bands": 0, "label_encoding": "auto", "scale_16bit": "minmax",
                  "cache_size": 6}

SOURCES: dict[str, Callable[..., "PairSource"]] = {}


class PairSource(Protocol):
  def __len__(self) -> int: ...
  def __getitem__(self, index: int) -> dict[str, Any]: ...


def register_source(name: str):
  """Decorator registering a source class/factory `f(split, **options)` under `name`."""
  def deco(fn):
    if name in SOURCES:
      raise ValueError(f"source {name!r} registered twice")
    SOURCES[name] = fn
    return fn
  return deco


def source_options(name: str) -> dict[str, Any]:
  """{option: default} of source `name`, from its signature (see the module docstring)."""
  fn = SOURCES[name]
  params = inspect.signature(fn.__init__ if isinstance(fn, type) else fn).parameters
  options: dict[str, Any] = {}
  for p in params.values():
    if p.kind is p.VAR_KEYWORD:
      for key, default in COMMON_OPTIONS.items():
        options.setdefault(key, default)  # a source's own default wins
    elif p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and
                                      p.default is not p.empty):
      options[p.name] = p.default
  return options


def unknown_option(source: str, key: str, declared, flag: str) -> ConfigError:
  """The error for `flag` setting `key`, which `source` does not declare: the closest name and
  all of them."""
  close = difflib.get_close_matches(key, list(declared), n=1)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  return ConfigError(f"{flag}: not an option of source {source!r}{hint}; its options: "
                     f"{', '.join(sorted(declared))}")


def parse_option(flag: str, text: str, default: Any) -> Any:
  """A command-line value typed as the option's default: `1_2` for a string option stays the
  string '1_2' (Python's literal syntax would read the integer 12), `512` for an int is 512."""
  try:
    if isinstance(default, str):
      return text
    if isinstance(default, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
    value = ast.literal_eval(text)
    if isinstance(default, (tuple, list)):
      value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return value
  except (ValueError, SyntaxError, TypeError):
    raise ConfigError(f"{flag}={text}: expected {_kind(default)} like {default!r}") from None


def check_options(name: str, options: Mapping[str, Any], where: str = "config.data") -> None:
  """ConfigError naming the first option `name` does not declare, or whose value has the wrong
  type for its default (an int where a path is expected, a string where a size is)."""
  declared = source_options(name)
  for key, value in options.items():
    if key not in declared:
      raise unknown_option(name, key, declared, f"{where}.{key}")
    default = declared[key]
    if not _same_kind(value, default):
      raise ConfigError(f"{where}.{key}: expected {_kind(default)} for source {name!r}, got "
                        f"{value!r}")


def _same_kind(value: Any, default: Any) -> bool:
  if isinstance(default, bool):
    return isinstance(value, bool)
  if isinstance(default, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(default, str):
    return isinstance(value, str)
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return True  # no typed default: the source checks it


def _kind(default: Any) -> str:
  for t, word in ((bool, "true/false"), (int, "an integer"), (float, "a number"),
                  (str, "a string"), ((tuple, list), "a sequence")):
    if isinstance(default, t):
      return word
  return "a value"
