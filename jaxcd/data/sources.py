"""On-disk change-detection datasets as random-access sources.

Registered names (all take `split` plus the common `data` fields; unknown fields are ignored):
  folder    data_dir/{A,B,label} or data_dir/<split>/{A,B,label}, optional list/<split>.txt.
  levir_cd  LEVIR-CD 1024x1024 originals (data_dir/{train,val,test}/{A,B,label}) cut lazily into
            non-overlapping tiles, or the pre-tiled LEVIR-CD256/BIT layout data_dir/{A,B,label}
            with list/<split>.txt (or `<split>_` file-name prefixes).
  whu_cd    the large WHU-CD pair cut into tiles, or pre-cut tiles; a stored random 6:1:3 split.
  cdd       CDD (Lebedev et al.): data_dir/subset/{train,val,test}/{A,B,OUT}.
  sztaki    SZTAKI AirChange with the RCL protocol: 12 overlapping tiles per pair, tiles without
            change dropped, a seeded 98/12/12 split.
  tfds      a dataset built by `jaxcd.data.tfds_builders` (array_record), read without TensorFlow.

Sources list files when built and read pixels only in `__getitem__`; tiles of large images share
a small per-process cache of decoded images. They pickle without their cache (grain workers).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from jaxcd.data import SPLITS, register_source
from jaxcd.data import io
from jaxcd.errors import ConfigError, DataError

LEVIR_ORIGIN = "https://justchenhao.github.io/LEVIR/"
WHU_ORIGIN = "http://gpcv.whu.edu.cn/data/building_dataset.html"
CDD_ORIGIN = "Lebedev et al., ISPRS Archives XLII-2, 2018"
SZTAKI_ORIGIN = "http://web.eee.sztaki.hu/remotesensing/airchange_benchmark.html"

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
  """Non-overlapping tile_size tiles of each pair (reads only the A image's header).

  A tile's id is `<stem>_<row>_<col>` with 4-digit pixel offsets (LEVIR-CD256's naming); an image
  exactly one tile big keeps its stem. Margins smaller than a tile are dropped.
  """
  t = _int_field("tile_size", tile_size, 1)
  out = []
  for p in pairs:
    h, w = io.image_size(p.a)
    if h < t or w < t:
      raise DataError(f"image {p.a} is {w}x{h} (WxH), smaller than tile_size {t}")
    if h == t and w == t:
      out.append(p)
      continue
    for r in range(0, h - t + 1, t):
      for c in range(0, w - t + 1, t):
        out.append(Pair(f"{p.id}_{r:04d}_{c:04d}", p.a, p.b, p.label, (r, c, t, t)))
  return out


def _int_field(name: str, value: Any, minimum: int) -> int:
  """An integer option of the data block, or a ConfigError naming config.data.<name>."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(f"config.data.{name}: expected an integer >= {minimum}, got {value!r}")
  return int(value)


def _choice_field(name: str, value: Any, choices: Sequence[str]) -> str:
  if value not in choices:
    raise ConfigError(f"config.data.{name}: expected one of {', '.join(choices)}, got {value!r}")
  return value


def _common(kwargs: dict[str, Any]) -> dict[str, Any]:
  """Options every on-disk source understands (the rest of the data block is ignored)."""
  return {k: kwargs[k] for k in ("num_bands", "label_encoding", "scale_16bit", "cache_size")
          if k in kwargs}


def _writable(d: Path) -> bool:
  # Running as root, os.access says yes even for r-x folders; honour the mode bits too.
  try:
    return d.is_dir() and os.access(d, os.W_OK) and bool(d.stat().st_mode & (stat.S_IWUSR |
                                                                            stat.S_IWGRP |
                                                                            stat.S_IWOTH))
  except OSError:
    return False


