"""The `folder` source: a user's own pairs, data_dir/{A,B,label} or data_dir/<split>/{A,B,label},
optional list/<split>.txt.
"""
from __future__ import annotations

from typing import Any

from jaxcd.data.registry import register_source
from jaxcd.data.pairs import (PairListSource, _common, _empty_split, _require_dir, match_pairs,
                              read_list)
from jaxcd.errors import DataError

FOLDER_LAYOUT = ("data_dir/{A,B,label}/<name>.<ext> (optional list/<split>.txt) or "
                 "data_dir/<split>/{A,B,label}")


@register_source("folder")
def folder(split: str, data_dir: str = "", a_dir: str = "A", b_dir: str = "B",
           label_dir: str = "label", **kwargs: Any) -> PairListSource:
  """A user's own pairs, any band count and image format (GeoTIFF with the `geo` extra).

  Layouts, first match wins: data_dir/<split>/{A,B,label}; data_dir/{A,B,label} with
  list/<split>.txt naming the split's files; split="all" reads every pair in data_dir/{A,B,label}.
  The label folder may be absent altogether (prediction only): labels are then all 255 (ignore).
  A label folder that exists must hold a label for every A image.
  """
  root = _require_dir(data_dir, "folder", FOLDER_LAYOUT, None)
  opts = dict(a_dir=a_dir, b_dir=b_dir, label_dir=label_dir, label_optional=True)
  if (root / split / a_dir).is_dir():
    pairs = match_pairs(root / split, **opts)
    layout = f"<split>/{{{a_dir},{b_dir},{label_dir}}}"
  elif (root / a_dir).is_dir():
    list_file = root / "list" / f"{split}.txt"
    if list_file.is_file():
      pairs = match_pairs(root, names=read_list(list_file), list_file=list_file, **opts)
      layout = f"{{{a_dir},{b_dir},{label_dir}}} + list/<split>.txt"
    elif split == "all":
      pairs = match_pairs(root, **opts)
      layout = f"{{{a_dir},{b_dir},{label_dir}}}"
    else:
      raise _empty_split("folder", split, root, f"no {root / split / a_dir} and no {list_file}; "
                         f"add one, or use split 'all'")
  else:
    raise DataError(f"data_dir {root} has no {a_dir}/ folder; folder expects {FOLDER_LAYOUT}")
  if not pairs:
    raise _empty_split("folder", split, root, f"no images in {a_dir}/")
  if not any(p.label for p in pairs):
    layout += " (no labels: prediction only)"
  return PairListSource(pairs, name="folder", split=split, root=root, layout=layout,
                        **_common(kwargs))
