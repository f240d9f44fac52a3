"""The `oscd` source: the Onera Satellite Change Detection dataset (Daudt et al. 2018), 24
Sentinel-2 city pairs, 13 bands stored as one GeoTIFF per band at 10, 20 or 60 m.

Decisions:
- Bands in the standard Sentinel-2 order B01, B02, ..., B08, B8A, B09, B10, B11, B12 (what
  `predict.rgb_bands` assumes for 13 bands: B04, B03, B02 are red, green, blue).
- Every band is resampled bilinearly onto the 10 m grid (the size of B02/B03/B04/B08; the change
  maps are drawn on it). The 20 and 60 m bands are averages over their footprint, so a smooth
  interpolation is the better guess between pixel centres; nearest-neighbour keeps the stored
  values but turns each 60 m pixel into a 6x6 block whose edges a convolution reads as
  structure. The whole band is stretched onto the 10 m extent (GDAL, pixel-centre aligned), so
  any residual misalignment stays under one native pixel of the band.
- The published split is 14 train / 10 test cities (train.txt, test.txt); val is a seeded subset
  of `val_cities` train cities (default 3), taken out of train, so model selection never sees a
  test city. val_cities=0 trains on all 14 (the paper's protocol) and leaves val empty.
- Where the dates (or the label) of a city differ in size (some date-2 bands are 2 px smaller),
  all three are cropped to the common extent from the top-left corner, with a logged warning.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from absl import logging

from jaxcd.data import io
from jaxcd.data.registry import register_source
from jaxcd.data.pairs import (Pair, PairListSource, _empty_split, _int_field, _require_dir,
                              tile_pairs)
from jaxcd.errors import ConfigError, DataError

OSCD_ORIGIN = "https://rcdaudt.github.io/oscd/"
OSCD_LAYOUT = ("data_dir/{<images>/{train.txt,test.txt,<city>/{imgs_1,imgs_2}/*_B01.tif ... "
               "*_B12.tif}, <train labels>/<city>/cm/<city>-cm.tif, <test labels>/...}, the "
               "folders named as published ('Onera Satellite Change Detection dataset - Images', "
               "'... - Train Labels', '... - Test Labels') or images/, train_labels/, test_labels/")
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")
TEN_M = ("B02", "B03", "B04", "B08")
_BAND_RX = re.compile(r"(?:.*_)?(B(?:0[1-9]|1[0-2]|8A))", re.IGNORECASE)


class OscdSource(PairListSource):
  """`PairListSource` whose image "files" are a date's folder of 13 single-band rasters.

  bands: date folder -> its band files in `BANDS` order; size: date folder -> its 10 m (H, W);
  extent: date folder or label file -> the city's common (H, W), to which each is cropped.
  """

  def __init__(self, pairs, *, bands: dict[Path, tuple[Path, ...]],
               size: dict[Path, tuple[int, int]], extent: dict[Path, tuple[int, int]], **kwargs):
    super().__init__(pairs, **kwargs)
    self.bands, self.size, self.extent = bands, size, extent

  def _decode(self, path: Path, kind: str) -> np.ndarray:
    if kind == "label":
      x = io.read_label(path, self.label_encoding)
    else:
      x = io.read_bands(self.bands[path], *self.size[path], scale=self.scale_16bit)
    h, w = self.extent[path]
    return x[:h, :w]


@register_source("oscd")
def oscd(split: str, data_dir: str = "", tile_size: int = 0, val_cities: int = 3,
         split_seed: int = 0, num_bands: int = 0, label_encoding: str = "1_2",
         scale_16bit: str = "minmax", cache_size: int = 0) -> OscdSource:
  """OSCD as published; one record per city (whole images, ~600x600 at 10 m, sizes vary), or
  its non-overlapping tile_size tiles (0 = whole images; margins are dropped).

  Splits: test = test.txt; val = `val_cities` train.txt cities drawn with `split_seed`; train =
  the other train.txt cities; all = every city. Labels <city>/cm/<city>-cm.tif code 1 = no
  change, 2 = change (label_encoding "1_2"; 0 = ignore). Images are uint8 after the 16-bit
  scaling `scale_16bit` over all 13 bands of a date. cache_size: decoded files kept per process
  (0 = all of the split's, ~10 MB a city).
  """
  root = _require_dir(data_dir, "oscd", OSCD_LAYOUT, OSCD_ORIGIN)
  images = _find_folder(root, "images", "images folder")
  train_labels = _find_folder(root, "train labels", "train labels folder")
  test_labels = _find_folder(root, "test labels", "test labels folder")
  if images is None:
    raise DataError(f"data_dir {root} has no OSCD images folder; oscd expects {OSCD_LAYOUT}; the "
                    f"dataset must be obtained from its authors ({OSCD_ORIGIN})")
  train = _read_cities(images / "train.txt")
  n_val = _int_field("val_cities", val_cities, 0)
  if n_val >= len(train):
    raise ConfigError(f"config.data.val_cities: {n_val} leaves no training city of the "
                      f"{len(train)} in {images / 'train.txt'}")
  rng = np.random.default_rng(_int_field("split_seed", split_seed, 0))
  val = sorted(rng.choice(sorted(train), n_val, replace=False).tolist()) if n_val else []
  test = _read_cities(images / "test.txt") if split in ("test", "all") else []
  cities = {"train": [(c, "train") for c in train if c not in val],
            "val": [(c, "train") for c in val], "test": [(c, "test") for c in test],
            "all": [(c, "train") for c in train] + [(c, "test") for c in test]}.get(split)
  if cities is None:
    raise _empty_split("oscd", split, root, "OSCD has train, val, test and all")
  if not cities:
    raise _empty_split("oscd", split, root, "val_cities is 0" if split == "val" else "no cities")

  label_dirs = {"train": train_labels, "test": test_labels}
  pairs, bands, size, extent = [], {}, {}, {}
  for city, part in cities:
    labels = label_dirs[part]
    if labels is None:
      raise DataError(f"data_dir {root} has no {part} labels folder (for city {city!r}); oscd "
                      f"expects {OSCD_LAYOUT}")
    dates = [images / city / "imgs_1", images / city / "imgs_2"]
    for d in dates:
      bands[d] = _band_files(d)
      size[d] = _ten_m_size(bands[d])
    label = io.find_image(labels / city / "cm", f"{city}-cm")
    if label is None:
      raise DataError(f"missing label {labels / city / 'cm' / (city + '-cm.tif')} of OSCD city "
                      f"{city!r}")
    sizes = [size[dates[0]], size[dates[1]], io.image_size(label)]
    h, w = min(s[0] for s in sizes), min(s[1] for s in sizes)
    if len(set(sizes)) > 1:
      logging.warning("oscd: city %s: date 1 is %s, date 2 %s, label %s (HxW); all cropped to the "
                      "common %dx%d", city, *("x".join(map(str, s)) for s in sizes), h, w)
    for p in (*dates, label):
      extent[p] = (h, w)
    pairs.append(Pair(city, dates[0], dates[1], label, (0, 0, h, w)))

  tile = _int_field("tile_size", tile_size, 0)
  records = tile_pairs(pairs, tile) if tile else pairs
  layout = (f"OSCD, {len(pairs)} cities ({', '.join(c for c, _ in cities)}), 13 bands on the "
            f"10 m grid, {f'{tile}x{tile} tiles' if tile else 'whole images'}")
  return OscdSource(records, bands=bands, size=size, extent=extent, name="oscd", split=split,
                    root=root, layout=layout, num_bands=num_bands, label_encoding=label_encoding,
                    scale_16bit=scale_16bit,
                    cache_size=_int_field("cache_size", cache_size, 0) or 3 * len(pairs))


def _normalise(name: str) -> str:
  return " ".join(re.split(r"[\s_\-]+", name.lower())).strip()


def _find_folder(root: Path, suffix: str, what: str) -> Path | None:
  """The one sub-folder of `root` whose name ends in `suffix` once case, '_', '-' and spaces
  are normalised ('... dataset - Train Labels', 'train_labels'); None when there is none."""
  try:
    hits = sorted(d for d in root.iterdir() if d.is_dir() and
                  (_normalise(d.name) == suffix or _normalise(d.name).endswith(" " + suffix)))
  except OSError as e:
    raise DataError(f"cannot list {root}: {e.strerror}") from None
  if len(hits) > 1:
    raise DataError(f"data_dir {root} has two OSCD {what}s: {hits[0].name!r} and {hits[1].name!r}")
  return hits[0] if hits else None


def _read_cities(path: Path) -> list[str]:
  """City names of an OSCD list file (comma-separated, as published; newlines also work)."""
  try:
    text = path.read_text()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"cannot read the OSCD city list {path}: {getattr(e, 'strerror', None) or e}"
                    ) from None
  cities = [c.strip() for c in re.split(r"[,\s]+", text) if c.strip()]
  if not cities:
    raise DataError(f"the OSCD city list {path} names no city")
  return cities


def _band_files(d: Path) -> tuple[Path, ...]:
  """The 13 band files of date folder `d` (`<anything>_B01.tif` or `B01.tif`), in `BANDS` order."""
  if not d.is_dir():
    raise DataError(f"missing OSCD date folder {d}")
  found: dict[str, Path] = {}
  for stem, p in io.list_images(d).items():
    m = _BAND_RX.fullmatch(stem)
    if m:
      band = m.group(1).upper()
      if band in found:
        raise DataError(f"two files for band {band} in {d}: {found[band].name} and {p.name}")
      found[band] = p
  missing = [b for b in BANDS if b not in found]
  if missing:
    raise DataError(f"OSCD date folder {d} has no band {', '.join(missing)} (*_{missing[0]}.tif)")
  return tuple(found[b] for b in BANDS)


def _ten_m_size(files: tuple[Path, ...]) -> tuple[int, int]:
  """(H, W) of the 10 m bands, which must agree."""
  ten = [files[BANDS.index(b)] for b in TEN_M]
  sizes = [io.image_size(f) for f in ten]
  for f, s in zip(ten[1:], sizes[1:]):
    if s != sizes[0]:
      raise DataError(f"10 m bands differ in size: {ten[0]} is {sizes[0][1]}x{sizes[0][0]}, {f} "
                      f"is {s[1]}x{s[0]} (WxH)")
  return sizes[0]
