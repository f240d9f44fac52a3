"""Shared machinery of the on-disk sources: `Pair`, `PairListSource`, pair matching, tiling,
list files, seeded and stored splits, config-field checks and the per-dataset cache folder.

Nothing is ever written into a dataset folder (it may be read-only, or shared): stored splits
and decoded caches go to an explicit `split_dir` or to `default_cache_dir`.

Sources list files when built and read pixels only in `__getitem__`; tiles of large images share
a small per-process cache of decoded images. They pickle without their cache (grain workers).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from absl import logging

from jaxcd.data import io
from jaxcd.data.registry import COMMON_OPTIONS, SPLITS
from jaxcd.errors import ConfigError, DataError

# Decoded images above this many pixels (the whole WHU-CD scene) are kept as .npy files and
# memory-mapped, so each grain worker does not hold gigabytes of pixels.
MMAP_MIN_PIXELS = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class Pair:
  """One record's files; `window` = (row, col, height, width) crops a tile out of them."""
  id: str
  a: Path
  b: Path
  label: Path | None
  window: tuple[int, int, int, int] | None = None


class PairListSource:
  """Random-access source over a fixed list of pairs or tiles of pairs.

  `src[i]` -> {'image_a', 'image_b', 'label', 'id'}; `src.label(i)` reads only the label.
  A pair without a label file (prediction-only data) gets an all-255 (ignore) label.
  """

  def __init__(self, pairs: Sequence[Pair], *, name: str, split: str, layout: str, root: Path,
               num_bands: int | None = None, label_encoding: str = "auto",
               scale_16bit: str = "minmax", cache_size: int = 6,
               mmap_dir: Path | None = None, mmap_min_pixels: int = MMAP_MIN_PIXELS):
    self.pairs = list(pairs)
    self.name = name
    self.split = split
    self.layout = layout
    self.root = Path(root)  # the dataset folder, for messages
    self.num_bands = _int_field("num_bands", num_bands or 0, 0) or None  # None: any count
    self.label_encoding = _choice_field("label_encoding", label_encoding, io.LABEL_ENCODINGS)
    self.scale_16bit = _choice_field("scale_16bit", scale_16bit, ("minmax", "shift"))
    self.cache_size = _int_field("cache_size", cache_size, 0)
    self.mmap_dir = Path(mmap_dir) if mmap_dir else None
    self.mmap_min_pixels = mmap_min_pixels
    self._init_cache()

  @property
  def ids(self) -> list[str]:
    return [p.id for p in self.pairs]

  @property
  def has_labels(self) -> bool:
    return all(p.label is not None for p in self.pairs)

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, index: int) -> dict[str, Any]:
    p = self.pairs[index]  # IndexError ends plain iteration
    a = self._load(p.a, "image")
    b = self._load(p.b, "image")
    lab = self._load(p.label, "label") if p.label is not None else None
    io.check_pair(a, b, lab, (p.a, p.b, p.label), self.num_bands)
    a_HxWxC, b_HxWxC = _crop(a, p.window), _crop(b, p.window)
    if lab is None:
      label_HxW = np.full(a_HxWxC.shape[:2], io.IGNORE, np.uint8)
    else:
      label_HxW = _crop(lab, p.window)
    return {"image_a": a_HxWxC, "image_b": b_HxWxC, "label": label_HxW, "id": p.id}

  def label(self, index: int) -> np.ndarray:
    """The label of record `index` (uint8 HxW), without decoding the images."""
    p = self.pairs[index]
    if p.label is None:
      h, w = (p.window[2:] if p.window else io.image_size(p.a))
      return np.full((h, w), io.IGNORE, np.uint8)
    return _crop(self._load(p.label, "label"), p.window)

  def __repr__(self) -> str:
    return (f"{type(self).__name__}({self.name}, split={self.split!r}, {len(self)} pairs, "
            f"{self.layout})")

  # Decoded whole files, most recent last; tiles of one file hit it.
  def _init_cache(self):
    self._cache: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()  # grain may read from several threads

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_cache"], state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_cache()

  def _load(self, path: Path, kind: str) -> np.ndarray:
    key = (kind, path)
    with self._lock:
      if key in self._cache:
        self._cache.move_to_end(key)
        return self._cache[key]
    x = self._decode(path, kind)
    with self._lock:
      self._cache[key] = x
      while len(self._cache) > self.cache_size:
        self._cache.popitem(last=False)
    return x

  def _decode(self, path: Path, kind: str) -> np.ndarray:
    def read():
      if kind == "label":
        return io.read_label(path, self.label_encoding)
      return io.read_image(path, self.scale_16bit)
    if self.mmap_dir is None:
      return read()
    h, w = io.image_size(path)
    if h * w < self.mmap_min_pixels:
      return read()
    st = path.stat()
    tag = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{kind}|"
                       f"{self.label_encoding}|{self.scale_16bit}".encode()).hexdigest()[:16]
    npy = self.mmap_dir / f"{path.stem}-{kind}-{tag}.npy"
    if not npy.exists():
      io.atomic_write(npy, lambda f: np.save(f, read()))
    return np.load(npy, mmap_mode="r")


