"""Reading images and change labels from disk into the record contract.

Images become uint8 HxWxC, labels uint8 HxW in {0, 1, 255} (255 = ignore). Every problem with a
file raises `DataError` with a one-line message that names the file.

Decisions:
- One decoder per format: rasterio (GDAL) reads every GeoTIFF (.tif/.tiff: any interleave,
  compression, dtype and band count, the band count from the file's own metadata); Pillow reads
  the 8-bit formats (png, jpg, bmp). Pillow silently decodes a band-interleaved multi-band TIFF
  as one band, so a TIFF never goes through it.
- 16-bit (and float) images are scaled to uint8 linearly by the file's own min/max over all
  bands (`scale="minmax"`, the default): sensors store 10-14 bit data in uint16 containers, so a
  fixed shift would leave most such images nearly black. The cost is that two dates are not on
  one radiometric scale; `scale="shift"` (value >> 8) keeps them on one scale instead. Pixels
  equal to a GeoTIFF's nodata value take no part in the min/max and become 0.
- An alpha channel (RGBA, LA) is dropped: it is not a spectral band. Palette images become RGB
  (one band when the palette is grey); palette labels keep their indices.
- File names match case-insensitively on the extension (`im2.BMP` is an image).
"""
from __future__ import annotations

import io as io_lib
import os
import stat
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning

from jaxcd import storage
from jaxcd.errors import DataError, one_line

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_ENCODINGS = ("auto", "0_255", "0_1", "1_2")
IGNORE = 255
# The whole WHU-CD scene is ~5e8 pixels, above Pillow's decompression-bomb guard (~9e7).
_MAX_PIXELS = 2**31
# Opening files swaps process-wide settings (warning filters, Pillow's size guard) for a moment.
_OPEN_LOCK = threading.Lock()

PathLike = str | os.PathLike


def is_image(path: PathLike) -> bool:
  return Path(path).suffix.lower() in IMAGE_EXTS


def list_images(directory: PathLike) -> dict[str, Path]:
  """Image files in `directory` by stem (extension case-insensitive), sorted by stem.

  Two files with one stem (`a.png`, `a.PNG`) are ambiguous and raise `DataError`.
  """
  directory = Path(directory)
  found: dict[str, Path] = {}
  try:
    entries = sorted(directory.iterdir())
  except OSError as e:
    raise DataError(f"cannot list {directory}: {one_line(e.strerror or e)}") from None
  for p in entries:
    if not p.is_file() or not is_image(p) or p.name.startswith("."):
      continue
    if p.stem in found:
      raise DataError(f"two images with stem {p.stem!r}: {found[p.stem]} and {p}")
    found[p.stem] = p
  return dict(sorted(found.items()))


def find_image(directory: PathLike, stem: str) -> Path | None:
  """The image `directory/stem.<ext>` for any image extension in any case, or None."""
  directory = Path(directory)
  for ext in IMAGE_EXTS:
    for cand in (ext, ext.upper()):
      p = directory / (stem + cand)
      if p.is_file():
        return p
  # Mixed-case extensions like `.Png` are rare; a listing finds them.
  if directory.is_dir():
    return list_images(directory).get(stem)
  return None


def image_info(path: PathLike) -> tuple[int, int, int]:
  """(height, width, bands) from the file header, without decoding pixels; `bands` counts the
  bands `read_image` returns (alpha dropped, palettes expanded)."""
  path = existing(path, "image")
  if _is_tiff(path):
    with _open_raster(path, "image") as ds:
      bands, lut = _raster_bands(ds, label=False)
      return ds.height, ds.width, lut.shape[1] if lut is not None else len(bands)
  with _open_pil(path, "image") as im:
    w, h = im.size
    mode = im.mode
  # The conversions of `_read_raw`: palettes and colour spaces to RGB, alpha dropped.
  return h, w, {"P": 3, "RGBA": 3, "LA": 1, "PA": 1, "CMYK": 3, "YCbCr": 3, "LAB": 3,
                "HSV": 3}.get(mode, Image.getmodebands(mode))


def image_size(path: PathLike) -> tuple[int, int]:
  """(H, W) from the file header, without decoding pixels."""
  return image_info(path)[:2]


