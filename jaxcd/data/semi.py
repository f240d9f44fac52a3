"""Semi-supervised data (RCL, ../shared/papers/rcl.txt): the labeled/unlabeled split of a
training set, stored as split files in the workdir; the sources of each stage; the host-side
augmentation that pairs every training pair with its no-change companion; and the seeds of the
two grain streams (labeled and unlabeled, `pipeline.Streams`).

Split files (WORKDIR/splits/): `labeled.txt` and `unlabeled.txt`, one `<index>\\t<id>` line per
pair of the training source (the id column is empty when the source has no cheap `ids`), and
`split.json` (fraction, seed, size). A fraction is drawn once with its seed and read back on every
later run in that workdir, so a resumed or re-run experiment trains on the same pairs.

Training records may carry a `kind` (`labeled`, `reliable`, `unreliable`) that `RclAugment`
reads: reliable pairs (pseudo-labelled) get the strong augmentation, unreliable pairs become a
no-change pair (A, A) or (B, B) (one date, picked at random) with an all-zero label. With a
no-change mode set, `RclAugment` returns images of 2C bands, [the pair | its no-change
companion], so the companion goes through the unchanged grain pipeline (which keeps only
image_a, image_b and label) and stays pixel-aligned with the pair; `split_companion` undoes it.
"""
import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from jaxcd import storage
from jaxcd.data import io
from jaxcd.data.augment import Augment, StrongAugment
from jaxcd.errors import ConfigError, DataError

SPLIT_DIR = "splits"
LABELED, RELIABLE, UNRELIABLE = "labeled", "reliable", "unreliable"
NOCHANGE_MODES = ("perturb", "same")


# --- the labeled fraction ----------------------------------------------------------------------

def labeled_count(n: int, fraction: float, field: str = "config.rcl.label_fraction") -> int:
  """round(fraction * n) labeled pairs; a clear error when that is none or out of range."""
  if not 0 < fraction <= 1:
    raise ConfigError(f"{field} must be in (0, 1], got {fraction}")
  if n <= 0:
    raise DataError("the training split has no pairs to label")
  k = int(round(fraction * n))
  if k == 0:
    raise ConfigError(f"{field}={fraction} labels none of the {n} training pairs (empty labeled "
                      f"set): use at least {1 / n:.4g}")
  return k


def draw_labeled(n: int, fraction: float, seed: int,
                 field: str = "config.rcl.label_fraction") -> tuple[np.ndarray, np.ndarray]:
  """(labeled, unlabeled): sorted, disjoint indices covering range(n); round(fraction * n)
  labeled, drawn uniformly with `seed` (the same draw for the same (n, fraction, seed))."""
  k = labeled_count(n, fraction, field)
  pick = np.random.default_rng([seed, 0x5E31]).permutation(n)[:k]
  mask = np.zeros(n, bool)
  mask[pick] = True
  return np.flatnonzero(mask), np.flatnonzero(~mask)


def source_ids(source: Any) -> list[str] | None:
  """The source's ids without reading its records, where it knows them (PairListSource)."""
  ids = getattr(source, "ids", None)
  return list(ids) if ids is not None and len(ids) == len(source) else None


def write_index_file(path: str | os.PathLike, indices: Sequence[int], ids: Sequence[str] | None,
                     columns: dict[str, Sequence[Any]] | None = None) -> None:
  """`<index>\\t<id>[\\t<column>...]` lines, written atomically (temporary file + rename)."""
  columns = columns or {}
  lines = []
  for row, i in enumerate(indices):
    extra = "".join(f"\t{columns[c][row]}" for c in columns)
    lines.append(f"{int(i)}\t{ids[int(i)] if ids else ''}{extra}\n")
  io.atomic_write(path, lambda f: f.write("".join(lines).encode()))


def read_index_file(path: str | os.PathLike) -> np.ndarray:
  """The indices (first column) of a split file."""
  path = storage.path(path)
  try:
    rows = [line.split("\t")[0] for line in path.read_text().splitlines() if line.strip()]
    return np.asarray([int(r) for r in rows], np.int64)
  except ValueError:
    raise DataError(f"{path}: not a split file (expected '<index>\\t<id>' lines)") from None


