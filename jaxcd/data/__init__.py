"""Datasets: random-access sources of bitemporal pairs.

A source is a sequence (`len(src)`, `src[i]`) of records
  {'image_a': uint8 HxWxC, 'image_b': uint8 HxWxC, 'label': uint8 HxW in {0, 1, 255}, 'id': str}
(255 = ignore). Sources are registered by name and built from a config's `data` block:
`make_source(name, split, **fields)`. Every problem with the files raises `jaxcd.errors.DataError`
with a one-line message naming the file or field.
"""
from typing import Any, Sequence

from jaxcd.data.registry import SOURCES as _SOURCES, SPLITS, PairSource, register_source  # noqa: F401
from jaxcd.errors import ConfigError


def make_source(name: str, split: str, **kwargs: Any) -> PairSource:
  _import_all()
  if name not in _SOURCES:
    raise ConfigError(f"config.data.name: unknown dataset {name!r}; known: {', '.join(sorted(_SOURCES))}")
  return _SOURCES[name](split=split, **kwargs)


def source_from_config(data_config, split: str) -> PairSource:
  """Builds the source for `split` from a config's `data` block (`name` + the source's fields)."""
  fields = dict(data_config)
  name = fields.pop("name")
  return make_source(name, split, **fields)


def list_sources() -> Sequence[str]:
  _import_all()
  return sorted(_SOURCES)


def _import_all():
  # Each module registers its sources on import.
  from jaxcd.data import cdd, folder, levir_cd, synthetic, sztaki, tfds, whu_cd  # noqa: F401
