"""The whu_cd source: the stored split (written once outside the data, reused, read-only
data_dir), mmap, tiles."""
from pathlib import Path

import numpy as np

from jaxcd.data.whu_cd import whu_cd

from .layouts import listing, read_only  # noqa: F401
from .pair_files import _make_pairs, _pair_arrays, _write


def _whu_large(root: Path, h=1024, w=1280):
  a, b, lab = _pair_arrays(h, w, 3)
  _write(root / "A" / "2012_scene.tif", a)
  _write(root / "B" / "2016_scene.tif", b)
  _write(root / "label" / "change_label.tif", lab)
  return a, b, (lab > 127).astype(np.uint8)


def test_whu_large_pair_split_written_once_and_reused(tmp_path, isolated_cache):
  data = tmp_path / "whu"
  a, _, lab = _whu_large(data)
  before = listing(data)
  splits = {s: whu_cd(s, data_dir=str(data)) for s in ("train", "val", "test")}
  n = (1024 // 256) * (1280 // 256)
  assert {s: len(v) for s, v in splits.items()} == {"train": 12, "val": 2, "test": 6}  # 6:1:3 of 20
  all_ids = set().union(*(set(v.ids) for v in splits.values()))
  assert len(all_ids) == n
  assert listing(data) == before  # the split lives in the cache, not in the dataset
  (stored,) = {f.parent for f in isolated_cache.rglob("train.txt")}
  assert stored.name == "split-seed0-ratios0.6-0.1-0.3-tile256"
  for s, src in splits.items():
    assert (stored / f"{s}.txt").read_text().split() == src.ids
  rec = splits["val"][1]
  r, c = map(int, rec["id"].rsplit("_", 2)[1:])
  np.testing.assert_array_equal(rec["image_a"], a[r:r + 256, c:c + 256])
  np.testing.assert_array_equal(rec["label"], lab[r:r + 256, c:c + 256])
  # Another seed is another stored split, not the old one read back.
  assert whu_cd("test", data_dir=str(data), split_seed=1).ids != splits["test"].ids

  # The stored files win over the seed: edit them and a new source follows them.
  lists = {s: stored / f"{s}.txt" for s in splits}
  stamps = {s: f.stat().st_mtime_ns for s, f in lists.items()}
  moved = splits["test"].ids[0]
  lists["test"].write_text("\n".join(splits["test"].ids[1:]) + "\n")
  lists["val"].write_text("\n".join(splits["val"].ids + [moved]) + "\n")
  assert whu_cd("val", data_dir=str(data)).ids[-1] == moved
  assert len(whu_cd("test", data_dir=str(data))) == 5
  assert lists["train"].stat().st_mtime_ns == stamps["train"]


def test_whu_read_only_data_dir(tmp_path, isolated_cache):
  data = tmp_path / "whu"
  _whu_large(data, h=768, w=1024)
  before = listing(data)
  with read_only(data):
    explicit = whu_cd("train", data_dir=str(data), split_dir=str(tmp_path / "splits"))
    assert (tmp_path / "splits" / "train.txt").read_text().split() == explicit.ids
    default = whu_cd("train", data_dir=str(data))
    cache_lists = list(isolated_cache.rglob("train.txt"))
    assert len(cache_lists) == 1 and cache_lists[0].read_text().split() == default.ids
    assert default.ids == explicit.ids  # same seed, same split
    default[0]
  assert listing(data) == before

  # Lists shipped with the data (WHU-CD256 style) are used even when data_dir is read-only.
  (data / "list").mkdir()
  for s, ids in (("train", default.ids[:2]), ("val", default.ids[2:3]), ("test", default.ids[3:5])):
    (data / "list" / f"{s}.txt").write_text("".join(f"{i}.png\n" for i in ids))
  with read_only(data):
    assert whu_cd("train", data_dir=str(data)).ids == default.ids[:2]
    test = whu_cd("test", data_dir=str(data), split_dir=str(tmp_path / "s2"))
    assert test.ids == default.ids[3:5]


def test_whu_memory_maps_a_large_scene(tmp_path):
  a, b, lab = _whu_large(tmp_path / "whu", h=512, w=768)
  plain = whu_cd("test", data_dir=str(tmp_path / "whu"))
  mapped = whu_cd("test", data_dir=str(tmp_path / "whu"), split_dir=str(tmp_path / "s"),
                          mmap_min_pixels=1)
  assert mapped.ids == plain.ids
  for i in range(len(plain)):
    for key in ("image_a", "image_b", "label"):
      np.testing.assert_array_equal(mapped[i][key], plain[i][key])
  assert len(list((tmp_path / "s" / "decoded").glob("*.npy"))) == 3


def test_whu_pre_cut_tiles(tmp_path):
  names = [f"tile_{k:03d}" for k in range(10)]
  _make_pairs(tmp_path, names, 64, 64)
  sizes = {s: len(whu_cd(s, data_dir=str(tmp_path), tile_size=64))
           for s in ("train", "val", "test")}
  assert sizes == {"train": 6, "val": 1, "test": 3}
  union = set()
  for s in ("train", "val", "test"):
    union |= set(whu_cd(s, data_dir=str(tmp_path), tile_size=64).ids)
  assert union == set(names)
