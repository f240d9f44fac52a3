"""Reading images and labels: every label encoding, odd file types, GeoTIFFs of any layout, size
and band checks."""
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcd.data import io
from jaxcd.errors import DataError

from .layouts import write_geotiff

RNG = np.random.default_rng(0)


def _mask(h=64, w=64, seed=1) -> np.ndarray:
  """A {0,1} mask with a changed rectangle and some scattered pixels."""
  m = np.zeros((h, w), np.uint8)
  m[10:30, 20:50] = 1
  m[np.random.default_rng(seed).random((h, w)) < 0.05] = 1
  return m


def _save(path: Path, x: np.ndarray) -> Path:
  Image.fromarray(x).save(path)
  return path


@pytest.mark.parametrize("scale,ext", [(255, ".png"), (255, ".bmp"), (1, ".png"), (255, ".tif")])
def test_binary_encodings_become_0_1(tmp_path, scale, ext):
  m = _mask()
  path = _save(tmp_path / f"gt{ext}", m * scale)
  out = io.read_label(path)
  assert out.dtype == np.uint8 and out.shape == m.shape
  np.testing.assert_array_equal(out, m)


def test_0_1_with_ignore_is_kept(tmp_path):
  m = _mask()
  m[:5] = 255
  np.testing.assert_array_equal(io.read_label(_save(tmp_path / "gt.png", m)), m)


def test_1_2_encoding_needs_the_flag(tmp_path):
  m = _mask()
  raw = m + 1  # 1 = no change, 2 = change
  raw[0, :7] = 0  # unlabelled
  path = _save(tmp_path / "gt.png", raw)
  with pytest.raises(DataError, match="1_2"):
    io.read_label(path)  # {0,1,2} is ambiguous without the flag
  out = io.read_label(path, encoding="1_2")
  expected = m.copy()
  expected[0, :7] = 255
  np.testing.assert_array_equal(out, expected)


def test_stray_grey_values_are_thresholded(tmp_path):
  m = _mask()
  raw = m * 255
  raw[0, 0], raw[1, 1], raw[2, 2] = 213, 21, 128  # the kinds of strays SZTAKI masks have
  expected = m.copy()
  expected[0, 0], expected[1, 1], expected[2, 2] = 1, 0, 1
  np.testing.assert_array_equal(io.read_label(_save(tmp_path / "gt.bmp", raw)), expected)


def test_jpeg_label_survives_compression_artifacts(tmp_path):
  yy, xx = np.mgrid[:64, :64]
  m = ((yy - 30) ** 2 + (xx - 27) ** 2 < 15**2).astype(np.uint8)  # edges cross 8x8 blocks
  path = tmp_path / "gt.jpg"
  Image.fromarray(m * 255).save(path, quality=60)
  assert len(np.unique(np.asarray(Image.open(path)))) > 2  # JPEG really added grey values
  out = io.read_label(path)
  assert set(np.unique(out)) <= {0, 1}
  assert np.mean(out == m) > 0.98


def test_rgb_label_any_channel_above_127_is_change(tmp_path):
  m = _mask()
  rgb = np.zeros((*m.shape, 3), np.uint8)
  rgb[..., 0] = m * 255  # red change
  rgb[40:44, 40:44, 2] = 200  # a blue blob also counts
  expected = m.copy()
  expected[40:44, 40:44] = 1
  np.testing.assert_array_equal(io.read_label(_save(tmp_path / "gt.png", rgb)), expected)


def test_unrecognised_values_raise_with_path_and_values(tmp_path):
  path = _save(tmp_path / "gt.png", _mask() * 7)
  with pytest.raises(DataError) as e:
    io.read_label(path)
  msg = str(e.value)
  assert str(path) in msg and "{0, 7}" in msg and "\n" not in msg


def test_a_photo_given_as_label_is_refused(tmp_path):
  photo = RNG.integers(0, 256, (64, 64), dtype=np.uint8)
  with pytest.raises(DataError, match="binary mask"):
    io.read_label(_save(tmp_path / "gt.png", photo))