def default_cache_dir(dataset: str, data_dir: Path) -> Path:
  """Per-dataset-folder cache under $JAXCD_CACHE (default ~/.cache/jaxcd)."""
  root = Path(os.environ.get("JAXCD_CACHE", Path.home() / ".cache" / "jaxcd"))
  digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]
  return root / f"{dataset}-{digest}"


# --- folder -------------------------------------------------------------------------------------

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


# --- LEVIR-CD -----------------------------------------------------------------------------------

LEVIR_LAYOUT = ("data_dir/{train,val,test}/{A,B,label} (1024x1024 originals) or "
                "data_dir/{A,B,label} + list/<split>.txt (LEVIR-CD256/BIT)")


@register_source("levir_cd")
def levir_cd(split: str, data_dir: str = "", tile_size: int = 256, **kwargs: Any) -> PairListSource:
  """LEVIR-CD, either layout (auto-detected); tiles are cut on access, not on disk.

  The originals give 16 tiles per image: 7120/1024/2048 train/val/test tiles with tile_size 256.
  Pre-tiled layout: list/<split>.txt (one file name per line, BIT convention; any split name,
  e.g. 'demo') or else the files whose names start with '<split>_'.
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
      stems = [s for s in io.list_images(root / "A") if s.startswith(f"{split}_")]
      if not stems:
        raise _empty_split("levir_cd", split, root,
                           f"no {list_file} and no {root / 'A'}/{split}_* images")
      pairs = match_pairs(root, names=stems)
      layout = "pre-tiled {A,B,label}, split by the file-name prefix '<split>_'"
  else:
    raise DataError(f"data_dir {root} is not a LEVIR-CD folder: expected {LEVIR_LAYOUT}; the "
                    f"dataset must be obtained from its authors ({LEVIR_ORIGIN})")
  tiles = tile_pairs(pairs, tile_size)
  return PairListSource(tiles, name="levir_cd", split=split, root=root,
                        layout=f"{layout}, {tile_size}x{tile_size} tiles", **_common(kwargs))


# --- WHU-CD -------------------------------------------------------------------------------------

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


# --- CDD ----------------------------------------------------------------------------------------

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


# --- SZTAKI AirChange ---------------------------------------------------------------------------

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
           **kwargs: Any) -> PairListSource:
  """SZTAKI AirChange, RCL protocol: 3x4 overlapping tiles per pair, unchanged tiles dropped,
  then a seeded split: 12 val, 12 test, the rest (98 of 122) train.

  Building it reads the 13 masks (a few MB); images are read on access.
  """
  root = _require_dir(data_dir, "sztaki", SZTAKI_LAYOUT, SZTAKI_ORIGIN)
  pairs = sztaki_pairs(root)
  if not pairs:
    raise DataError(f"data_dir {root} holds no SZTAKI pair folders: expected {SZTAKI_LAYOUT}; the "
                    f"dataset must be obtained from its authors ({SZTAKI_ORIGIN})")
  t = _int_field("tile_size", tile_size, 1)
  tiles = []
  for p in pairs:
    gt = io.read_label(p.label, kwargs.get("label_encoding", "auto"))
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
  opts = _common(kwargs)
  # The decoded benchmark is ~70 MB: caching every file keeps shuffled reads from re-decoding.
  opts.setdefault("cache_size", 3 * len(pairs))
  return PairListSource(chosen, name="sztaki", split=split, root=root,
                        layout=f"RCL protocol: {len(pairs)} pairs, {len(tiles)} tiles with change "
                               f"of {len(pairs) * SZTAKI_GRID[0] * SZTAKI_GRID[1]}", **opts)


# --- TFDS (built array_record files) ------------------------------------------------------------

@register_source("tfds")
def tfds(split: str, tfds_name: str = "", data_dir: str = "", **unused: Any):
  """A dataset prepared by `python -m jaxcd.data.tfds_builders` read back without TensorFlow."""
  from jaxcd.data.tfds_builders import TfdsSource  # tensorflow_datasets loads only when used
  return TfdsSource(tfds_name, split, data_dir)
