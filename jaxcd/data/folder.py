"""The `folder` source: a user's own pairs, as date folders (A/B, prev/curr, t1/t2, ...) with an
optional label folder, or as a flat folder of `<name>_1, <name>_2, <name>_gt` files.
"""
from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any, Sequence

from jaxcd.data import io
from jaxcd.data.registry import SPLITS, register_source
from jaxcd.data.pairs import (Pair, PairListSource, _common, _empty_split, _require_dir,
                              match_pairs, select, stored_split)
from jaxcd.errors import ConfigError, DataError

# Detected names, compared case-insensitively (T1/T2, GT, OUT, Before/After match too).
DATE_DIRS = (("A", "B"), ("prev", "curr"), ("t1", "t2"), ("time1", "time2"), ("im1", "im2"),
             ("before", "after"))
LABEL_DIRS = ("label", "labels", "gt", "cm", "mask", "out")
# Flat layouts: A, B[, label] file-name templates (SAR benchmarks ship <name>_1/_2/_gt).
FLAT_PATTERNS = ("{name}_1,{name}_2,{name}_gt", "{name}_A,{name}_B,{name}_label")
FOLDER_RATIOS = (0.7, 0.1, 0.2)  # LEVIR-CD's train:val:test
FOLDER_LAYOUT = ("date folders {A,B}, {prev,curr}, {t1,t2}, {time1,time2}, {im1,im2} or "
                 "{before,after} with an optional label folder (label, labels, gt, cm, mask or "
                 "OUT), or flat <name>_1/<name>_2/<name>_gt (or _A/_B/_label) files; in "
                 "data_dir/<split>/ or data_dir/")


@register_source("folder")
def folder(split: str, data_dir: str = "", a_dir: str = "", b_dir: str = "", label_dir: str = "",
           pattern: str = "", split_dir: str = "", split_seed: int = 0,
           ratios: Sequence[float] = FOLDER_RATIOS, **kwargs: Any) -> PairListSource:
  """A user's own pairs, any band count and image format (GeoTIFF included).

  Pairs are found in data_dir/<split>/ if it holds any, else in data_dir/, as (first that
  matches): `pattern`; a_dir/b_dir (explicit; "" = detect); date folders DATE_DIRS (two pairs of
  them is an error); flat files FLAT_PATTERNS. The label folder is label_dir, or else the one of
  LABEL_DIRS present; without one the pairs are prediction only (labels all 255). A label folder
  that exists must hold a label for every A image.
  pattern: "A,B[,label]" file-name templates without extension, each with one `{name}` (the
    pair id), relative to the folder, e.g. "{name}_1,{name}_2,{name}_gt" or "x/{name},y/{name}".
  Splits of data_dir/ without split folders: list/<split>.txt when shipped, split "all" = every
  pair, else a seeded split (split_seed, train:val:test = ratios) stored as list files in
  split_dir or the cache (`pairs.stored_split`), never in data_dir.
  """
  root = _require_dir(data_dir, "folder", FOLDER_LAYOUT, None)
  if bool(a_dir) != bool(b_dir):
    raise ConfigError("config.data.a_dir, b_dir: give both date folders or neither (detect)")
  if pattern and (a_dir or label_dir):
    raise ConfigError("config.data.pattern: names the files itself; leave a_dir, b_dir and "
                      "label_dir empty")
  templates = _parse_pattern(pattern) if pattern else None

  def find(d: Path):
    return _find_pairs(d, a_dir, b_dir, label_dir, templates)

  found = find(root / split) if split not in ("", ".") and (root / split).is_dir() else None
  if found is not None:
    pairs, layout = found
    layout = f"<split>/{layout}"
  else:
    found = find(root)
    if found is None:
      if any((root / s).is_dir() for s in SPLITS):
        raise _empty_split("folder", split, root, f"no pairs in {root / split}")
      expected = f"{a_dir}/ and {b_dir}/" if a_dir else pattern or FOLDER_LAYOUT
      raise DataError(f"data_dir {root} holds no pairs; folder expects {expected}")
    pairs, layout = found
    if split != "all" and pairs:
      list_file, names = stored_split("folder", root, [p.id for p in pairs], split,
                                      split_dir=split_dir, seed=split_seed, ratios=ratios)
      by_stem = {p.a.stem: p.id for p in pairs}  # list files may name the A files
      pairs = select(pairs, [by_stem.get(n, n) for n in names], list_file, f"a pair in {root}")
      layout += (" + list/<split>.txt" if list_file.parent == root / "list" else
                 f", seeded split stored in {list_file.parent}")
  if not pairs:
    raise _empty_split("folder", split, root, f"no pairs ({layout})")
  if not any(p.label for p in pairs):
    layout += " (no labels: prediction only)"
  return PairListSource(pairs, name="folder", split=split, root=root, layout=layout,
                        **_common(kwargs))


