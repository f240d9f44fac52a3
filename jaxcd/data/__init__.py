"""Datasets: random-access sources of bitemporal pairs.

A source is a sequence (`len(src)`, `src[i]`) of records
  {'image_a': uint8 HxWxC, 'image_b': uint8 HxWxC, 'label': uint8 HxW in {0, 1, 255}, 'id': str}
(255 = ignore). Sources are registered by name and built from a config's `data` block:
`make_source(name, split, **fields)`. Every problem with the files raises `jaxcd.errors.DataError`
with a one-line message naming the file or field. A `data_dir` in an object store (gs://) is
read from a local copy (`jaxcd.storage.local_copy`), made on first use.
"""
from typing import Any, Sequence

from jaxcd import storage
from jaxcd.data import registry
from jaxcd.data.registry import (SOURCES as _SOURCES, SPLITS, PairSource,  # noqa: F401
                                 register_source)
from jaxcd.errors import ConfigError


def make_source(name: str, split: str, where: str = "config.data", **kwargs: Any) -> PairSource:
  """Source `name` for `split`; options it does not declare, or of the wrong type, are a
  ConfigError naming `<where>.<option>`."""
  registry.check_options(_known(name), kwargs, where)
  if storage.is_remote(kwargs.get("data_dir", "")):
    kwargs["data_dir"] = storage.local_copy(kwargs["data_dir"], f"{where}.data_dir")
  return _SOURCES[name](split=split, **kwargs)


def source_from_config(data_config, split: str, where: str = "config.data") -> PairSource:
  """Builds the source for `split` from a config's `data` block (`name` + the source's fields;
  the pipeline's fields, `registry.PIPELINE_FIELDS`, are not the source's)."""
  fields = {k: v for k, v in dict(data_config).items() if k not in registry.PIPELINE_FIELDS}
  return make_source(data_config.name, split, where=where, **fields)


def source_options(name: str) -> dict[str, Any]:
  """{option: default} that source `name` declares (its keyword parameters)."""
  return registry.source_options(_known(name))


def _known(name: str) -> str:
  _import_all()
  if name not in _SOURCES:
    raise ConfigError(f"config.data.name: unknown dataset {name!r}; known: "
                      f"{', '.join(sorted(_SOURCES))}")
  return name


def list_sources() -> Sequence[str]:
  _import_all()
  return sorted(_SOURCES)


def _import_all():
  # Each module registers its sources on import.
  from jaxcd.data import cdd, folder, levir_cd, oscd, synthetic, sztaki, tfds, whu_cd  # noqa: F401