def test_mixed_case_extensions(tmp_path):
  img = RNG.integers(0, 256, (32, 48, 3), dtype=np.uint8)
  Image.fromarray(img).save(tmp_path / "im1.BMP", format="BMP")
  Image.fromarray(_mask(32, 48) * 255).save(tmp_path / "gt.Bmp", format="BMP")
  found = io.list_images(tmp_path)
  assert set(found) == {"im1", "gt"}
  assert io.find_image(tmp_path, "im1") == tmp_path / "im1.BMP"
  assert io.find_image(tmp_path, "gt") == tmp_path / "gt.Bmp"
  np.testing.assert_array_equal(io.read_image(found["im1"]), img)
  np.testing.assert_array_equal(io.read_label(found["gt"]), _mask(32, 48))


def test_same_stem_twice_is_ambiguous(tmp_path):
  _save(tmp_path / "x.png", _mask())
  _save(tmp_path / "x.tif", _mask())
  with pytest.raises(DataError, match="x.png"):
    io.list_images(tmp_path)


def test_image_shapes_and_alpha(tmp_path):
  grey = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
  assert io.read_image(_save(tmp_path / "g.png", grey)).shape == (20, 30, 1)
  rgba = RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)
  out = io.read_image(_save(tmp_path / "a.png", rgba))
  np.testing.assert_array_equal(out, rgba[..., :3])  # alpha is not a band
  assert io.image_size(tmp_path / "a.png") == (20, 30)


def test_16bit_images_minmax_and_shift(tmp_path):
  x = np.linspace(1000, 5000, 20 * 30).reshape(20, 30).astype(np.uint16)
  path = tmp_path / "x16.png"
  Image.fromarray(x).save(path)
  out = io.read_image(path)
  assert out.dtype == np.uint8 and out.shape == (20, 30, 1)
  assert out.min() == 0 and out.max() == 255  # the file's own range fills 0..255
  assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)  # order kept
  shifted = io.read_image(path, scale="shift")[..., 0]
  np.testing.assert_array_equal(shifted, (x >> 8).astype(np.uint8))