def _find_pairs(d: Path, a_dir: str, b_dir: str, label_dir: str,
                templates: list[str] | None) -> tuple[list[Pair], str] | None:
  """(pairs, layout) of folder `d`, or None when it holds none of the layouts."""
  if templates is not None:
    pairs = _match_pattern(d, templates)
    return None if pairs is None else (pairs, f"files {','.join(templates)}")
  subdirs = _subdirs(d)
  if a_dir:
    if not (d / a_dir).is_dir():
      return None
    dates = (a_dir, b_dir)
  else:
    dates = _detect_dates(d, subdirs)
  if dates is None:
    if label_dir:
      return None  # a label folder goes with date folders
    hits = [(t, pairs) for t in FLAT_PATTERNS
            if (pairs := _match_pattern(d, t.split(","))) is not None]
    if len(hits) > 1:
      raise DataError(f"{d} holds pair files of two layouts, {hits[0][0]} and {hits[1][0]}; set "
                      f"pattern")
    return (hits[0][1], f"files {hits[0][0]}") if hits else None
  label = label_dir or _detect_one(d, subdirs, LABEL_DIRS, "label folders", "label_dir")
  pairs = match_pairs(d, *dates, label, label_optional=not label_dir)
  return pairs, f"{{{dates[0]},{dates[1]},{label or '(no labels)'}}}"


def _subdirs(d: Path) -> dict[str, list[str]]:
  """Sub-folder names of `d` by lower-cased name."""
  by_lower = collections.defaultdict(list)
  try:
    for e in sorted(d.iterdir()):
      if e.is_dir():
        by_lower[e.name.lower()].append(e.name)
  except OSError as e:
    raise DataError(f"cannot list {d}: {e.strerror}") from None
  return by_lower


def _detect_one(d: Path, subdirs: dict[str, list[str]], names: Sequence[str], what: str,
                option: str) -> str:
  """The one sub-folder of `d` named like one of `names` (any case), "" if none."""
  hits = [n for key in names for n in subdirs.get(key.lower(), [])]
  if len(hits) > 1:
    raise DataError(f"{d} has two {what}, {hits[0]}/ and {hits[1]}/; set {option}")
  return hits[0] if hits else ""


def _detect_dates(d: Path, subdirs: dict[str, list[str]]) -> tuple[str, str] | None:
  found = []
  for a, b in DATE_DIRS:
    da = _detect_one(d, subdirs, [a], "date folders", "a_dir and b_dir")
    db = _detect_one(d, subdirs, [b], "date folders", "a_dir and b_dir")
    if da and db:
      found.append((da, db))
    elif da or db:
      raise DataError(f"{d / (da or db)} has no partner date folder {b if da else a}/ beside it")
  if len(found) > 1:
    (a1, b1), (a2, b2) = found[:2]
    raise DataError(f"{d} has two pairs of date folders, {a1}/{b1} and {a2}/{b2}; set a_dir and "
                    f"b_dir")
  return found[0] if found else None


def _parse_pattern(pattern: str) -> list[str]:
  templates = [t.strip() for t in pattern.split(",")]
  if len(templates) not in (2, 3) or any(t.rpartition("/")[2].count("{name}") != 1 or
                                         t.count("{name}") != 1 for t in templates):
    raise ConfigError(f"config.data.pattern: expected 'A,B[,label]' file-name templates, each with "
                      f"one {{name}} in the file name, e.g. '{{name}}_1,{{name}}_2,{{name}}_gt'; "
                      f"got {pattern!r}")
  return templates


def _match_pattern(d: Path, templates: Sequence[str]) -> list[Pair] | None:
  """Pairs of the files named by A, B[, label] `templates` under `d` (extension and case free),
  or None when no name has both an A and a B file."""
  found: list[dict[str, Path]] = []
  for t in templates:
    sub, _, stem = t.rpartition("/")
    where = d / sub if sub else d
    prefix, _, suffix = stem.partition("{name}")
    rx = re.compile(re.escape(prefix) + "(.+)" + re.escape(suffix), re.IGNORECASE)
    files: dict[str, Path] = {}
    for s, p in (io.list_images(where) if where.is_dir() else {}).items():
      m = rx.fullmatch(s)
      if m:
        if m.group(1) in files:
          raise DataError(f"two files for pair {m.group(1)!r} in {where}: {files[m.group(1)].name} "
                          f"and {p.name}")
        files[m.group(1)] = p
    found.append(files)
  a, b = found[0], found[1]
  labels = found[2] if len(found) > 2 else {}
  if not set(a) & set(b):
    return None
  orphans = sorted(set(b) - set(a)) + sorted(set(labels) - set(a))
  if orphans:
    name = orphans[0]
    raise DataError(f"{b.get(name) or labels[name]} has no A image: no "
                    f"{templates[0].replace('{name}', name)}.* in {d}")
  pairs = []
  for name in sorted(a):
    if name not in b:
      raise DataError(f"missing B image for {a[name]}: no {templates[1].replace('{name}', name)}.* "
                      f"in {d}")
    if labels and name not in labels:
      raise DataError(f"missing label for {a[name]}: no {templates[2].replace('{name}', name)}.* "
                      f"in {d}")
    pairs.append(Pair(name, a[name], b[name], labels.get(name)))
  return pairs
