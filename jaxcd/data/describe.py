"""Describes a dataset as jaxcd reads it: layout, pairs per split, image size, bands, change.

  python -m jaxcd.data.describe --dataset sztaki --data_dir ../shared/data/SZTAKI_AirChange
  python -m jaxcd.data.describe --dataset levir_cd --data_dir DIR --set tile_size=512

Reads every label (a progress bar on stderr) and the first pair's images of each split. The last
line of stdout is one JSON object:
  {"dataset", "data_dir", "layout", "train": n, "val": n, "test": n,
   "changed_fraction": overall float, changed / labelled (not 255) pixels over all splits,
     null when nothing is labelled,
   "changed_fraction_by_split": {"train": f, ...}, "image_size": {"train": [H, W], ...},
   "bands": {"train": C, ...}}
A bad dataset prints `error: <one line>` on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from jaxcd.errors import ConfigError, DataError, JaxcdError, one_line


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
  """['tile_size=512', 'split_dir=/tmp/x'] -> {'tile_size': 512, 'split_dir': '/tmp/x'}."""
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value  # a bare string such as a path
  return out


def label_stats(source: Any, desc: str = "", progress: bool = True) -> tuple[int, int]:
  """(changed pixels, labelled pixels) over all labels of `source`."""
  changed = labelled = 0
  read = getattr(source, "label", None) or (lambda i: source[i]["label"])
  for i in tqdm(range(len(source)), desc=desc, unit="pair", disable=not progress, leave=False):
    label_HxW = read(i)
    changed += int(np.count_nonzero(label_HxW == 1))
    labelled += int(np.count_nonzero(label_HxW != 255))
  return changed, labelled


def describe(dataset: str, data_dir: str, splits: Sequence[str] = ("train", "val", "test"),
             progress: bool = True, **options: Any) -> dict[str, Any]:
  """Builds each split's source and summarises it; prints a human-readable line per split."""
  from jaxcd.data import make_source

  summary: dict[str, Any] = {"dataset": dataset, "data_dir": data_dir}
  by_split, sizes, bands, layouts = {}, {}, {}, []
  total_changed = total_labelled = 0
  for split in splits:
    src = make_source(dataset, split, data_dir=data_dir, **options)
    layout = getattr(src, "layout", type(src).__name__)
    if layout not in layouts:
      layouts.append(layout)
    if len(src) == 0:
      raise DataError(f"split {split!r} of {dataset} at {data_dir or '(no data_dir)'} is empty")
    first = src[0]
    sizes[split] = list(first["image_a"].shape[:2])
    bands[split] = int(first["image_a"].shape[-1])
    changed, labelled = label_stats(src, desc=f"{dataset} {split} labels", progress=progress)
    total_changed += changed
    total_labelled += labelled
    frac = changed / labelled if labelled else None
    summary[split] = len(src)
    by_split[split] = frac
    frac_text = f"{frac:.4f}" if frac is not None else "n/a (no labels)"
    print(f"{split:>5}: {len(src)} pairs, first pair {sizes[split][0]}x{sizes[split][1]} (HxW), "
          f"{bands[split]} bands, changed-pixel fraction {frac_text}", flush=True)
  summary["layout"] = "; ".join(layouts)
  summary["changed_fraction"] = total_changed / total_labelled if total_labelled else None
  summary["changed_fraction_by_split"] = by_split
  summary["image_size"] = sizes
  summary["bands"] = bands
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      description="Describe a change-detection dataset as jaxcd reads it.")
  parser.add_argument("--dataset", required=True, help="a registered source, e.g. sztaki, levir_cd")
  parser.add_argument("--data_dir", default="", help="the dataset folder")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a source option, e.g. --set tile_size=512 (repeatable)")
  parser.add_argument("--splits", default="train,val,test", help="comma-separated split names")
  parser.add_argument("--no_progress", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  try:
    options = parse_sets(args.set)
    print(f"dataset {args.dataset} at {args.data_dir or '(no data_dir)'}", flush=True)
    summary = describe(args.dataset, args.data_dir, [s for s in args.splits.split(",") if s],
                       progress=not args.no_progress, **options)
  except JaxcdError as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    return 2
  print(f"layout: {summary['layout']}")
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main())
