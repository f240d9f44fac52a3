"""The `cdd` source: CDD (Lebedev et al.), data_dir/subset/{train,val,test}/{A,B,OUT}."""
from __future__ import annotations

from typing import Any

from jaxcd.data.registry import SPLITS, register_source
from jaxcd.data.pairs import PairListSource, _common, _empty_split, _require_dir, match_pairs
from jaxcd.errors import DataError

CDD_ORIGIN = "Lebedev et al., ISPRS Archives XLII-2, 2018"
CDD_LAYOUT = "data_dir/subset/{train,val,test}/{A,B,OUT} (OUT = label)"


@register_source("cdd")
def cdd(split: str, data_dir: str = "", **kwargs: Any) -> PairListSource:
  """CDD season-varying pairs (Lebedev et al. 2018); data_dir may also be the `subset` folder."""
  root = _require_dir(data_dir, "cdd", CDD_LAYOUT, CDD_ORIGIN)
  base = root / "subset" if (root / "subset").is_dir() else root
  if not any((base / s / "A").is_dir() for s in SPLITS):
    raise DataError(f"data_dir {root} is not a CDD folder: expected {CDD_LAYOUT}; the dataset "
                    f"must be obtained from its authors ({CDD_ORIGIN})")
  if not (base / split / "A").is_dir():
    raise _empty_split("cdd", split, base, f"{base / split / 'A'} does not exist")
  pairs = match_pairs(base / split, label_dir="OUT")
  if not pairs:
    raise _empty_split("cdd", split, base, f"no images in {base / split / 'A'}")
  return PairListSource(pairs, name="cdd", split=split, root=root,
                        layout="subset/<split>/{A,B,OUT}", **_common(kwargs))