def _scaled(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """The documented min/max scaling to uint8."""
  return np.rint((x.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


@pytest.mark.parametrize("interleave,compress", [("band", "deflate"), ("band", "lzw"),
                                                 ("pixel", "none"), ("pixel", "deflate")])
def test_multiband_geotiff_reads_every_band(tmp_path, interleave, compress):
  # Pillow reads a band-interleaved deflate/LZW TIFF as one band: rasterio reads every TIFF.
  x = RNG.integers(100, 4000, (64, 48, 13), dtype=np.uint16)
  path = write_geotiff(tmp_path / "s2.tif", x, interleave=interleave, compress=compress)
  assert io.image_info(path) == (64, 48, 13) and io.image_size(path) == (64, 48)
  out = io.read_image(path)
  assert out.dtype == np.uint8 and out.shape == (64, 48, 13)
  np.testing.assert_array_equal(out, _scaled(x, x.min(), x.max()))
  np.testing.assert_array_equal(io.read_image(path, scale="shift"), (x >> 8).astype(np.uint8))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_geotiff_dtypes_and_band_counts(tmp_path, dtype):
  x = RNG.integers(-50 if dtype != np.uint8 else 0, 200, (20, 30, 5)).astype(dtype)
  path = write_geotiff(tmp_path / "x.tif", x)
  out = io.read_image(path)
  assert out.shape == (20, 30, 5) and io.image_info(path) == (20, 30, 5)
  np.testing.assert_array_equal(out, x if dtype == np.uint8 else _scaled(x, x.min(), x.max()))


def test_geotiff_nodata_takes_no_part_in_the_scaling(tmp_path):
  x = RNG.uniform(0.1, 0.6, (16, 16, 2)).astype(np.float32)
  x[:2] = -9999
  out = io.read_image(write_geotiff(tmp_path / "r.tif", x, nodata=-9999))
  assert (out[:2] == 0).all()
  np.testing.assert_array_equal(out[2:], _scaled(x[2:], x[2:].min(), x[2:].max()))


def test_geotiff_labels_and_alpha(tmp_path):
  m = _mask()
  path = write_geotiff(tmp_path / "cm.tif", m + 1, compress="lzw")  # 1 = no change, 2 = change
  np.testing.assert_array_equal(io.read_label(path, "1_2"), m)
  rgba = RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)
  _save(tmp_path / "rgba.tif", rgba)  # Pillow marks the fourth band as alpha
  np.testing.assert_array_equal(io.read_image(tmp_path / "rgba.tif"), rgba[..., :3])
  assert io.image_info(tmp_path / "rgba.tif") == (20, 30, 3)


def test_reading_tiffs_warns_nothing(tmp_path):
  x = RNG.integers(0, 4000, (8, 8, 13), dtype=np.uint16)
  path = write_geotiff(tmp_path / "plain.tif", x)  # no georeferencing
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    io.read_image(path)
    io.image_info(path)
    io.read_bands([write_geotiff(tmp_path / "b.tif", x[..., 0])], 16, 16)
  assert not caught, [str(w.message) for w in caught]


def test_read_bands_resamples_onto_one_grid(tmp_path):
  rr, cc = np.mgrid[:60, :60]
  fine = (1000 + 10 * cc + 3 * rr).astype(np.uint16)
  coarse = fine.reshape(10, 6, 10, 6).mean(axis=(1, 3))  # a 60 m band of the same ramp
  files = [write_geotiff(tmp_path / "B02.tif", fine),
           write_geotiff(tmp_path / "B01.tif", np.rint(coarse).astype(np.uint16))]
  out = io.read_bands(files, 60, 60)
  assert out.shape == (60, 60, 2)
  lo, hi = fine.min(), fine.max()
  np.testing.assert_array_equal(out[..., 0], _scaled(fine, lo, hi))
  inner = np.s_[3:-3, 3:-3]  # bilinear rebuilds a ramp exactly away from the borders
  assert np.abs(out[..., 1][inner].astype(int) - _scaled(fine, lo, hi)[inner]).max() <= 1
  with pytest.raises(DataError, match="expected one band per file"):
    io.read_bands([write_geotiff(tmp_path / "two.tif", np.stack([fine, fine], -1))], 60, 60)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_empty_truncated_and_directory_paths(tmp_path, ext):
  x = RNG.integers(0, 4000, (64, 64, 3), dtype=np.uint16)
  path = tmp_path / f"t{ext}"
  if ext == ".tif":
    write_geotiff(path, x, compress="none")
  else:
    _save(path, x[..., 0].astype(np.uint8))
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  empty = tmp_path / f"empty{ext}"
  empty.write_bytes(b"")
  folder = tmp_path / f"dir{ext}"
  folder.mkdir()
  for read in (io.read_image, io.read_label):
    for p, words in ((path, "cannot read"), (empty, "empty"), (folder, "is a directory")):
      with pytest.raises(DataError) as e:
        read(p)
      msg = str(e.value)
      assert str(p) in msg and words in msg and "\n" not in msg, msg
  with pytest.raises(DataError, match="is a directory"):
    io.image_info(folder)


def test_missing_and_corrupt_files_name_the_path(tmp_path):
  with pytest.raises(DataError, match="not found") as e:
    io.read_image(tmp_path / "nope.png")
  assert str(tmp_path / "nope.png") in str(e.value)
  path = _save(tmp_path / "t.png", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  for read in (io.read_image, io.read_label):
    with pytest.raises(DataError) as e:
      read(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_check_pair():
  a = np.zeros((64, 64, 3), np.uint8)
  io.check_pair(a, a.copy(), np.zeros((64, 64), np.uint8), ("a.png", "b.png", "l.png"), 3)
  with pytest.raises(DataError, match=r"a\.png is 64x64.*b\.png is 60x64"):
    io.check_pair(a, np.zeros((64, 60, 3), np.uint8), None, ("a.png", "b.png"))
  with pytest.raises(DataError, match="l.png"):
    io.check_pair(a, a, np.zeros((32, 64), np.uint8), ("a.png", "b.png", "l.png"))
  with pytest.raises(DataError, match="band"):
    io.check_pair(a, np.zeros((64, 64, 4), np.uint8), None, ("a.png", "b.png"))
  with pytest.raises(DataError, match="num_bands is 4"):
    io.check_pair(a, a, None, ("a.png", "b.png"), num_bands=4)
