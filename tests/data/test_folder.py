"""The folder source: per-split folders, list files, detected date/label folder names, flat pair
files, explicit patterns, seeded splits, one-band images, prediction-only data, read-only data."""
import numpy as np
import pytest

from jaxcd.data.folder import DATE_DIRS, folder
from jaxcd.errors import ConfigError, DataError

from .layouts import listing, read_only, write_flat, write_folder  # noqa: F401
from .pair_files import _make_pairs, _pair_arrays, _write


def test_folder_layouts(tmp_path):
  # data_dir/<split>/{A,B,label}
  arrays = _make_pairs(tmp_path / "split" / "train", ["x1", "x2"], 64, 64)
  src = folder("train", data_dir=str(tmp_path / "split"))
  assert src.ids == ["x1", "x2"]
  np.testing.assert_array_equal(src[1]["label"], arrays["x2"][2])

  # data_dir/{A,B,label} + list/<split>.txt, extensions in any case; one-band images
  flat = tmp_path / "flat"
  for k, name in enumerate(["p", "q", "r"]):
    a, b, lab = _pair_arrays(64, 64, k)
    _write(flat / "A" / f"{name}.PNG", a[..., 0])
    _write(flat / "B" / f"{name}.tif", b[..., 0])
    _write(flat / "label" / f"{name}.png", lab)
  (flat / "list").mkdir()
  (flat / "list" / "val.txt").write_text("r.png\nq.png\n")
  src = folder("val", data_dir=str(flat), num_bands=1)
  assert src.ids == ["r", "q"] and src[0]["image_a"].shape == (64, 64, 1)
  assert len(folder("all", data_dir=str(flat))) == 3
  with pytest.raises(DataError, match="num_bands is 3"):
    folder("val", data_dir=str(flat), num_bands=3)[0]

  # no label folder: prediction only, every pixel ignored
  (flat / "label").rename(flat / "annotations")
  src = folder("all", data_dir=str(flat))
  assert not src.has_labels and (src[0]["label"] == 255).all() and (src.label(2) == 255).all()


_DATES = DATE_DIRS + (("T1", "T2"), ("Before", "After"))
_LABELS = ("label", "labels", "gt", "GT", "cm", "mask", "OUT")


@pytest.mark.parametrize("dates,label", [(d, _LABELS[k % len(_LABELS)])
                                         for k, d in enumerate(_DATES)])
def test_date_and_label_folder_names_are_detected(tmp_path, dates, label):
  arrays = write_folder(tmp_path, *dates, label=label, names=("u", "v"))
  src = folder("all", data_dir=str(tmp_path))
  assert src.ids == ["u", "v"] and src.has_labels
  assert f"{dates[0]},{dates[1]},{label}" in src.layout
  rec = src[1]
  for key, want in zip(("image_a", "image_b", "label"), arrays["v"]):
    np.testing.assert_array_equal(rec[key], want)


def test_explicit_folders_override_detection(tmp_path):
  write_folder(tmp_path, "A", "B", label="label", names=("u",))
  write_folder(tmp_path, "first", "second", label="truth", names=("w",), seed0=3)
  src = folder("all", data_dir=str(tmp_path), a_dir="first", b_dir="second", label_dir="truth")
  assert src.ids == ["w"] and src.has_labels
  assert folder("all", data_dir=str(tmp_path)).ids == ["u"]  # detected: A/B + label
  with pytest.raises(ConfigError, match="a_dir, b_dir"):
    folder("all", data_dir=str(tmp_path), a_dir="first")