def labeled_split(workdir: str, source: Any, fraction: float, seed: int, write: bool = True,
                  field: str = "config.rcl.label_fraction") -> tuple[np.ndarray, np.ndarray]:
  """(labeled, unlabeled) indices of `source`: read from WORKDIR/splits if there, else drawn
  (`draw_labeled`) and written there (when `write`: process 0 only). A stored split drawn
  otherwise is an error, not redrawn. `field` names the fraction in errors."""
  d = storage.path(workdir) / SPLIT_DIR
  n, ids = len(source), source_ids(source)
  meta_path = d / "split.json"
  want = {"label_fraction": float(fraction), "seed": int(seed), "num_train": n}
  if meta_path.is_file():
    have = json.loads(meta_path.read_text())
    diff = [k for k in want if have.get(k) != want[k]]
    if diff:
      raise ConfigError(f"{d} holds a split with {', '.join(f'{k}={have.get(k)}' for k in diff)}, "
                        f"but the config asks for {', '.join(f'{k}={want[k]}' for k in diff)} "
                        f"({field}, config.seed): use another workdir")
    lab, unl = read_index_file(d / "labeled.txt"), read_index_file(d / "unlabeled.txt")
    if (len(np.intersect1d(lab, unl)) or len(lab) + len(unl) != n or lab.min(initial=0) < 0
        or max(lab.max(initial=0), unl.max(initial=0)) >= n):
      raise DataError(f"{d}: labeled.txt and unlabeled.txt do not partition the {n} training pairs")
    if ids is not None:
      stored = [line.split("\t")[1] for line in (d / "labeled.txt").read_text().splitlines()
                if line.strip()]
      if stored != [ids[i] for i in lab]:
        raise DataError(f"{d}/labeled.txt names other pairs than the training source has at those "
                        "indices (the dataset changed?): use another workdir")
    return lab, unl
  lab, unl = draw_labeled(n, fraction, seed, field)
  if not write:
    return lab, unl
  write_index_file(d / "labeled.txt", lab, ids)
  write_index_file(d / "unlabeled.txt", unl, ids)
  meta = json.dumps({**want, "labeled": len(lab), "unlabeled": len(unl)}) + "\n"
  io.atomic_write(meta_path, lambda f: f.write(meta.encode()))
  return lab, unl


