"""On-disk sources: LEVIR-CD tiling and lists, SZTAKI protocol, WHU stored split, CDD, folder."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcd.data import io, make_source, sources
from jaxcd.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SZTAKI = SHARED / "SZTAKI_AirChange"
LEVIR_BIT = SHARED / "LEVIR-CD_samples_BIT_CD"
needs_sztaki = pytest.mark.skipif(not SZTAKI.is_dir(), reason=f"shared data not found at {SZTAKI}")
needs_levir = pytest.mark.skipif(not LEVIR_BIT.is_dir(),
                                 reason=f"shared data not found at {LEVIR_BIT}")


def _write(path: Path, x: np.ndarray) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(x).save(path)
  return path


def _pair_arrays(h: int, w: int, seed: int):
  """Position-coded images (every pixel differs from its neighbours' tiles) and a 0/255 mask."""
  rr, cc = np.mgrid[:h, :w]
  a = np.stack([(rr // 3) % 256, (cc // 3) % 256, np.full_like(rr, seed * 40)], -1).astype(np.uint8)
  b = (255 - a).astype(np.uint8)
  label = ((((rr + 7 * seed) // 48 + cc // 48) % 3 == 0) * 255).astype(np.uint8)
  return a, b, label


def _make_pairs(root: Path, names, h, w, label_dir="label", ext=".png", seed0=0):
  arrays = {}
  for k, name in enumerate(names):
    a, b, lab = _pair_arrays(h, w, seed0 + k)
    _write(root / "A" / f"{name}{ext}", a)
    _write(root / "B" / f"{name}{ext}", b)
    _write(root / label_dir / f"{name}.png", lab)
    arrays[name] = (a, b, (lab > 127).astype(np.uint8))
  return arrays


# --- LEVIR-CD -----------------------------------------------------------------------------------

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

  src = sources.levir_cd("val", data_dir=str(root))
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
    src = make_source("levir_cd", split, data_dir=str(root), num_bands=3, mean=(0,), std=(1,))
    assert len(src) == 32 and all(i.startswith(f"{split}_") for i in src.ids)
  src = sources.levir_cd("train", data_dir=str(root), tile_size=512)
  assert len(src) == 8 and src[3]["image_a"].shape == (512, 512, 3)


def test_levir_records_survive_pickling(levir_1024):
  root, _ = levir_1024
  src = sources.levir_cd("test", data_dir=str(root))
  src[5]  # fills the cache, which must not travel
  clone = pickle.loads(pickle.dumps(src))
  for key in ("image_a", "image_b", "label"):
    np.testing.assert_array_equal(clone[5][key], src[5][key])
  assert clone.ids == src.ids


def test_levir_records_are_copies(levir_1024):
  root, _ = levir_1024
  src = sources.levir_cd("train", data_dir=str(root))
  rec = src[0]
  rec["image_a"][:] = 0  # augmentation in place must not corrupt the cached image
  assert src[0]["image_a"].any()


@needs_levir
def test_levir_bit_list_files():
  src = sources.levir_cd("demo", data_dir=str(LEVIR_BIT))
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
    src = sources.levir_cd(split, data_dir=str(LEVIR_BIT))
    assert src.ids == [n for n in all_names if n.startswith(split + "_")]


# --- SZTAKI -------------------------------------------------------------------------------------

def _sztaki_changed_tiles():
  """Tiles with change, computed from the raw masks (Pillow + numpy, no jaxcd code)."""
  out = set()
  for gt in sorted(SZTAKI.rglob("*")):
    if gt.stem.lower() != "gt":
      continue
    mask = np.asarray(Image.open(gt)) > 127
    h, w = mask.shape
    name = "_".join(gt.parent.relative_to(SZTAKI).parts)
    for r in np.linspace(0, h - 256, 3).round().astype(int):
      for c in np.linspace(0, w - 256, 4).round().astype(int):
        if mask[r:r + 256, c:c + 256].any():
          out.add(f"{name}_{r:04d}_{c:04d}")
  return out


@needs_sztaki
def test_sztaki_rcl_protocol():
  splits = {s: sources.sztaki(s, data_dir=str(SZTAKI)) for s in ("train", "val", "test")}
  ids = {s: set(src.ids) for s, src in splits.items()}
  expected = _sztaki_changed_tiles()
  total = sum(len(v) for v in ids.values())
  assert 118 <= total <= 126  # the paper reports 122
  assert set().union(*ids.values()) == expected
  assert len(ids["val"]) == 12 and len(ids["test"]) == 12 and len(ids["train"]) == total - 24
  assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
  assert not ids["val"] & ids["test"]
  # Evenly spaced grid offsets: 952x640 pairs and the 1048x724 Archieve.
  offsets = {tuple(map(int, i.rsplit("_", 2)[1:])) for i in expected if i.startswith("Szada")}
  assert {r for r, _ in offsets} <= {0, 192, 384} and {c for _, c in offsets} <= {0, 232, 464, 696}
  arch = {tuple(map(int, i.rsplit("_", 2)[1:])) for i in expected if i.startswith("Archieve")}
  assert {r for r, _ in arch} <= {0, 234, 468} and {c for _, c in arch} <= {0, 264, 528, 792}
  print(f"SZTAKI: {total} tiles with change, {len(ids['train'])}/12/12")


@needs_sztaki
def test_sztaki_records_and_determinism():
  a = sources.sztaki("test", data_dir=str(SZTAKI))
  b = sources.sztaki("test", data_dir=str(SZTAKI))
  assert a.ids == b.ids
  assert sources.sztaki("test", data_dir=str(SZTAKI), split_seed=1).ids != a.ids
  for i in range(len(a)):
    rec = a[i]
    assert rec["label"].shape == (256, 256) and set(np.unique(rec["label"])) <= {0, 1}
    assert (rec["label"] == 1).any()  # no tile without change
    pair, r, c = rec["id"].rsplit("_", 2)
    folder = SZTAKI.joinpath(*pair.split("_"))
    im1 = next(p for p in folder.iterdir() if p.stem == "im1")
    r, c = int(r), int(c)
    np.testing.assert_array_equal(rec["image_a"], np.asarray(Image.open(im1))[r:r + 256, c:c + 256])


@needs_sztaki
def test_sztaki_reads_upper_case_and_stray_grey_masks():
  # Szada/5/im2.BMP, Szada/6/gt.BMP (one pixel of 213), Tiszadob/4 (grey strays).
  pairs = {p.id: p for p in sources.sztaki_pairs(SZTAKI)}
  assert len(pairs) == 13
  assert pairs["Szada_5"].b.name == "im2.BMP" and pairs["Szada_6"].label.name == "gt.BMP"
  for name in ("Szada_6", "Tiszadob_4"):
    raw = np.asarray(Image.open(pairs[name].label))
    assert len(np.unique(raw)) > 2
    np.testing.assert_array_equal(io.read_label(pairs[name].label), (raw > 127).astype(np.uint8))


# --- WHU-CD -------------------------------------------------------------------------------------

def _whu_large(root: Path, h=1024, w=1280):
  a, b, lab = _pair_arrays(h, w, 3)
  _write(root / "A" / "2012_scene.tif", a)
  _write(root / "B" / "2016_scene.tif", b)
  _write(root / "label" / "change_label.tif", lab)
  return a, b, (lab > 127).astype(np.uint8)


def test_whu_large_pair_split_written_once_and_reused(tmp_path):
  a, _, lab = _whu_large(tmp_path)
  splits = {s: sources.whu_cd(s, data_dir=str(tmp_path)) for s in ("train", "val", "test")}
  n = (1024 // 256) * (1280 // 256)
  assert {s: len(v) for s, v in splits.items()} == {"train": 12, "val": 2, "test": 6}  # 6:1:3 of 20
  all_ids = set().union(*(set(v.ids) for v in splits.values()))
  assert len(all_ids) == n
  lists = {s: (tmp_path / "list" / f"{s}.txt") for s in splits}
  for s, f in lists.items():
    assert f.read_text().split() == splits[s].ids
  rec = splits["val"][1]
  r, c = map(int, rec["id"].rsplit("_", 2)[1:])
  np.testing.assert_array_equal(rec["image_a"], a[r:r + 256, c:c + 256])
  np.testing.assert_array_equal(rec["label"], lab[r:r + 256, c:c + 256])

  # The stored files win over the seed: edit them and a new source follows them.
  stamps = {s: f.stat().st_mtime_ns for s, f in lists.items()}
  moved = splits["test"].ids[0]
  lists["test"].write_text("\n".join(splits["test"].ids[1:]) + "\n")
  lists["val"].write_text("\n".join(splits["val"].ids + [moved]) + "\n")
  assert sources.whu_cd("val", data_dir=str(tmp_path), split_seed=5).ids[-1] == moved
  assert len(sources.whu_cd("test", data_dir=str(tmp_path))) == 5
  assert lists["train"].stat().st_mtime_ns == stamps["train"]


def test_whu_read_only_data_dir_uses_split_dir(tmp_path, monkeypatch):
  data = tmp_path / "whu"
  _whu_large(data, h=768, w=1024)
  os.chmod(data, 0o555)
  monkeypatch.setenv("JAXCD_CACHE", str(tmp_path / "cache"))
  try:
    explicit = sources.whu_cd("train", data_dir=str(data), split_dir=str(tmp_path / "splits"))
    assert (tmp_path / "splits" / "train.txt").read_text().split() == explicit.ids
    default = sources.whu_cd("train", data_dir=str(data))
    cache_lists = list((tmp_path / "cache").rglob("train.txt"))
    assert len(cache_lists) == 1 and cache_lists[0].read_text().split() == default.ids
    assert default.ids == explicit.ids  # same seed, same split
    assert not (data / "list").exists()
  finally:
    os.chmod(data, 0o755)

  # Lists shipped with the data (WHU-CD256 style) are used even when data_dir is read-only.
  (data / "list").mkdir()
  for s, ids in (("train", default.ids[:2]), ("val", default.ids[2:3]), ("test", default.ids[3:5])):
    (data / "list" / f"{s}.txt").write_text("".join(f"{i}.png\n" for i in ids))
  os.chmod(data, 0o555)
  try:
    assert sources.whu_cd("train", data_dir=str(data)).ids == default.ids[:2]
    test = sources.whu_cd("test", data_dir=str(data), split_dir=str(tmp_path / "s2"))
    assert test.ids == default.ids[3:5]
  finally:
    os.chmod(data, 0o755)


def test_whu_memory_maps_a_large_scene(tmp_path):
  a, b, lab = _whu_large(tmp_path / "whu", h=512, w=768)
  plain = sources.whu_cd("test", data_dir=str(tmp_path / "whu"))
  mapped = sources.whu_cd("test", data_dir=str(tmp_path / "whu"), split_dir=str(tmp_path / "s"),
                          mmap_min_pixels=1)
  assert mapped.ids == plain.ids
  for i in range(len(plain)):
    for key in ("image_a", "image_b", "label"):
      np.testing.assert_array_equal(mapped[i][key], plain[i][key])
  assert len(list((tmp_path / "s" / "decoded").glob("*.npy"))) == 3


def test_whu_pre_cut_tiles(tmp_path):
  names = [f"tile_{k:03d}" for k in range(10)]
  _make_pairs(tmp_path, names, 64, 64)
  sizes = {s: len(sources.whu_cd(s, data_dir=str(tmp_path), tile_size=64))
           for s in ("train", "val", "test")}
  assert sizes == {"train": 6, "val": 1, "test": 3}
  union = set()
  for s in ("train", "val", "test"):
    union |= set(sources.whu_cd(s, data_dir=str(tmp_path), tile_size=64).ids)
  assert union == set(names)


# --- CDD and folder -----------------------------------------------------------------------------

def test_cdd_layout_with_jpeg_labels(tmp_path):
  counts = {"train": 3, "val": 1, "test": 2}
  for split, n in counts.items():
    d = tmp_path / "subset" / split
    for k in range(n):
      a, b, lab = _pair_arrays(64, 64, k)
      _write(d / "A" / f"{k:05d}.jpg", a)
      _write(d / "B" / f"{k:05d}.jpg", b)
      _write(d / "OUT" / f"{k:05d}.jpg", lab)  # CDD's masks are JPEG: grey edges
  for data_dir in (tmp_path, tmp_path / "subset"):
    for split, n in counts.items():
      src = sources.cdd(split, data_dir=str(data_dir))
      assert len(src) == n
      for i in range(n):
        rec = src[i]
        assert rec["image_a"].shape == (64, 64, 3)
        expected = _pair_arrays(64, 64, i)[2] > 127
        assert set(np.unique(rec["label"])) <= {0, 1}
        assert np.mean(rec["label"] == expected) > 0.97


def test_folder_layouts(tmp_path):
  # data_dir/<split>/{A,B,label}
  arrays = _make_pairs(tmp_path / "split" / "train", ["x1", "x2"], 64, 64)
  src = sources.folder("train", data_dir=str(tmp_path / "split"))
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
  src = sources.folder("val", data_dir=str(flat), num_bands=1)
  assert src.ids == ["r", "q"] and src[0]["image_a"].shape == (64, 64, 1)
  assert len(sources.folder("all", data_dir=str(flat))) == 3
  with pytest.raises(DataError, match="num_bands is 3"):
    sources.folder("val", data_dir=str(flat), num_bands=3)[0]

  # no label folder: prediction only, every pixel ignored
  (flat / "label").rename(flat / "gt")
  src = sources.folder("all", data_dir=str(flat))
  assert not src.has_labels and (src[0]["label"] == 255).all() and (src.label(2) == 255).all()