def read_image(path: PathLike, scale: str = "minmax") -> np.ndarray:
  """Reads an image as uint8 HxWxC (C = bands; greyscale gives C = 1)."""
  _check_scale(scale, path)
  path = existing(path, "image")
  x, valid = _read_raw(path)
  if x.ndim == 2:
    x = x[:, :, None]
  return _to_uint8(x, scale, path, valid)


def read_bands(paths: Sequence[PathLike], height: int, width: int,
               scale: str = "minmax") -> np.ndarray:
  """Single-band rasters stacked in the given order as one uint8 HxWxC image, each band resampled
  bilinearly to height x width where its size differs (Sentinel-2's 20 and 60 m bands onto the
  10 m grid), then scaled together as one image (like a multi-band file)."""
  _check_scale(scale, paths[0] if paths else "")
  bands, masks = [], []
  for p in paths:
    p = existing(p, "image")
    with _open_raster(p, "image") as ds:
      if ds.count != 1:
        raise DataError(f"image {p} has {ds.count} bands; expected one band per file")
      shape = (height, width)
      try:
        if (ds.height, ds.width) == shape:
          x = ds.read(1)
        else:
          x = ds.read(1, out_shape=shape, resampling=Resampling.bilinear)
      except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
        raise _raster_error(p, "image", e) from None
      nodata = ds.nodatavals[0]
    bands.append(x)
    masks.append(None if nodata is None else _not_nodata(x, nodata))
  x = np.stack(bands, axis=-1)
  valid = None
  if any(m is not None for m in masks):
    valid = np.stack([m if m is not None else np.ones(x.shape[:2], bool) for m in masks], -1)
  return _to_uint8(x, scale, Path(paths[0]), valid)


def read_label(path: PathLike, encoding: str = "auto") -> np.ndarray:
  """Reads a change mask as uint8 HxW in {0: no change, 1: change, 255: ignore}.

  encoding:
    "auto": {0,1} and {0,1,255} are kept; a mask with values above 127 (0/255, also with a few
      stray grey values, or RGB where any channel > 127 means change) is thresholded at > 127;
      anything else (e.g. {0, 7}, or {1, 2} which needs "1_2") raises `DataError`.
    "0_255": threshold > 127 on the greyscale (or max over channels) value, no checks.
    "0_1": values must be in {0, 1, 255}.
    "1_2": 1 = no change, 2 = change, 0 = ignore (the convention of some annotation tools).
  """
  if encoding not in LABEL_ENCODINGS:
    raise DataError(f"unknown label encoding {encoding!r} for {path}: use one of {LABEL_ENCODINGS}")
  path = existing(path, "label")
  x, _ = _read_raw(path, label=True)
  if x.ndim == 3:
    # Colour masks: change is drawn in any colour, so the brightest channel decides.
    x = x.max(axis=-1)
  if x.dtype == np.bool_:
    x = x.astype(np.uint8)
  if not np.issubdtype(x.dtype, np.integer):
    raise DataError(f"label {path} has non-integer pixels ({x.dtype}); expected a binary mask")
  if x.dtype != np.uint8:
    top = int(x.max()) if x.size else 0
    # 16-bit masks: 0/65535 is the 16-bit twin of 0/255; small values are already codes.
    x = (x >> 8).astype(np.uint8) if top > 255 else x.astype(np.uint8)
  values = np.unique(x)

  if encoding == "1_2":
    bad = np.setdiff1d(values, [0, 1, 2])
    if bad.size:
      raise DataError(f"label {path} has values {_fmt(values)}; encoding '1_2' allows only 0, 1, 2")
    out = np.full(x.shape, IGNORE, np.uint8)
    out[x == 1] = 0
    out[x == 2] = 1
    return out
  if encoding == "0_1":
    if np.setdiff1d(values, [0, 1, IGNORE]).size:
      raise DataError(f"label {path} has values {_fmt(values)}; encoding '0_1' allows only "
                      f"0, 1, 255")
    return x
  if encoding == "0_255":
    return (x > 127).astype(np.uint8)

  # auto
  binary01 = np.setdiff1d(values, [0, 1]).size == 0
  if binary01 or (np.setdiff1d(values, [0, 1, IGNORE]).size == 0 and 1 in values):
    # {0,1} or {0,1,255}: already the contract. ({0,255} is the 0/255 encoding: 255 = change.)
    return x
  if values.max() > 127:
    # A real mask has a few grey pixels at most (resampling, JPEG); a photo has many.
    mid = np.count_nonzero((x >= 32) & (x <= 223)) / x.size
    if mid > 0.25:
      raise DataError(f"label {path} does not look like a binary mask: {mid:.0%} of its pixels are "
                      f"grey (32..223); pass encoding='0_255' to threshold it anyway")
    return (x > 127).astype(np.uint8)
  hint = ""
  if set(values.tolist()) <= {0, 1, 2}:
    hint = "; for 1 = no change, 2 = change use encoding '1_2'"
  raise DataError(f"label {path} has values {_fmt(values)}, not a binary encoding "
                  f"(0/1, 0/255, or greyscale thresholded at > 127){hint}")


