"""Reading images and labels: every label encoding, odd file types, size and band checks."""
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcd.data import io
from jaxcd.errors import DataError

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


def _write_tiff(path: Path, x_HxWxC: np.ndarray):
  """A minimal uncompressed little-endian TIFF with C >= 4 uint8 samples per pixel."""
  h, w, c = x_HxWxC.shape
  data = x_HxWxC.tobytes()
  bits = struct.pack(f"<{c}H", *[8] * c)
  extra = struct.pack(f"<{c - 3}H", *[0] * (c - 3))
  tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, c, "bits"), (259, 3, 1, 1), (262, 3, 1, 2),
          (273, 4, 1, "data"), (277, 3, 1, c), (278, 3, 1, h), (279, 4, 1, len(data)),
          (284, 3, 1, 1), (338, 3, c - 3, "extra")]
  ifd = 8
  bits_at = ifd + 2 + 12 * len(tags) + 4
  offsets = {"bits": bits_at, "extra": bits_at + len(bits),
             "data": bits_at + len(bits) + len(extra)}
  out = b"II*\x00" + struct.pack("<I", ifd) + struct.pack("<H", len(tags))
  for tag, typ, count, value in tags:
    if isinstance(value, str):
      out += struct.pack("<HHII", tag, typ, count, offsets[value])
    elif typ == 3:
      out += struct.pack("<HHIHH", tag, typ, count, value, 0)
    else:
      out += struct.pack("<HHII", tag, typ, count, value)
  path.write_bytes(out + struct.pack("<I", 0) + bits + extra + data)


def test_multiband_tiff_needs_the_geo_extra_or_reads_all_bands(tmp_path):
  x = RNG.integers(0, 256, (6, 7, 5), dtype=np.uint8)
  path = tmp_path / "scene.tif"
  _write_tiff(path, x)
  try:
    import rasterio  # noqa: F401
  except ImportError:
    with pytest.raises(DataError) as e:
      io.read_image(path)
    assert "pip install jaxcd[geo]" in str(e.value) and str(path) in str(e.value)
  else:
    np.testing.assert_array_equal(io.read_image(path), x)


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
