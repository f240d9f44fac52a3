"""The sztaki source: the RCL protocol (tiles with change, 12/12 val/test), determinism, masks."""
import numpy as np
import pytest
from PIL import Image

from jaxcd.data import io
from jaxcd.data.sztaki import sztaki, sztaki_pairs

from .pair_files import SHARED

SZTAKI = SHARED / "SZTAKI_AirChange"
needs_sztaki = pytest.mark.skipif(not SZTAKI.is_dir(), reason=f"shared data not found at {SZTAKI}")


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
  splits = {s: sztaki(s, data_dir=str(SZTAKI)) for s in ("train", "val", "test")}
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
  a = sztaki("test", data_dir=str(SZTAKI))
  b = sztaki("test", data_dir=str(SZTAKI))
  assert a.ids == b.ids
  assert sztaki("test", data_dir=str(SZTAKI), split_seed=1).ids != a.ids
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
  pairs = {p.id: p for p in sztaki_pairs(SZTAKI)}
  assert len(pairs) == 13
  assert pairs["Szada_5"].b.name == "im2.BMP" and pairs["Szada_6"].label.name == "gt.BMP"
  for name in ("Szada_6", "Tiszadob_4"):
    raw = np.asarray(Image.open(pairs[name].label))
    assert len(np.unique(raw)) > 2
    np.testing.assert_array_equal(io.read_label(pairs[name].label), (raw > 127).astype(np.uint8))