def _crop(x: np.ndarray, window) -> np.ndarray:
  if window is None:
    return np.array(x)  # a copy: callers may write into records, never into the cache
  r, c, h, w = window
  return np.array(x[r:r + h, c:c + w])


# --- shared helpers -----------------------------------------------------------------------------

def _require_dir(data_dir: str | os.PathLike, dataset: str, expected: str,
                 origin: str | None) -> Path:
  if not str(data_dir):
    raise DataError(f"config.data.data_dir is empty; {dataset} expects {expected}")
  path = Path(data_dir).expanduser()
  if path.exists() and not path.is_dir():
    raise DataError(f"data_dir {path} is a file, not a folder; {dataset} expects {expected}")
  if not path.is_dir():
    where = f"; the dataset must be obtained from its authors ({origin})" if origin else ""
    raise DataError(f"data_dir {path} does not exist; {dataset} expects {expected}{where}")
  return path


def _empty_split(dataset: str, split: str, where: Path, why: str) -> DataError:
  return DataError(f"split {split!r} of {dataset} at {where} is empty ({why})")


def read_list(path: Path) -> list[str]:
  """Stems named by a list file: one file name (or stem, or relative path) per line."""
  try:
    lines = path.read_text().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"cannot read list file {path}: {e}") from None
  stems = []
  for line in lines:
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    name = Path(line).name
    stems.append(Path(name).stem if io.is_image(name) else name)
  return stems


def match_pairs(root: Path, a_dir: str = "A", b_dir: str = "B", label_dir: str | None = "label",
                names: Sequence[str] | None = None, list_file: Path | None = None,
                label_optional: bool = False) -> list[Pair]:
  """Pairs A/<stem>.*, B/<stem>.*, label/<stem>.* (extensions in any case, may differ).

  names: only these stems (from `list_file`), in this order; otherwise every image in A/.
  """
  dir_a, dir_b = root / a_dir, root / b_dir
  for d in (dir_a, dir_b):
    if not d.is_dir():
      raise DataError(f"missing image folder {d}")
  images_a, images_b = io.list_images(dir_a), io.list_images(dir_b)
  dir_l = root / label_dir if label_dir else None
  if dir_l is not None and not dir_l.is_dir():
    if not label_optional:
      raise DataError(f"missing label folder {dir_l}")
    dir_l = None
  labels = io.list_images(dir_l) if dir_l is not None else {}

  if names is None:
    stems = list(images_a)
    extra_b = sorted(set(images_b) - set(images_a))
    if extra_b:
      raise DataError(f"A/B lists don't match: {images_b[extra_b[0]]} has no A image "
                      f"{dir_a}/{extra_b[0]}.* ({len(extra_b)} B images without A)")
  else:
    stems = list(names)
    for s in stems:
      if s not in images_a:
        raise DataError(f"list file {list_file} names {s!r} but {dir_a}/{s}.* does not exist")

  pairs = []
  for s in stems:
    if s not in images_b:
      raise DataError(f"missing B image for {images_a[s]}: no {dir_b}/{s}.*")
    label = None
    if dir_l is not None:
      if s not in labels:
        raise DataError(f"missing label for {images_a[s]}: no {dir_l}/{s}.*")
      label = labels[s]
    pairs.append(Pair(s, images_a[s], images_b[s], label))
  return pairs


def tile_pairs(pairs: Iterable[Pair], tile_size: int) -> list[Pair]:
  """Non-overlapping tile_size tiles of each pair (reads only the A image's header), or of its
  window when it has one (offsets stay relative to the whole image).

  A tile's id is `<stem>_<row>_<col>` with 4-digit pixel offsets (LEVIR-CD256's naming); an image
  exactly one tile big keeps its stem. Margins smaller than a tile are dropped.
  """
  t = _int_field("tile_size", tile_size, 1)
  out = []
  for p in pairs:
    r0, c0, h, w = p.window if p.window else (0, 0, *io.image_size(p.a))
    if h < t or w < t:
      raise DataError(f"image {p.a} is {w}x{h} (WxH), smaller than tile_size {t}")
    if h == t and w == t:
      out.append(p)
      continue
    for r in range(r0, r0 + h - t + 1, t):
      for c in range(c0, c0 + w - t + 1, t):
        out.append(Pair(f"{p.id}_{r:04d}_{c:04d}", p.a, p.b, p.label, (r, c, t, t)))
  return out


def select(items: Sequence[Any], names: Sequence[str], list_file: Path, what: str) -> list[Any]:
  """The items (pairs or tiles) whose ids `names` lists, in its order; a name that is no item's
  id is a DataError naming `list_file` and `what` the ids are (e.g. "a pair in <data_dir>")."""
  by_id = {t.id: t for t in items}
  for i in names:
    if i not in by_id:
      raise DataError(f"list file {list_file} names {i!r}, which is not {what}")
  return [by_id[i] for i in names]


