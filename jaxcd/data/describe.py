"""Describes a dataset as jaxcd reads it, and checks every pair on the way.

  python -m jaxcd.data.describe --dataset sztaki --data_dir ../shared/data/SZTAKI_AirChange
  python -m jaxcd.data.describe --dataset levir_cd --data_dir DIR --set tile_size=512 [--quick]

Decodes every pair of each split (A, B and label, with a progress bar on stderr; `--quick`: the
first pair only) as training would, so size mismatches, truncated or empty files and bad labels
anywhere are found now, not mid-run. Prints a line per split and a `problem:` line per bad pair
(the file named). The last line of stdout is one JSON object:
  {"dataset", "data_dir", "layout", "train": n, "val": n, "test": n,
   "changed_fraction": changed / labelled (not 255) pixels over the pairs read, null when
     nothing is labelled,
   "changed_fraction_by_split": {"train": f, ...}, "image_size": {"train": [H, W] of the first
   pair, ...}, "image_sizes": {"train": [[H, W], ...] every distinct size, ...},
   "bands": {"train": C, ...}, "checked": {"train": pairs decoded, ...}, "problems": [...]}
A dataset that cannot be read, or any problem, ends with one `error:` line on stderr and exit
status 2. `--set KEY=VALUE` takes the source's declared options only, typed as declared.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from jaxcd.errors import ConfigError, DataError, JaxcdError, one_line


def parse_sets(items: Sequence[str], source: str) -> dict[str, Any]:
  """['tile_size=512', 'label_encoding=1_2'] -> {'tile_size': 512, 'label_encoding': '1_2'}:
  each value typed as the option's declared default."""
  from jaxcd.data import source_options
  from jaxcd.data.registry import parse_option, unknown_option
  declared = source_options(source)
  out = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep or not key:
      raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    if key not in declared:
      raise unknown_option(source, key, declared, f"--set {key}")
    out[key] = parse_option(f"--set {key}", text, declared[key])
  return out


def check_split(source: Any, desc: str = "", progress: bool = True, quick: bool = False):
  """Decodes the split's pairs (the first only if `quick`); returns (stats, problems), problems
  being one-line messages naming the file."""
  n = min(len(source), 1) if quick else len(source)
  changed = labelled = 0
  sizes: list[list[int]] = []
  bands: set[int] = set()
  problems: list[str] = []
  for i in tqdm(range(n), desc=desc, unit="pair", disable=not progress, leave=False):
    try:
      record = source[i]
    except DataError as e:
      problems.append(one_line(e))
      continue
    size = list(record["image_a"].shape[:2])
    if size not in sizes:
      sizes.append(size)
    bands.add(int(record["image_a"].shape[-1]))
    label_HxW = record["label"]
    changed += int(np.count_nonzero(label_HxW == 1))
    labelled += int(np.count_nonzero(label_HxW != 255))
  return {"changed": changed, "labelled": labelled, "sizes": sizes, "bands": sorted(bands),
          "checked": n}, problems


def describe(dataset: str, data_dir: str, splits: Sequence[str] = ("train", "val", "test"),
             progress: bool = True, quick: bool = False, **options: Any) -> dict[str, Any]:
  """Builds each split's source, checks its pairs and summarises it (a line per split)."""
  from jaxcd.data import make_source

  summary: dict[str, Any] = {"dataset": dataset, "data_dir": data_dir}
  by_split, first_size, sizes, bands, checked, layouts, problems = {}, {}, {}, {}, {}, [], []
  total_changed = total_labelled = 0
  for split in splits:
    src = make_source(dataset, split, data_dir=data_dir, where="--set", **options)
    layout = getattr(src, "layout", type(src).__name__)
    if layout not in layouts:
      layouts.append(layout)
    if len(src) == 0:
      raise DataError(f"split {split!r} of {dataset} at {data_dir or '(no data_dir)'} is empty")
    stats, bad = check_split(src, desc=f"{dataset} {split}", progress=progress, quick=quick)
    for msg in bad:
      print(f"problem: {split}: {msg}", flush=True)
    problems += [f"{split}: {m}" for m in bad]
    total_changed += stats["changed"]
    total_labelled += stats["labelled"]
    frac = stats["changed"] / stats["labelled"] if stats["labelled"] else None
    summary[split] = len(src)
    by_split[split], sizes[split], checked[split] = frac, stats["sizes"], stats["checked"]
    first_size[split] = stats["sizes"][0] if stats["sizes"] else None
    bands[split] = stats["bands"][0] if len(stats["bands"]) == 1 else stats["bands"]
    frac_text = f"{frac:.4f}" if frac is not None else "n/a (no labels)"
    size_text = ", ".join(f"{h}x{w}" for h, w in stats["sizes"][:4]) or "-"
    if len(stats["sizes"]) > 4:
      size_text += f", ... ({len(stats['sizes'])} sizes)"
    what = "first pair checked" if quick else f"{stats['checked'] - len(bad)} pairs read"
    print(f"{split:>5}: {len(src)} pairs ({what}), {size_text} (HxW), {bands[split]} bands, "
          f"changed-pixel fraction {frac_text}, {len(bad)} problems", flush=True)
  summary["layout"] = "; ".join(layouts)
  summary["changed_fraction"] = total_changed / total_labelled if total_labelled else None
  summary["changed_fraction_by_split"] = by_split
  summary["image_size"] = first_size
  summary["image_sizes"] = sizes
  summary["bands"] = bands
  summary["checked"] = checked
  summary["problems"] = problems
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      description="Describe and check a change-detection dataset as jaxcd reads it.")
  parser.add_argument("--dataset", required=True, help="a registered source, e.g. sztaki, levir_cd")
  parser.add_argument("--data_dir", default="", help="the dataset folder")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a source option, e.g. --set tile_size=512 (repeatable)")
  parser.add_argument("--splits", default="train,val,test", help="comma-separated split names")
  parser.add_argument("--quick", action="store_true", help="decode only each split's first pair")
  parser.add_argument("--no_progress", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  try:
    options = parse_sets(args.set, args.dataset)
    print(f"dataset {args.dataset} at {args.data_dir or '(no data_dir)'}", flush=True)
    summary = describe(args.dataset, args.data_dir, [s for s in args.splits.split(",") if s],
                       progress=not args.no_progress, quick=args.quick, **options)
  except JaxcdError as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    return 2
  print(f"layout: {summary['layout']}")
  print(json.dumps(summary))
  if summary["problems"]:
    first, more = summary["problems"][0], len(summary["problems"]) - 1
    print(f"error: {first}" + (f" (and {more} more problems above)" if more else ""),
          file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
