"""Reading images and change labels from disk into the record contract.

Images become uint8 HxWxC, labels uint8 HxW in {0, 1, 255} (255 = ignore). Every problem with a
file raises `DataError` with a one-line message that names the file.

Decisions:
- 16-bit (and float) images are scaled to uint8 linearly by the file's own min/max over all
  bands (`scale="minmax"`, the default): sensors store 10-14 bit data in uint16 containers, so a
  fixed shift would leave most such images nearly black. The cost is that two dates are not on
  one radiometric scale; `scale="shift"` (value >> 8) keeps them on one scale instead.
- An alpha channel (RGBA, LA) is dropped: it is not a spectral band.
- GeoTIFFs Pillow cannot decode (more than 4 bands, multi-band 16-bit, float) are read with
  rasterio, the optional extra `geo`.
- File names match case-insensitively on the extension (`im2.BMP` is an image).
"""
from __future__ import annotations

import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from jaxcd.errors import DataError, one_line

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_ENCODINGS = ("auto", "0_255", "0_1", "1_2")
IGNORE = 255
# The whole WHU-CD scene is ~5e8 pixels, above Pillow's decompression-bomb guard (~9e7).
_MAX_PIXELS = 2**31
_PIL_OPEN_LOCK = threading.Lock()

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


def image_size(path: PathLike) -> tuple[int, int]:
  """(H, W) from the file header, without decoding pixels."""
  path = _existing(path, "image")
  try:
    with _open_pil(path) as im:
      w, h = im.size
    return h, w
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
    if _is_tiff(path):
      return _rasterio_read(path, e, header_only=True)
    raise DataError(f"cannot read image {path}: {one_line(e)}") from None


def read_image(path: PathLike, scale: str = "minmax") -> np.ndarray:
  """Reads an image as uint8 HxWxC (C = bands; greyscale gives C = 1)."""
  if scale not in ("minmax", "shift"):
    raise DataError(f"unknown 16-bit scaling {scale!r} for {path}: use 'minmax' or 'shift'")
  path = _existing(path, "image")
  x = _read_raw(path)
  if x.ndim == 2:
    x = x[:, :, None]
  return _to_uint8(x, scale, path)


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
  path = _existing(path, "label")
  x = _read_raw(path, label=True)
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

def _existing(path: PathLike, what: str) -> Path:
  path = Path(path)
  if not path.is_file():
    raise DataError(f"{what} file not found: {path}")
  return path


def _is_tiff(path: Path) -> bool:
  return path.suffix.lower() in (".tif", ".tiff")


def _open_pil(path: Path) -> Image.Image:
  # Pillow checks the size at open time against a global; raise it only for this call. The lock
  # keeps reader threads from restoring each other's values.
  with _PIL_OPEN_LOCK, warnings.catch_warnings():
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, _MAX_PIXELS
    try:
      return Image.open(path)
    finally:
      Image.MAX_IMAGE_PIXELS = old


def _read_raw(path: Path, label: bool = False) -> np.ndarray:
  """Pixels in their stored dtype: HxW or HxWxC, alpha dropped, palettes resolved."""
  try:
    with _open_pil(path) as im:
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
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
    if _is_tiff(path):
      return _rasterio_read(path, e)
    raise DataError(f"cannot read {'label' if label else 'image'} {path}: {one_line(e)}") from None
  if x.ndim == 0 or x.size == 0:
    raise DataError(f"cannot read {'label' if label else 'image'} {path}: it has no pixels")
  return x


def _rasterio_read(path: Path, pil_error: Exception, header_only: bool = False):
  try:
    import rasterio  # optional extra `geo`
  except ImportError:
    raise DataError(f"cannot read {path} with Pillow ({one_line(pil_error)}); for multi-band or "
                    f"GeoTIFF files install the geo extra: pip install jaxcd[geo]") from None
  try:
    with rasterio.open(path) as ds:
      if header_only:
        return ds.height, ds.width
      return np.moveaxis(ds.read(), 0, -1)  # CxHxW -> HxWxC
  except Exception as e:  # noqa: BLE001
    raise DataError(f"cannot read {path}: {one_line(e)}") from None


def _to_uint8(x_HxWxC: np.ndarray, scale: str, path: Path) -> np.ndarray:
  x = x_HxWxC
  if x.dtype == np.uint8:
    return x
  if x.dtype == np.bool_:
    return x.astype(np.uint8) * 255
  if scale == "shift" and x.dtype in (np.uint16, np.int16):
    return (x.astype(np.int32).clip(0, 65535) >> 8).astype(np.uint8)
  x = x.astype(np.float64)
  finite = np.isfinite(x)
  if not finite.any():
    raise DataError(f"image {path} has no finite pixel values")
  lo, hi = x[finite].min(), x[finite].max()
  y = (x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
  return np.where(finite, np.rint(y), 0).astype(np.uint8)


def _hw(x: np.ndarray) -> str:
  return f"{x.shape[1]}x{x.shape[0]} (WxH)"


def _fmt(values: np.ndarray, limit: int = 8) -> str:
  v = [int(t) for t in values[:limit]]
  more = f", ... ({values.size} values)" if values.size > limit else ""
  return "{" + ", ".join(map(str, v)) + more + "}"


def atomic_write(path: Path, write) -> None:
  """Writes via a temporary file + rename, so concurrent processes never see half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
