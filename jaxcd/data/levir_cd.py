"""The `levir_cd` source: LEVIR-CD 1024x1024 originals (data_dir/{train,val,test}/{A,B,label}) cut
lazily into non-overlapping tiles, or the pre-tiled LEVIR-CD256/BIT layout data_dir/{A,B,label}
with list/<split>.txt (or `<split>_` file-name prefixes, or else a stored seeded split).
"""
from __future__ import annotations

from typing import Any, Sequence

from jaxcd.data.registry import SPLITS, register_source
from jaxcd.data import io
from jaxcd.data.pairs import (PairListSource, _common, _empty_split, _require_dir, match_pairs,
                              read_list, select, stored_split, tile_pairs)
from jaxcd.errors import DataError

LEVIR_ORIGIN = "https://justchenhao.github.io/LEVIR/"
LEVIR_LAYOUT = ("data_dir/{train,val,test}/{A,B,label} (1024x1024 originals) or "
                "data_dir/{A,B,label} + list/<split>.txt (LEVIR-CD256/BIT)")


LEVIR_RATIOS = (0.7, 0.1, 0.2)  # the published 445/64/128 images


@register_source("levir_cd")
def levir_cd(split: str, data_dir: str = "", tile_size: int = 256, split_dir: str = "",
             split_seed: int = 0, ratios: Sequence[float] = LEVIR_RATIOS,
             **kwargs: Any) -> PairListSource:
  """LEVIR-CD, either layout (auto-detected); tiles are cut on access, not on disk.

  The originals give 16 tiles per image: 7120/1024/2048 train/val/test tiles with tile_size 256.
  Pre-tiled layout: list/<split>.txt (one file name per line, BIT convention; any split name,
  e.g. 'demo'), else the files whose names start with '<split>_' (split "all": every file), else
  (no file has a split prefix) split "all" = every pair, or a seeded split of the images
  (split_seed, train:val:test = ratios, before tiling) stored as list files in split_dir or the
  cache (`pairs.stored_split`), never in data_dir.
  """
  root = _require_dir(data_dir, "levir_cd", LEVIR_LAYOUT, LEVIR_ORIGIN)
  if any((root / s / "A").is_dir() for s in SPLITS):
    if not (root / split / "A").is_dir():
      raise _empty_split("levir_cd", split, root, f"{root / split / 'A'} does not exist")
    pairs = match_pairs(root / split)
    layout = "original <split>/{A,B,label}"
    if not pairs:
      raise _empty_split("levir_cd", split, root, f"no images in {root / split / 'A'}")
  elif (root / "A").is_dir():
    list_file = root / "list" / f"{split}.txt"
    if list_file.is_file():
      pairs = match_pairs(root, names=read_list(list_file), list_file=list_file)
      layout = "pre-tiled {A,B,label} + list/<split>.txt"
      if not pairs:
        raise _empty_split("levir_cd", split, root, f"{list_file} lists no files")
    else:
      all_stems = list(io.list_images(root / "A"))
      if any(s.startswith(f"{p}_") for s in all_stems for p in SPLITS):
        stems = [s for s in all_stems if split == "all" or s.startswith(f"{split}_")]
        if not stems:
          raise _empty_split("levir_cd", split, root,
                             f"no {list_file} and no {root / 'A'}/{split}_* images")
        pairs = match_pairs(root, names=stems)
        layout = "pre-tiled {A,B,label}, split by the file-name prefix '<split>_'"
      else:
        pairs = match_pairs(root)
        layout = "pre-tiled {A,B,label}, all pairs"
        if split != "all" and pairs:
          list_file, names = stored_split("levir_cd", root, [p.id for p in pairs], split,
                                          split_dir=split_dir, seed=split_seed, ratios=ratios)
          pairs = select(pairs, names, list_file, f"an image in {root / 'A'}")
          layout = f"pre-tiled {{A,B,label}}, seeded split stored in {list_file.parent}"
        if not pairs:
          raise _empty_split("levir_cd", split, root, layout)
  else:
    raise DataError(f"data_dir {root} is not a LEVIR-CD folder: expected {LEVIR_LAYOUT}; the "
                    f"dataset must be obtained from its authors ({LEVIR_ORIGIN})")
  tiles = tile_pairs(pairs, tile_size)
  return PairListSource(tiles, name="levir_cd", split=split, root=root,
                        layout=f"{layout}, {tile_size}x{tile_size} tiles", **_common(kwargs))