def tile_indices(indices: np.ndarray, at_least: int) -> np.ndarray:
  """`indices` repeated until there are >= at_least (a batch larger than the labeled set)."""
  if len(indices) == 0:
    raise DataError("no pairs to train on")
  return np.tile(indices, -(-at_least // len(indices)))


# --- sources -----------------------------------------------------------------------------------

class UnlabeledPool:
  """Stage 2's unlabeled pairs: `source[indices[i]]`, reliable ones with their pseudo-label,
  unreliable ones tagged to become no-change pairs with an all-zero label. The source's own
  labels (ground truth, if any) never reach training."""

  def __init__(self, source: Any, indices: Sequence[int], reliable: Sequence[bool],
               pseudo_RxHxW: np.ndarray):
    self.source = source
    self.indices = np.asarray(indices, np.int64)
    self.reliable = np.asarray(reliable, bool)
    if self.reliable.shape != self.indices.shape:
      raise ValueError(f"{len(self.reliable)} reliability flags for {len(self.indices)} pairs")
    if len(pseudo_RxHxW) != int(self.reliable.sum()):
      raise ValueError(f"{len(pseudo_RxHxW)} pseudo-labels for {int(self.reliable.sum())} "
                       "reliable pairs")
    self.pseudo = pseudo_RxHxW
    self.row = np.cumsum(self.reliable) - 1  # pseudo-label row of each reliable pair

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict[str, Any]:
    rec = dict(self.source[int(self.indices[i])])
    if self.reliable[i]:
      rec["label"] = np.array(self.pseudo[self.row[i]], np.uint8)  # a copy: augmentations write
      rec["kind"] = RELIABLE
    else:
      rec["label"] = np.zeros_like(rec["label"])
      rec["kind"] = UNRELIABLE
    return rec


# --- augmentation with the no-change companion -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RclAugment:
  """Per record: unreliable -> (X, X) of one random date with an all-zero label; the weak joint
  augmentation; the strong one for reliable (pseudo-labelled) pairs; then, when `nochange` is
  set, the no-change companion packed as extra bands (see the module docstring):
    "perturb": the paper's (A + eta, A + eta'): two independent strong photometric perturbations
      (colour jitter, grayscale, blur) of the weakly augmented A, plus, with the strong
      augmentation's cutout probability, a cutout filled with the same random values in both
      images (so the companion stays unchanged everywhere);
    "same": the official code's (A, A) or (B, B) of the pair as it is fed, date picked at random.
  """
  weak: Augment
  strong: StrongAugment | None = None
  nochange: str = ""

  def __post_init__(self):
    if self.nochange not in ("",) + NOCHANGE_MODES:
      raise ConfigError(f"config.rcl.nochange must be one of {', '.join(NOCHANGE_MODES)}, not "
                        f"{self.nochange!r}")

  def __call__(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    kind = record.get("kind", LABELED)
    rec = {k: v for k, v in record.items() if k != "kind"}
    if kind == UNRELIABLE:
      x = rec["image_a"] if rng.random() < 0.5 else rec["image_b"]
      rec.update(image_a=x, image_b=x, label=np.zeros_like(rec["label"]))
    rec = self.weak(rec, rng)
    weak_a = rec["image_a"]
    if kind == RELIABLE and self.strong is not None:
      rec = self.strong(rec, rng)
    if not self.nochange:
      return rec
    if self.nochange == "same":
      x = rec["image_a"] if rng.random() < 0.5 else rec["image_b"]
      nc_a, nc_b = x, x
    else:
      nc_a, nc_b = perturbed_pair(weak_a, self.strong or StrongAugment(), rng)
    rec["image_a"] = np.concatenate([rec["image_a"], nc_a], axis=-1)
    rec["image_b"] = np.concatenate([rec["image_b"], nc_b], axis=-1)
    return rec


def perturbed_pair(x_HxWxC: np.ndarray, strong: StrongAugment,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(x + eta, x + eta'): two independent photometric perturbations and a shared cutout."""
  photometric = dataclasses.replace(strong, p_cutout=0.0)
  out = photometric({"image_a": x_HxWxC, "image_b": x_HxWxC,
                     "label": np.zeros(x_HxWxC.shape[:2], np.uint8)}, rng)
  a, b = np.array(out["image_a"]), np.array(out["image_b"])
  if rng.random() < strong.p_cutout:
    y0, x0, y1, x1 = strong.cutout_box(*x_HxWxC.shape[:2], rng)
    fill = rng.integers(0, 256, a[y0:y1, x0:x1].shape, dtype=np.uint8)
    a[y0:y1, x0:x1] = fill
    b[y0:y1, x0:x1] = fill
  return a, b


def split_companion(x_BxHxWx2C, bands: int):
  """(pair images, companion images) of a packed batch (numpy or jax arrays)."""
  if x_BxHxWx2C.shape[-1] != 2 * bands:
    raise DataError(f"a packed RCL batch has 2 x {bands} bands (config.data.num_bands), got "
                    f"{x_BxHxWx2C.shape[-1]}")
  return x_BxHxWx2C[..., :bands], x_BxHxWx2C[..., bands:]


# --- two streams at once -----------------------------------------------------------------------

def stream_seed(seed: int, stage: int, stream: int) -> int:
  """Independent 31-bit grain seeds per (config seed, stage, stream)."""
  return int(np.random.SeedSequence([seed, stage, stream, 0x2C1]).generate_state(1)[0] >> 1)