def check_pair(image_a: np.ndarray, image_b: np.ndarray, label: np.ndarray | None,
               names: Sequence[str], num_bands: int | None = None) -> None:
  """Checks that A, B (and the label) agree in size and band count.

  names: (A path, B path[, label path]) used in messages.
  """
  name_a, name_b = str(names[0]), str(names[1])
  if image_a.shape[:2] != image_b.shape[:2]:
    raise DataError(f"A/B size mismatch: {name_a} is {_hw(image_a)}, {name_b} is {_hw(image_b)}")
  if label is not None and label.shape[:2] != image_a.shape[:2]:
    name_l = str(names[2]) if len(names) > 2 else "label"
    raise DataError(f"label size mismatch: {name_l} is {_hw(label)}, {name_a} is {_hw(image_a)}")
  bands_a, bands_b = image_a.shape[-1], image_b.shape[-1]
  if bands_a != bands_b:
    raise DataError(f"A/B band mismatch: {name_a} has {bands_a} bands, {name_b} has {bands_b}")
  if num_bands and bands_a != num_bands:
    raise DataError(f"{name_a} has {bands_a} bands but data.num_bands is {num_bands}")


# --- internals ---------------------------------------------------------------------------------

def existing(path: PathLike, what: str) -> Path:
  """`path` as a Path if it is a non-empty regular file; else a DataError saying what it is."""
  path = Path(path)
  try:
    st = path.stat()
  except OSError:
    raise DataError(f"{what} file not found: {path}") from None
  if stat.S_ISDIR(st.st_mode):
    raise DataError(f"{what} path {path} is a directory, not a file")
  if not stat.S_ISREG(st.st_mode):
    raise DataError(f"{what} path {path} is not a regular file")
  if st.st_size == 0:
    raise DataError(f"{what} file {path} is empty (0 bytes)")
  return path


def _check_scale(scale: str, path) -> None:
  if scale not in ("minmax", "shift"):
    raise DataError(f"unknown 16-bit scaling {scale!r} for {path}: use 'minmax' or 'shift'")


def _is_tiff(path: Path) -> bool:
  return path.suffix.lower() in (".tif", ".tiff")


def _open_pil(path: Path, what: str) -> Image.Image:
  # Pillow checks the size at open time against a global; raise it only for this call.
  with _OPEN_LOCK, warnings.catch_warnings():
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, _MAX_PIXELS
    try:
      return Image.open(path)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
      raise DataError(f"cannot read {what} {path}: {one_line(e)}") from None
    finally:
      Image.MAX_IMAGE_PIXELS = old


def _open_raster(path: Path, what: str):
  """An open rasterio dataset (header read, no pixels). Plain TIFFs are not georeferenced, which
  is no problem here: rasterio's warning about it is silenced."""
  with _OPEN_LOCK, warnings.catch_warnings():
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    try:
      return rasterio.open(path)
    except Exception as e:  # noqa: BLE001
      raise _raster_error(path, what, e) from None


def _raster_error(path: Path, what: str, e: Exception) -> DataError:
  # GDAL's own message is the cause; rasterio's wrapper only says "see previous exception".
  cause = e.__cause__ or e.__context__
  detail = one_line(cause if cause is not None and "previous exception" in str(e) else e)
  return DataError(f"cannot read {what} {path}: {detail}")