def seeded_split(ids: Sequence[str], seed: int, ratios: Sequence[float]) -> dict[str, list[str]]:
  """A random train/val/test partition of `ids` sized by `ratios`: the same for the same ids
  (in any order), seed and ratios; parts disjoint, covering, each sorted."""
  seed = _int_field("split_seed", seed, 0)
  ratios = _ratios(ratios)
  ids = sorted(ids)
  order = np.random.default_rng(seed).permutation(len(ids))
  fractions = np.asarray(ratios) / sum(ratios)
  n_train = round(fractions[0] * len(ids))
  n_val = round(fractions[1] * len(ids))
  parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
           "test": order[n_train + n_val:]}
  return {s: [ids[i] for i in sorted(idx)] for s, idx in parts.items()}


def stored_split(dataset: str, root: Path, ids: Sequence[str], split: str, *, split_dir: str,
                 seed: int, ratios: Sequence[float], key: str = "") -> tuple[Path, list[str]]:
  """(list file, ids) of `split` from a split STORED as list files, so it never silently changes
  when files are added or the listing order changes.

  Read from data_dir/list/<split>.txt when the dataset ships it; else from split_dir when given
  (its files win over seed and ratios); else from default_cache_dir(dataset, root)/
  split-seed<seed>-ratios<...><key> (`key` names other inputs of the ids, e.g. a tile size).
  Written there on first use (`seeded_split`), never into the dataset folder.
  """
  shipped = root / "list" / f"{split}.txt"
  if shipped.is_file():
    return shipped, read_list(shipped)
  if split not in SPLITS or any((root / "list" / f"{s}.txt").is_file() for s in SPLITS):
    # A split of our own beside shipped lists could overlap them.
    raise _empty_split(dataset, split, root, f"no {shipped}")
  if split_dir:
    target = Path(split_dir).expanduser()
  else:
    tag = "-".join(f"{r:g}" for r in _ratios(ratios))
    target = (default_cache_dir(dataset, root) /
              f"split-seed{_int_field('split_seed', seed, 0)}-ratios{tag}{key}")
  present = [s for s in SPLITS if (target / f"{s}.txt").is_file()]
  if present and len(present) < len(SPLITS):
    # Rewriting only the missing ones could move pairs between splits without anyone noticing.
    raise DataError(f"incomplete {dataset} split files in {target}: has {', '.join(present)} but "
                    f"not all of {', '.join(SPLITS)}; complete or delete them")
  if present:
    names = {s: read_list(target / f"{s}.txt") for s in SPLITS}
    missing = set(ids).difference(*names.values())
    if missing:
      logging.warning("%s: %d of %d pairs/tiles of %s are in none of the splits stored in %s "
                      "(added after it was written?); delete that folder to split again",
                      dataset, len(missing), len(ids), root, target)
    return target / f"{split}.txt", names[split]
  names = seeded_split(ids, seed, ratios)
  try:
    for s in SPLITS:
      text = "".join(f"{i}\n" for i in names[s]).encode()
      io.atomic_write(target / f"{s}.txt", lambda f, text=text: f.write(text))
  except OSError as e:
    raise DataError(f"cannot write the {dataset} split files to {target}: {e.strerror}; set "
                    f"split_dir (or $JAXCD_CACHE) to a writable folder") from None
  logging.info("%s: stored a seeded %s split (seed %s, ratios %s) in %s", dataset,
               "/".join(SPLITS), seed, tuple(ratios), target)
  return target / f"{split}.txt", names[split]


def _int_field(name: str, value: Any, minimum: int) -> int:
  """An integer option of the data block, or a ConfigError naming config.data.<name>."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(f"config.data.{name}: expected an integer >= {minimum}, got {value!r}")
  return int(value)


def _ratios(ratios: Any) -> tuple[float, float, float]:
  ok = isinstance(ratios, (tuple, list)) and len(ratios) == 3 and all(
      isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0 for r in ratios)
  if not ok or sum(ratios) <= 0:
    raise ConfigError(f"config.data.ratios: expected three non-negative numbers (train, val, "
                      f"test), got {ratios!r}")
  return tuple(float(r) for r in ratios)


def _choice_field(name: str, value: Any, choices: Sequence[str]) -> str:
  if value not in choices:
    raise ConfigError(f"config.data.{name}: expected one of {', '.join(choices)}, got {value!r}")
  return value


def _common(kwargs: dict[str, Any]) -> dict[str, Any]:
  """The common options among a source's **kwargs (the registry has rejected unknown ones)."""
  return {k: kwargs[k] for k in COMMON_OPTIONS if k in kwargs}


def default_cache_dir(dataset: str, data_dir: Path) -> Path:
  """Per-dataset-folder cache under $JAXCD_CACHE (default ~/.cache/jaxcd)."""
  root = Path(os.environ.get("JAXCD_CACHE", Path.home() / ".cache" / "jaxcd"))
  digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]
  return root / f"{dataset}-{digest}"
