"""The `sztaki` source: SZTAKI AirChange with the RCL protocol: 12 overlapping tiles per pair, tiles
without change dropped, a seeded 98/12/12 split.
"""
from __future__ import annotations

import os
from pathlib import Path
import numpy as np

from jaxcd.data.registry import register_source
from jaxcd.data import io
from jaxcd.data.pairs import Pair, PairListSource, _empty_split, _int_field, _require_dir
from jaxcd.errors import DataError

SZTAKI_ORIGIN = "http://web.eee.sztaki.hu/remotesensing/airchange_benchmark.html"
SZTAKI_LAYOUT = "data_dir/{Szada/1..7,Tiszadob/1..5,Archieve}/{im1,im2,gt}.bmp"
SZTAKI_GRID = (3, 4)  # tile rows x columns per pair (RCL protocol)
SZTAKI_VAL_TEST = 12  # val and test tiles; train gets the rest (98 of 122)


def sztaki_pairs(root: Path) -> list[Pair]:
  """The 13 pairs (fewer if folders are missing), in a fixed order; ids like 'Szada_1'."""
  dirs = []
  for region in ("Szada", "Tiszadob"):
    if (root / region).is_dir():
      subs = [d for d in (root / region).iterdir() if d.is_dir()]
      dirs += sorted(subs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit()
                                          else 0, d.name))
  if (root / "Archieve").is_dir():
    dirs.append(root / "Archieve")
  pairs = []
  for d in dirs:
    files = []
    for stem in ("im1", "im2", "gt"):
      f = io.find_image(d, stem)
      if f is None:
        raise DataError(f"missing {d}/{stem}.bmp (SZTAKI pair folder {d})")
      files.append(f)
    pairs.append(Pair(str(d.relative_to(root)).replace(os.sep, "_"), *files))
  return pairs


def grid_offsets(size: int, tile: int, n: int) -> list[int]:
  """n tile offsets evenly spaced from 0 to size - tile (overlapping when needed)."""
  if size < tile:
    raise DataError(f"image side {size} is smaller than tile_size {tile}")
  return [int(round(v)) for v in np.linspace(0, size - tile, n)]


@register_source("sztaki")
def sztaki(split: str, data_dir: str = "", split_seed: int = 0, tile_size: int = 256,
           num_bands: int = 0, label_encoding: str = "auto", scale_16bit: str = "minmax",
           cache_size: int = 0) -> PairListSource:
  """SZTAKI AirChange, RCL protocol: 3x4 overlapping tiles per pair, unchanged tiles dropped,
  then a seeded split: 12 val, 12 test, the rest (98 of 122) train.

  Building it reads the 13 masks (a few MB); images are read on access. cache_size: decoded
  files kept per process; 0 = every file (the decoded benchmark is ~70 MB, so shuffled reads
  never decode twice).
  """
  root = _require_dir(data_dir, "sztaki", SZTAKI_LAYOUT, SZTAKI_ORIGIN)
  pairs = sztaki_pairs(root)
  if not pairs:
    raise DataError(f"data_dir {root} holds no SZTAKI pair folders: expected {SZTAKI_LAYOUT}; the "
                    f"dataset must be obtained from its authors ({SZTAKI_ORIGIN})")
  t = _int_field("tile_size", tile_size, 1)
  tiles = []
  for p in pairs:
    gt = io.read_label(p.label, label_encoding)
    h, w = gt.shape
    for r in grid_offsets(h, t, SZTAKI_GRID[0]):
      for c in grid_offsets(w, t, SZTAKI_GRID[1]):
        if (gt[r:r + t, c:c + t] == 1).any():
          tiles.append(Pair(f"{p.id}_{r:04d}_{c:04d}", p.a, p.b, p.label, (r, c, t, t)))
  if len(tiles) <= 2 * SZTAKI_VAL_TEST:
    raise DataError(f"SZTAKI at {root} gives only {len(tiles)} tiles with change; the protocol "
                    f"needs more than {2 * SZTAKI_VAL_TEST}")
  order = np.random.default_rng(_int_field("split_seed", split_seed, 0)).permutation(len(tiles))
  n = SZTAKI_VAL_TEST
  parts = {"val": order[:n], "test": order[n:2 * n], "train": order[2 * n:]}
  if split not in parts:
    raise _empty_split("sztaki", split, root, "the RCL protocol has train, val and test")
  chosen = [tiles[i] for i in sorted(parts[split])]
  return PairListSource(chosen, name="sztaki", split=split, root=root,
                        layout=f"RCL protocol: {len(pairs)} pairs, {len(tiles)} tiles with change "
                               f"of {len(pairs) * SZTAKI_GRID[0] * SZTAKI_GRID[1]}",
                        num_bands=num_bands, label_encoding=label_encoding,
                        scale_16bit=scale_16bit,
                        cache_size=_int_field("cache_size", cache_size, 0) or 3 * len(pairs))
