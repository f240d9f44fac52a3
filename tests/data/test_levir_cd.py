"""The levir_cd source: lazy tiling of the originals, split sizes, pickling, BIT list files, the
seeded split of tiles without split folders, read-only data."""
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcd.data import io, make_source
from jaxcd.data.levir_cd import levir_cd

from .layouts import listing, read_only  # noqa: F401
from .pair_files import SHARED, _make_pairs

LEVIR_BIT = SHARED / "LEVIR-CD_samples_BIT_CD"
needs_levir = pytest.mark.skipif(not LEVIR_BIT.is_dir(),
                                 reason=f"shared data not found at {LEVIR_BIT}")


@pytest.fixture(scope="module")
def levir_1024(tmp_path_factory):
  root = tmp_path_factory.mktemp("levir")
  arrays = {}
  for i, split in enumerate(("train", "val", "test")):
    arrays.update(_make_pairs(root / split, [f"{split}_{j + 1}" for j in range(2)], 1024, 1024,
                              seed0=2 * i))
  return root, arrays


def test_levir_original_layout_tiles_lazily(levir_1024, monkeypatch):
  root, arrays = levir_1024
  decoded = []
  real_read = io.read_image
  monkeypatch.setattr(io, "read_image",
                      lambda p, *a: decoded.append(Path(p).name) or real_read(p, *a))

  src = levir_cd("val", data_dir=str(root))
  assert decoded == []  # building lists files and reads headers only
  assert len(src) == 2 * 16
  assert src.ids[:5] == ["val_1_0000_0000", "val_1_0000_0256", "val_1_0000_0512", "val_1_0000_0768",
                         "val_1_0256_0000"]
  assert src.ids[16] == "val_2_0000_0000" and src.ids[-1] == "val_2_0768_0768"

  for i in range(len(src)):
    rec = src[i]
    name, r, c = rec["id"].rsplit("_", 2)
    r, c = int(r), int(c)
    a, b, lab = arrays[name]
    np.testing.assert_array_equal(rec["image_a"], a[r:r + 256, c:c + 256])
    np.testing.assert_array_equal(rec["image_b"], b[r:r + 256, c:c + 256])
    np.testing.assert_array_equal(rec["label"], lab[r:r + 256, c:c + 256])
    assert rec["image_a"].dtype == np.uint8 and rec["label"].dtype == np.uint8
  # Tiles of one image come from one decode (A and B of 2 images), thanks to the cache.
  assert sorted(decoded) == ["val_1.png", "val_1.png", "val_2.png", "val_2.png"]


def test_levir_split_sizes_and_tile_size(levir_1024):
  root, _ = levir_1024
  for split in ("train", "val", "test"):
    src = make_source("levir_cd", split, data_dir=str(root), num_bands=3)
    assert len(src) == 32 and all(i.startswith(f"{split}_") for i in src.ids)
  src = levir_cd("train", data_dir=str(root), tile_size=512)
  assert len(src) == 8 and src[3]["image_a"].shape == (512, 512, 3)


def test_levir_records_survive_pickling(levir_1024):
  root, _ = levir_1024
  src = levir_cd("test", data_dir=str(root))
  src[5]  # fills the cache, which must not travel
  clone = pickle.loads(pickle.dumps(src))
  for key in ("image_a", "image_b", "label"):
    np.testing.assert_array_equal(clone[5][key], src[5][key])
  assert clone.ids == src.ids


def test_levir_records_are_copies(levir_1024):
  root, _ = levir_1024
  src = levir_cd("train", data_dir=str(root))
  rec = src[0]
  rec["image_a"][:] = 0  # augmentation in place must not corrupt the cached image
  assert src[0]["image_a"].any()


@needs_levir
def test_levir_bit_list_files():
  src = levir_cd("demo", data_dir=str(LEVIR_BIT))
  listed = [line.strip()[:-4] for line in (LEVIR_BIT / "list" / "demo.txt").read_text().split()]
  assert len(listed) == 7 and src.ids == listed
  for i in range(len(src)):
    rec = src[i]
    raw = np.asarray(Image.open(LEVIR_BIT / "label" / f"{rec['id']}.png"))
    np.testing.assert_array_equal(rec["label"], (raw > 127).astype(np.uint8))
    np.testing.assert_array_equal(rec["image_a"],
                                  np.asarray(Image.open(LEVIR_BIT / "A" / f"{rec['id']}.png")))
    assert rec["image_b"].shape == (256, 256, 3)


@needs_levir
def test_levir_bit_split_by_name_prefix():
  all_names = sorted(p.stem for p in (LEVIR_BIT / "A").iterdir())
  assert len(all_names) == 11
  for split in ("train", "val", "test"):
    src = levir_cd(split, data_dir=str(LEVIR_BIT))
    assert src.ids == [n for n in all_names if n.startswith(split + "_")]


def test_levir_tiles_without_split_folders_get_a_stored_seeded_split(tmp_path, isolated_cache):
  names = [f"tile{k:02d}" for k in range(10)]
  _make_pairs(tmp_path / "levir", names, 64, 64)
  root = tmp_path / "levir"
  before = listing(root)
  with read_only(root):
    ids = {s: levir_cd(s, data_dir=str(root), tile_size=32).ids for s in ("train", "val", "test")}
    images = {s: sorted({i.rsplit("_", 2)[0] for i in v}) for s, v in ids.items()}
    assert {s: len(v) for s, v in images.items()} == {"train": 7, "val": 1, "test": 2}
    assert sorted(sum(images.values(), [])) == names  # split by image: no image in two splits
    assert all(len(v) == 4 * len(images[s]) for s, v in ids.items())  # then tiled
    assert levir_cd("test", data_dir=str(root), tile_size=32).ids == ids["test"]
    assert len(levir_cd("all", data_dir=str(root), tile_size=64)) == 10
    rec = levir_cd("val", data_dir=str(root), tile_size=32)[3]
    assert rec["image_a"].shape == (32, 32, 3)
  assert listing(root) == before
  stored = list(isolated_cache.rglob("test.txt"))
  assert len(stored) == 1 and stored[0].read_text().split() == images["test"]


def test_levir_original_layout_read_only(levir_1024, isolated_cache):
  root, _ = levir_1024
  before = listing(root)
  with read_only(root):
    levir_cd("test", data_dir=str(root))[0]
  assert listing(root) == before and not isolated_cache.exists()
