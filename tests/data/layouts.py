"""Writers of the published dataset layouts (GeoTIFFs, date folders, flat pair files, OSCD) for
the source tests, and helpers to check that a source writes nothing into its dataset folder."""
import contextlib
import os
import stat
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from .pair_files import _pair_arrays, _write

OSCD_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
              "B12")
OSCD_RES = {"B01": 60, "B09": 60, "B10": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20,
            "B11": 20, "B12": 20}  # the others are 10 m
OSCD_PUBLISHED = ("Onera Satellite Change Detection dataset - Images",
                  "Onera Satellite Change Detection dataset - Train Labels",
                  "Onera Satellite Change Detection dataset - Test Labels")
OSCD_SIMPLE = ("images", "train_labels", "test_labels")


def write_geotiff(path: Path, array_HxWxC: np.ndarray, interleave: str = "band",
                  compress: str = "deflate", transform=None, crs=None, nodata=None) -> Path:
  """A GeoTIFF of `array_HxWxC` (HxW for one band) written by rasterio/GDAL."""
  x = array_HxWxC if array_HxWxC.ndim == 3 else array_HxWxC[:, :, None]
  h, w, c = x.shape
  path.parent.mkdir(parents=True, exist_ok=True)
  opts = {"interleave": interleave}
  if compress != "none":
    opts["compress"] = compress
  if transform is not None:
    opts.update(transform=transform, crs=crs or "EPSG:32631")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype=x.dtype,
                       nodata=nodata, **opts) as ds:
      ds.write(np.moveaxis(x, -1, 0))
  return path


def write_folder(root: Path, a: str = "prev", b: str = "curr", label: str | None = "label",
                 names: Sequence[str] = ("p1", "p2"), size: int = 64, ext: str = ".png",
                 seed0: int = 0) -> dict:
  """root/{a,b,label}/<name><ext> (label as png 0/255; none when label is None).
  Returns {name: (A, B, label in {0,1})}."""
  arrays = {}
  for k, name in enumerate(names):
    xa, xb, lab = _pair_arrays(size, size, seed0 + k)
    _write(root / a / f"{name}{ext}", xa)
    _write(root / b / f"{name}{ext}", xb)
    if label is not None:
      _write(root / label / f"{name}.png", lab)
    arrays[name] = (xa, xb, (lab > 127).astype(np.uint8))
  return arrays


def write_flat(root: Path, names: Sequence[str], ext: str = ".png",
               templates: Sequence[str] = ("{name}_1", "{name}_2", "{name}_gt"),
               size: int = 64) -> dict:
  """Pair files in one folder, e.g. root/<name>_1.png, <name>_2.png, <name>_gt.png (greyscale
  images, as SAR benchmarks ship). Returns {name: (A, B, label in {0,1})}."""
  arrays = {}
  for k, name in enumerate(names):
    xa, xb, lab = _pair_arrays(size, size, k)
    files = (xa[..., 0], xb[..., 0], lab)
    for t, x in zip(templates, files):
      _write(root / (t.replace("{name}", name) + (ext if x is not lab else ".png")), x)
    arrays[name] = (xa[..., :1], xb[..., :1], (lab > 127).astype(np.uint8))
  return arrays


def oscd_field(band: int, date: int, h: int, w: int) -> np.ndarray:
  """The 10 m truth of an OSCD test band: a linear ramp (bilinear resampling rebuilds it exactly
  away from the borders), inside [1000, 3100]; B02 and B08 pin the range to [0, 4000]."""
  rr, cc = np.mgrid[:h, :w].astype(np.float64)
  x = 1000 + 100 * band + 10 * cc + 3 * rr + 50 * date
  if OSCD_BANDS[band] == "B02":
    x[0, 0] = 0
  if OSCD_BANDS[band] == "B08":
    x[0, 0] = 4000
  return x


def oscd_label(h: int, w: int, seed: int) -> np.ndarray:
  """An OSCD change map: 1 = no change, 2 = change."""
  rr, cc = np.mgrid[:h, :w]
  return np.where(((rr + 5 * seed) // 8 + cc // 8) % 3 == 0, 2, 1).astype(np.uint8)


def write_oscd(root: Path, train: Sequence[str] = ("abudhabi", "bercy", "nantes", "pisa"),
               test: Sequence[str] = ("brasilia", "dubai"), size: int = 60,
               smaller_date2: Sequence[str] = ("bercy",), folders=OSCD_PUBLISHED) -> dict:
  """The published OSCD layout: <images>/{train.txt,test.txt,<city>/imgs_{1,2}/<prefix>_Bxx.tif}
  (one georeferenced uint16 GeoTIFF per band at 10, 20 or 60 m: 60 m bands are block means of
  `oscd_field`) and <train|test labels>/<city>/cm/<city>-cm.tif (1/2, uint8, 10 m).
  Cities in `smaller_date2` have date-2 bands 2 px smaller (the quirk of the real data).
  Returns {city: {"size": (H, W) of date 1, "size2": of date 2, "label": 1/2 map}}."""
  images, train_labels, test_labels = (root / f for f in folders)
  images.mkdir(parents=True, exist_ok=True)
  (images / "train.txt").write_text(",".join(train))
  (images / "test.txt").write_text(",".join(test))
  out = {}
  for k, city in enumerate([*train, *test]):
    sizes = {1: (size, size), 2: (size - 2, size - 2) if city in smaller_date2 else (size, size)}
    for date, (h, w) in sizes.items():
      for b, band in enumerate(OSCD_BANDS):
        res = OSCD_RES.get(band, 10)
        f = res // 10
        field = oscd_field(b, date, -(-h // f) * f, -(-w // f) * f)
        coarse = field.reshape(field.shape[0] // f, f, field.shape[1] // f, f).mean(axis=(1, 3))
        if f == 1:
          coarse = field[:h, :w]
        name = f"S2A_OPER_MSI_L1C_{city.upper()}_{date}_{band}.tif"
        write_geotiff(images / city / f"imgs_{date}" / name, np.rint(coarse).astype(np.uint16),
                      transform=Affine(res, 0, 600000, 0, -res, 5000000))
    labels = train_labels if city in train else test_labels
    cm = oscd_label(size, size, k)
    write_geotiff(labels / city / "cm" / f"{city}-cm.tif", cm)
    out[city] = {"size": sizes[1], "size2": sizes[2], "label": cm}
  return out


def listing(root: Path) -> list[tuple]:
  """Every path under `root` with its size and modification time (a folder's mtime changes when
  a file is created in it, even a temporary one later removed)."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    for n in sorted(dirnames + filenames):
      p = Path(dirpath) / n
      st = p.stat()
      out.append((str(p.relative_to(root)), st.st_size if p.is_file() else 0, st.st_mtime_ns))
  out.append((".", 0, root.stat().st_mtime_ns))
  return sorted(out)


@contextlib.contextmanager
def read_only(root: Path):
  """`chmod -R a-w root` for the duration (restored after). Root ignores the mode bits, so
  compare `listing` before and after too."""
  paths = [Path(d) / n for d, ds, fs in os.walk(root) for n in ds + fs] + [root]
  modes = {p: p.stat().st_mode for p in paths}
  for p in paths:
    os.chmod(p, modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
  try:
    yield root
  finally:
    for p in paths:
      os.chmod(p, stat.S_IMODE(modes[p]))
