"""Every config file in configs/ loads, and only configs of the synthetic source carry the
synthetic-only data fields (elsewhere an override such as --config.data.num_train must fail)."""
from pathlib import Path

import pytest

from jaxcd import config_base
from jaxcd.data import list_sources

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_with_a_known_source(path):
  c = config_base.sibling(str(path), path.stem)
  assert c.data.name in list_sources()
  synthetic = [k for k in config_base.SYNTHETIC_FIELDS if k in c.data]
  if c.data.name == "synthetic":
    assert synthetic == list(config_base.SYNTHETIC_FIELDS)
  else:
    assert not synthetic, f"{path.name}: synthetic-only data fields on {c.data.name}: {synthetic}"


def test_on_dataset_drops_synthetic_fields():
  c = config_base.base_config()
  config_base.on_dataset(c, "sztaki", "/data/sztaki")
  assert (c.data.name, c.data.data_dir) == ("sztaki", "/data/sztaki")
  assert not set(config_base.SYNTHETIC_FIELDS) & set(c.data.keys())
  assert c.data.mean == (127.5, 127.5, 127.5)  # common fields stay
