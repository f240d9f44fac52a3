"""The `whu_cd` source: the large WHU-CD pair cut into tiles, or pre-cut tiles; a stored random
6:1:3 split (in split_dir or the cache, never in the dataset folder).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from jaxcd.data.registry import register_source
from jaxcd.data import io
from jaxcd.data.pairs import (MMAP_MIN_PIXELS, Pair, PairListSource, _common, _empty_split,
                              _int_field, _require_dir, default_cache_dir, match_pairs, select,
                              stored_split, tile_pairs)
from jaxcd.errors import DataError

WHU_ORIGIN = "http://gpcv.whu.edu.cn/data/building_dataset.html"
WHU_LAYOUT = ("data_dir/{A,B,label} holding the large pair (one image each) or pre-cut tiles, "
              "optional list/{train,val,test}.txt")
WHU_RATIOS = (0.6, 0.1, 0.3)


@register_source("whu_cd")
def whu_cd(split: str, data_dir: str = "", tile_size: int = 256, split_dir: str = "",
           split_seed: int = 0, image_a: str = "", image_b: str = "", label_file: str = "",
           ratios: Sequence[float] = WHU_RATIOS, mmap_min_pixels: int = MMAP_MIN_PIXELS,
           **kwargs: Any) -> PairListSource:
  """WHU-CD: the large 2012/2016 pair tiled, or pre-cut tiles, with a stored 6:1:3 split.

  The pair: image_a/image_b/label_file (paths, relative to data_dir or absolute), else the only
  image in each of A/, B/, label/ (names may differ), else pairs matched by name (pre-cut tiles).
  The split is random (seed `split_seed`, train:val:test = `ratios`, default 6:1:3) over tile
  ids and STORED as list files (one id per line) so it never silently changes. Files found in
  data_dir/list are used as they are (e.g. the lists shipped with WHU-CD256). Otherwise the split
  lives in `split_dir` if given (its files win over seed and ratios), else in
  $JAXCD_CACHE/whu_cd-<hash of data_dir>/split-seed<s>-ratios<r>-tile<t> (JAXCD_CACHE defaults
  to ~/.cache/jaxcd): written there on first use, read back ever after (`pairs.stored_split`).
  A decoded image of >= mmap_min_pixels pixels (the whole scene) is stored once as .npy in
  <split_dir or $JAXCD_CACHE/whu_cd-<hash>>/decoded and memory-mapped by every reader.
  """
  root = _require_dir(data_dir, "whu_cd", WHU_LAYOUT, WHU_ORIGIN)
  if image_a or image_b or label_file:
    files = [root / f if f else None for f in (image_a, image_b, label_file)]
    if None in files:
      raise DataError("whu_cd: give all of image_a, image_b and label_file, or none of them")
    for f in files:
      if not f.is_file():
        raise DataError(f"whu_cd: file not found: {f}")
    pairs = [Pair(files[0].stem, *files)]
    layout = "large pair (given files)"
  else:
    for d in ("A", "B", "label"):
      if not (root / d).is_dir():
        raise DataError(f"data_dir {root} has no {d}/ folder; whu_cd expects {WHU_LAYOUT}; the "
                        f"dataset must be obtained from its authors ({WHU_ORIGIN})")
    found = [io.list_images(root / d) for d in ("A", "B", "label")]
    if all(len(f) == 1 for f in found) and len({next(iter(f)) for f in found}) > 1:
      (sa, pa), (_, pb), (_, pl) = (next(iter(f.items())) for f in found)
      pairs = [Pair(sa, pa, pb, pl)]
      layout = "large pair"
    else:
      pairs = match_pairs(root)
      layout = "large pair" if len(pairs) == 1 else "pre-cut tiles"
  if not pairs:
    raise _empty_split("whu_cd", split, root, f"no images in {root / 'A'}")
  tiles = tile_pairs(pairs, tile_size)
  mmap_dir = None
  if any(t.window is not None for t in tiles):
    cache = Path(split_dir).expanduser() if split_dir else default_cache_dir("whu_cd", root)
    mmap_dir = cache / "decoded"
  list_file, names = stored_split("whu_cd", root, [t.id for t in tiles], split,
                                  split_dir=split_dir, seed=split_seed, ratios=ratios,
                                  key=f"-tile{tile_size}")
  chosen = select(tiles, names, list_file, f"a tile of {root} with tile_size {tile_size}")
  if not chosen:
    raise _empty_split("whu_cd", split, root, f"{list_file} lists nothing")
  layout = f"{layout}, {tile_size}x{tile_size} tiles, split in {list_file.parent}"
  return PairListSource(chosen, name="whu_cd", split=split, root=root, layout=layout,
                        mmap_dir=mmap_dir,
                        mmap_min_pixels=_int_field("mmap_min_pixels", mmap_min_pixels, 0),
                        **_common(kwargs))

