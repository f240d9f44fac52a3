"""The oscd source on a generated copy of the published layout: 13 bands at 10/20/60 m on one
grid, 1/2 labels, the city splits, the 2-px date-2 quirk, tiles, read-only data, bad layouts."""
import logging
import pickle

import numpy as np
import pytest

from jaxcd.data import make_source
from jaxcd.data.oscd import oscd
from jaxcd.errors import ConfigError, DataError

from .layouts import (OSCD_BANDS, OSCD_RES, OSCD_SIMPLE, listing,  # noqa: F401
                      oscd_field, read_only, write_oscd)

TRAIN = ("abudhabi", "bercy", "nantes", "pisa")
TEST = ("brasilia", "dubai")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
  root = tmp_path_factory.mktemp("oscd")
  return root, write_oscd(root, train=TRAIN, test=TEST, size=60, smaller_date2=("bercy",))


def test_oscd_records_have_13_bands_on_the_10m_grid(published):
  root, cities = published
  src = oscd("all", data_dir=str(root), num_bands=13)
  assert src.ids == [*TRAIN, *TEST]
  rec = src[src.ids.index("pisa")]
  assert rec["image_a"].shape == (60, 60, 13) and rec["image_a"].dtype == np.uint8
  assert rec["image_b"].shape == (60, 60, 13)
  # The written range is [0, 4000] (pinned by B02 and B08), scaled to 0..255 over all bands.
  inner = np.s_[3:-3, 3:-3]  # bilinear rebuilds the ramps exactly away from the borders
  for b, band in enumerate(OSCD_BANDS):
    want = np.rint(oscd_field(b, 1, 60, 60) * 255 / 4000)
    got = rec["image_a"][..., b].astype(float)
    if OSCD_RES.get(band, 10) == 10:
      np.testing.assert_array_equal(got, want, err_msg=band)
    else:
      assert np.abs(got[inner] - want[inner]).max() <= 1, band
  np.testing.assert_array_equal(rec["label"], (cities["pisa"]["label"] == 2).astype(np.uint8))
  assert set(np.unique(rec["label"])) == {0, 1}


def test_oscd_splits(published):
  root, _ = published
  ids = {s: oscd(s, data_dir=str(root)).ids for s in ("train", "val", "test")}
  assert len(ids["val"]) == 3 and len(ids["train"]) == 1 and ids["test"] == list(TEST)  # default
  assert sorted(ids["train"] + ids["val"]) == sorted(TRAIN)
  assert oscd("val", data_dir=str(root)).ids == ids["val"]  # seeded: the same every time
  one = {s: oscd(s, data_dir=str(root), val_cities=1).ids for s in ("train", "val")}
  assert len(one["val"]) == 1 and sorted(one["train"] + one["val"]) == sorted(TRAIN)
  vals = {oscd("val", data_dir=str(root), val_cities=1, split_seed=s).ids[0] for s in range(8)}
  assert len(vals) > 1
  assert len(oscd("train", data_dir=str(root), val_cities=0)) == 4  # the published 14-city train
  with pytest.raises(DataError, match="val_cities is 0"):
    oscd("val", data_dir=str(root), val_cities=0)
  with pytest.raises(ConfigError, match="config.data.val_cities"):
    oscd("train", data_dir=str(root), val_cities=4)


def test_oscd_smaller_date_2_is_cropped_with_a_warning(published, caplog):
  root, cities = published
  with caplog.at_level(logging.WARNING):
    src = oscd("all", data_dir=str(root))
  warned = [r.getMessage() for r in caplog.records if "bercy" in r.getMessage()]
  assert len(warned) == 1 and "58x58" in warned[0], caplog.text
  assert not any("pisa" in r.getMessage() for r in caplog.records)
  rec = src[src.ids.index("bercy")]
  assert rec["image_a"].shape == rec["image_b"].shape == (58, 58, 13)
  np.testing.assert_array_equal(rec["label"], cities["bercy"]["label"][:58, :58] == 2)
  assert src.label(src.ids.index("bercy")).shape == (58, 58)


def test_oscd_tiles_and_pickling(published):
  root, _ = published
  src = make_source("oscd", "test", data_dir=str(root), tile_size=32)
  assert src.ids == ["brasilia_0000_0000", "dubai_0000_0000"]  # margins smaller than a tile dropped
  whole = oscd("test", data_dir=str(root))
  clone = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(clone[1]["image_b"], whole[1]["image_b"][:32, :32])
  src = oscd("test", data_dir=str(root), tile_size=20)
  assert len(src) == 2 * 9 and src.ids[4] == "brasilia_0020_0020"
  np.testing.assert_array_equal(src[4]["label"], whole[0]["label"][20:40, 20:40])


def test_oscd_simple_folder_names_and_read_only_data(tmp_path, isolated_cache):
  root = tmp_path / "oscd"
  write_oscd(root, train=("a1", "a2"), test=("t1",), size=24, smaller_date2=(),
             folders=OSCD_SIMPLE)
  before = listing(root)
  with read_only(root):
    for split in ("train", "val", "test", "all"):
      src = oscd(split, data_dir=str(root), val_cities=1)
      assert src[0]["image_a"].shape == (24, 24, 13)
  assert listing(root) == before and not isolated_cache.exists()


def test_oscd_bad_layouts_are_one_line_errors(tmp_path):
  root = tmp_path / "oscd"
  write_oscd(root, train=("a1", "a2"), test=("t1",), size=24, smaller_date2=(),
             folders=OSCD_SIMPLE)

  def error(**kw):
    with pytest.raises(DataError) as e:
      oscd(kw.pop("split", "train"), data_dir=str(root), val_cities=0, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)

  band = next((root / "images" / "a2" / "imgs_2").glob("*_B8A.tif"))
  band.rename(band.with_name("notes.tif"))
  assert "no band B8A" in error() and "a2/imgs_2" in error()
  band.with_name("notes.tif").rename(band)
  label = root / "train_labels" / "a1" / "cm" / "a1-cm.tif"
  label.rename(label.with_name("x.tif"))
  assert str(label) in error()
  label.with_name("x.tif").rename(label)
  (root / "test_labels").rename(root / "old")
  assert "no test labels folder" in error(split="test")
  (root / "old").rename(root / "Test Labels")
  (root / "more_test_labels").mkdir()
  assert "two OSCD test labels folders" in error(split="test")
