"""The folder source: per-split folders, list files, one-band images, prediction-only data."""
import numpy as np
import pytest

from jaxcd.data.folder import folder
from jaxcd.errors import DataError

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
  (flat / "label").rename(flat / "gt")
  src = folder("all", data_dir=str(flat))
  assert not src.has_labels and (src[0]["label"] == 255).all() and (src.label(2) == 255).all()