def _raster_bands(ds, label: bool) -> tuple[list[int], np.ndarray | None]:
  """The 1-based bands to read (alpha dropped) and, for a palette image, its colour table as a
  256xC lookup (C = 1 when the palette is grey); labels keep palette indices."""
  interp = ds.colorinterp
  bands = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha] or [1]
  if (label or len(bands) != 1 or interp[bands[0] - 1] != ColorInterp.palette
      or ds.dtypes[bands[0] - 1] != "uint8"):
    return bands, None
  try:
    cmap = ds.colormap(bands[0])
  except ValueError:  # no colour table after all: the indices are the values
    return bands, None
  lut = np.zeros((256, 3), np.uint8)
  for k, rgba in cmap.items():
    if 0 <= k < 256:
      lut[k] = rgba[:3]
  grey = (lut[:, :1] == lut).all()
  return bands, lut[:, :1] if grey else lut


def _not_nodata(x: np.ndarray, nodata: float) -> np.ndarray:
  return ~np.isnan(x) if np.isnan(nodata) else x != nodata


def _read_raster(path: Path, what: str, label: bool) -> tuple[np.ndarray, np.ndarray | None]:
  with _open_raster(path, what) as ds:
    bands, lut = _raster_bands(ds, label)
    try:
      # Band by band into one HxWxC array: no second full-size copy for a transpose.
      x = np.empty((ds.height, ds.width, len(bands)), ds.dtypes[bands[0] - 1])
      for k, b in enumerate(bands):
        x[..., k] = ds.read(b)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
      raise _raster_error(path, what, e) from None
    nodata = [ds.nodatavals[b - 1] for b in bands]
  if lut is not None:
    return lut[x[..., 0]], None
  valid = None
  if not label and any(v is not None for v in nodata):
    valid = np.ones(x.shape, bool)
    for k, v in enumerate(nodata):
      if v is not None:
        valid[..., k] = _not_nodata(x[..., k], v)
  return x, valid


def _read_raw(path: Path, label: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
  """Pixels in their stored dtype (HxW or HxWxC, alpha dropped, palettes resolved) and, when
  the file declares a nodata value, the mask of valid pixels."""
  what = "label" if label else "image"
  if _is_tiff(path):
    x, valid = _read_raster(path, what, label)
  else:
    valid = None
    with _open_pil(path, what) as im:
      try:
        im.load()  # decodes now, so truncated files fail here and not later
        mode = im.mode
        if mode == "P":
          # Palette labels store class indices; palette images store colours.
          im = im if label else im.convert("RGBA" if "transparency" in im.info else "RGB")
          mode = im.mode
        if mode in ("RGBA", "LA", "PA"):
          im = im.convert("RGB" if mode == "RGBA" else "L")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
          im = im.convert("RGB")
        x = np.asarray(im)
      except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
        raise DataError(f"cannot read {what} {path}: {one_line(e)}") from None
  if x.ndim == 0 or x.size == 0:
    raise DataError(f"cannot read {what} {path}: it has no pixels")
  return x, valid


def _to_uint8(x_HxWxC: np.ndarray, scale: str, path: Path,
              valid: np.ndarray | None = None) -> np.ndarray:
  x = x_HxWxC
  if x.dtype == np.uint8:
    return x
  if x.dtype == np.bool_:
    return x.astype(np.uint8) * 255
  if scale == "shift" and x.dtype in (np.uint16, np.int16):
    y = (x.astype(np.int32).clip(0, 65535) >> 8).astype(np.uint8)
    return y if valid is None else np.where(valid, y, 0).astype(np.uint8)
  x = x.astype(np.float64)
  use = np.isfinite(x) if valid is None else np.isfinite(x) & valid
  if not use.any():
    raise DataError(f"image {path} has no finite pixel values" if valid is None else
                    f"image {path} has no valid pixels (all are nodata or not finite)")
  lo, hi = x[use].min(), x[use].max()
  y = (x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
  return np.where(use, np.rint(y.clip(0, 255, out=y)), 0).astype(np.uint8)


def _hw(x: np.ndarray) -> str:
  return f"{x.shape[1]}x{x.shape[0]} (WxH)"


def _fmt(values: np.ndarray, limit: int = 8) -> str:
  v = [int(t) for t in values[:limit]]
  more = f", ... ({values.size} values)" if values.size > limit else ""
  return "{" + ", ".join(map(str, v)) + more + "}"


def atomic_write(path, write) -> None:
  """Writes via a temporary file + rename, so concurrent processes never see half a file. On an
  object store (a gs:// path) one upload of the whole object is atomic already."""
  if storage.is_remote(path):
    buf = io_lib.BytesIO()
    write(buf)
    p = storage.path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(buf.getvalue())
    return
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
