"""The `whu_cd` source: the large WHU-CD pair cut into tiles, or pre-cut tiles; a stored random
6:1:3 split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxcd.data.registry import SPLITS, register_source
from jaxcd.data import io
from jaxcd.data.pairs import (MMAP_MIN_PIXELS, Pair, PairListSource, _common, _empty_split,
                              _int_field, _require_dir, _writable, default_cache_dir, match_pairs,
                              read_list, tile_pairs)
from jaxcd.errors import ConfigError, DataError

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
  lives in `split_dir` if given, else in data_dir/list if data_dir is writable, else in
  $JAXCD_CACHE/whu_cd-<hash of data_dir> (JAXCD_CACHE defaults to ~/.cache/jaxcd): written there
  on first use, read back ever after (other ratios or seeds need another split_dir).
  A decoded image of >= mmap_min_pixels pixels (the whole scene) is stored once as .npy in
  <split_dir or that cache>/decoded and memory-mapped by every reader.
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
  list_dir, names = _stored_split(root, [t.id for t in tiles], split, split_dir, split_seed, ratios)
  if split not in names:
    raise _empty_split("whu_cd", split, root, f"no {list_dir}/{split}.txt")
  by_id = {t.id: t for t in tiles}
  chosen = []
  for i in names[split]:
    if i not in by_id:
      raise DataError(f"list file {list_dir / (split + '.txt')} names {i!r}, which is not a "
                      f"tile of {root} with tile_size {tile_size}")
    chosen.append(by_id[i])
  if not chosen:
    raise _empty_split("whu_cd", split, root, f"{list_dir}/{split}.txt lists nothing")
  return PairListSource(chosen, name="whu_cd", split=split, root=root,
                        layout=f"{layout}, {tile_size}x{tile_size} tiles, split in {list_dir}",
                        mmap_dir=mmap_dir,
                        mmap_min_pixels=_int_field("mmap_min_pixels", mmap_min_pixels, 0),
                        **_common(kwargs))


def _stored_split(root: Path, ids: list[str], split: str, split_dir: str, seed: int,
                  ratios: Sequence[float]) -> tuple[Path, dict[str, list[str]]]:
  """Reads the stored split, writing a seeded split by `ratios` first if there is none.

  Where: data_dir/list if it holds the split's file; else split_dir if given; else data_dir/list
  if data_dir is writable; else the default cache folder.
  """
  if (root / "list" / f"{split}.txt").is_file():
    target = root / "list"
  elif split_dir:
    target = Path(split_dir).expanduser()
  elif _writable(root):
    target = root / "list"
  else:
    target = default_cache_dir("whu_cd", root)
  if all((target / f"{s}.txt").is_file() for s in SPLITS) or target == root / "list" and (
      target / f"{split}.txt").is_file():
    return target, {s: read_list(target / f"{s}.txt") for s in SPLITS
                    if (target / f"{s}.txt").is_file()}
  present = [s for s in SPLITS if (target / f"{s}.txt").is_file()]
  if present:
    # Rewriting only the missing ones could move pairs between splits without anyone noticing.
    raise DataError(f"incomplete whu_cd split files in {target}: has {', '.join(present)} but not "
                    f"all of train, val, test; complete or delete them")
  order = np.random.default_rng(_int_field("split_seed", seed, 0)).permutation(len(ids))
  if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
    raise ConfigError(f"config.data.ratios: expected three non-negative numbers (train, val, "
                      f"test), got {tuple(ratios)}")
  fractions = np.asarray(ratios, np.float64) / sum(ratios)
  n_train = round(fractions[0] * len(ids))
  n_val = round(fractions[1] * len(ids))
  parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
           "test": order[n_train + n_val:]}
  names = {s: [ids[i] for i in sorted(idx)] for s, idx in parts.items()}
  try:
    for s in SPLITS:
      text = "".join(f"{i}\n" for i in names[s]).encode()
      io.atomic_write(target / f"{s}.txt", lambda f, text=text: f.write(text))
  except OSError as e:
    raise DataError(f"cannot write the whu_cd split files to {target}: {e.strerror}; "
                    f"set split_dir to a writable folder") from None
  return target, names
