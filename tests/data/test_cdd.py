"""The cdd source: subset/<split>/{A,B,OUT} with JPEG labels."""
import numpy as np

from jaxcd.data.cdd import cdd

from .pair_files import _pair_arrays, _write


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
      src = cdd(split, data_dir=str(data_dir))
      assert len(src) == n
      for i in range(n):
        rec = src[i]
        assert rec["image_a"].shape == (64, 64, 3)
        expected = _pair_arrays(64, 64, i)[2] > 127
        assert set(np.unique(rec["label"])) <= {0, 1}
        assert np.mean(rec["label"] == expected) > 0.97