def test_ambiguous_and_incomplete_folders_are_one_line_errors(tmp_path):
  write_folder(tmp_path / "d", "A", "B", names=("u",))
  write_folder(tmp_path / "d", "t1", "t2", label=None, names=("u",))
  with pytest.raises(DataError) as e:
    folder("all", data_dir=str(tmp_path / "d"))
  assert "A/B and t1/t2" in str(e.value) and "\n" not in str(e.value)

  write_folder(tmp_path / "l", "A", "B", label="gt", names=("u",))
  write_folder(tmp_path / "l", "A", "B", label="mask", names=("u",))
  with pytest.raises(DataError, match="two label folders, gt/ and mask/"):
    folder("all", data_dir=str(tmp_path / "l"))

  write_folder(tmp_path / "p", "prev", "curr", names=("u",))
  (tmp_path / "p" / "curr").rename(tmp_path / "p" / "current")
  with pytest.raises(DataError, match=r"prev has no partner date folder curr/"):
    folder("all", data_dir=str(tmp_path / "p"))


@pytest.mark.parametrize("templates,ext", [(("{name}_1", "{name}_2", "{name}_gt"), ".bmp"),
                                           (("{name}_A", "{name}_B", "{name}_label"), ".tif")])
def test_flat_pair_files_are_detected(tmp_path, templates, ext):
  arrays = write_flat(tmp_path, ["bern", "ottawa"], ext=ext, templates=templates)
  (tmp_path / "readme.png").write_bytes((tmp_path / f"{templates[0].format(name='bern')}{ext}")
                                        .read_bytes())  # a stray image is no pair
  src = folder("all", data_dir=str(tmp_path))
  assert src.ids == ["bern", "ottawa"] and "files " + ",".join(templates) in src.layout
  rec = src[1]
  for key, want in zip(("image_a", "image_b", "label"), arrays["ottawa"]):
    np.testing.assert_array_equal(rec[key], want)

  (tmp_path / f"{templates[1].format(name='bern')}{ext}").unlink()
  with pytest.raises(DataError, match="missing B image for .*bern"):
    folder("all", data_dir=str(tmp_path))


def test_explicit_pattern(tmp_path):
  write_flat(tmp_path, ["s1", "s2"], templates=("pre/{name}", "post/{name}", "{name}_change"))
  src = folder("all", data_dir=str(tmp_path), pattern="pre/{name},post/{name},{name}_change")
  assert src.ids == ["s1", "s2"] and src.has_labels
  src = folder("all", data_dir=str(tmp_path), pattern="pre/{name}, post/{name}")
  assert not src.has_labels
  for bad in ("{name}_1", "a/{name},{name}/b", "{name}_1,{name}_2,{name}_3,{name}_4"):
    with pytest.raises(ConfigError, match="config.data.pattern"):
      folder("all", data_dir=str(tmp_path), pattern=bad)


def test_seeded_split_is_deterministic_disjoint_and_covering(tmp_path):
  names = [f"n{k:02d}" for k in range(20)]
  write_folder(tmp_path / "data", names=names, size=16)
  data = str(tmp_path / "data")
  ids = {s: folder(s, data_dir=data).ids for s in ("train", "val", "test")}
  assert {s: len(v) for s, v in ids.items()} == {"train": 14, "val": 2, "test": 4}  # 7:1:2
  assert sorted(sum(ids.values(), [])) == names
  again = {s: folder(s, data_dir=data).ids for s in ("train", "val", "test")}
  assert again == ids
  other = folder("test", data_dir=data, split_seed=1).ids
  assert other != ids["test"]
  half = folder("train", data_dir=data, ratios=(1, 0, 1), split_dir=str(tmp_path / "s"))
  assert len(half) == 10 and (tmp_path / "s" / "train.txt").read_text().split() == half.ids
  assert len(folder("all", data_dir=data)) == 20


def test_read_only_folder_writes_nothing_into_it(tmp_path, isolated_cache):
  write_folder(tmp_path / "data", "t1", "t2", label="gt", names=[f"n{k}" for k in range(10)],
               size=16)
  write_flat(tmp_path / "flat", [f"f{k}" for k in range(10)], size=16)
  for root in (tmp_path / "data", tmp_path / "flat"):
    before = listing(root)
    with read_only(root):
      for split in ("train", "val", "test", "all"):
        src = folder(split, data_dir=str(root))
        assert src[0]["label"].shape == (16, 16)
    assert listing(root) == before
  assert list(isolated_cache.rglob("train.txt"))  # the seeded splits went to the cache
