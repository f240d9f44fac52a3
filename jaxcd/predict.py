"""python -m jaxcd.predict --config C --workdir W A.png B.png [--label L.png] --out DIR
       [--tile 256 --overlap 64 --batch 8 --threshold 0.5 --checkpoint best|latest]
       (or --pairs_file F with lines "A B [label]" instead of A and B)

Change maps for image pairs of any size, large scenes included: overlapping tiles, blended with a
linear-ramp window so seams vanish, batched through the jitted model. Writes per pair into DIR:
  <stem>_change.png   0/255 change map            <stem>_prob.png   change score 0-255 (the
                      method's: a probability, or CDCluster's score through the checkpoint's
                      cluster-to-change map)
  <stem>_overlay.png  with a label: TP white, FP cyan, FN red, TN black, ignored grey;
                      without: predicted changes in red over B
  <stem>_panel.png    A | B | prediction | overlay side by side
  <stem>_change.tif   when A is a GeoTIFF and rasterio (pip install 'jaxcd[geo]') is installed
With a label the metrics are printed. The last stdout line is JSON with the paths (and metrics).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from absl import app, flags, logging
from PIL import Image
from tqdm.auto import tqdm

from jaxcd import cli
from jaxcd.data import io
from jaxcd.errors import ConfigError, DataError

# Tiles are multiples of this so every network's down/up-sampling path (up to 5 poolings) lines
# up exactly; smaller multiples would rely on the decoder's edge padding.
SIZE_MULTIPLE = 32
IGNORE = 255
# Overlay colours (RGB).
TP, FP, FN, TN, IGNORED = (255, 255, 255), (0, 255, 255), (255, 0, 0), (0, 0, 0), (128, 128, 128)
CHANGE_RED = (255, 0, 0)
# GeoTIFF keys (GeoKeyDirectory, ModelPixelScale, ModelTiepoint, ModelTransformation).
_GEOTIFF_TAGS = (34735, 33550, 33922, 34264)
_PANEL_MAX_SIDE = 1024  # the panel is a preview: big scenes are subsampled for it

PredictFn = Callable[[np.ndarray, np.ndarray], Any]  # (a_BxHxWxC, b_BxHxWxC) uint8 -> BxHxW prob


class Pair(NamedTuple):
  a: Path
  b: Path
  label: Path | None = None


# --- sliding window ----------------------------------------------------------------------------

def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  """Offsets of the fewest windows of `tile` that cover [0, size) overlapping by >= `overlap`.

  The first starts at 0, the last ends at `size` (edge windows stay inside the image), and the
  rest are evenly spaced: shifting only the last window would leave one narrow, deep overlap
  where the blend is worst.
  """
  if size <= tile:
    return [0]
  n = -(-(size - tile) // (tile - overlap)) + 1
  return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def ramp_window(tile: int, overlap: int) -> np.ndarray:
  """1-D blending weights: linear ramps over `overlap` pixels at both ends, 1 in between.

  Where two regularly spaced tiles overlap their ramps sum to 1 (a partition of unity), so the
  blend is a smooth cross-fade; weights stay > 0, so pixels covered by one tile edge keep it.
  """
  if overlap <= 0:
    return np.ones(tile, np.float32)
  i = np.arange(tile, dtype=np.float32) + 0.5
  return np.minimum(1.0, np.minimum(i, tile - i) / overlap).astype(np.float32)


def _tile_side(size: int, tile: int, multiple: int, fixed: bool) -> int:
  if fixed or size > tile:
    return tile
  # Image fits: one pass over the image padded only up to the next size the model takes.
  return min(tile, -(-size // multiple) * multiple)


def sliding_window_predict(predict_fn: PredictFn, a_HxWxC: np.ndarray, b_HxWxC: np.ndarray,
                           tile: int = 256, overlap: int = 64, batch: int = 8,
                           multiple: int = SIZE_MULTIPLE, fixed_size: bool = False,
                           progress: bool = False, desc: str = "tiles") -> np.ndarray:
  """HxW float32 change probability of a pair of any size.

  Windows of `tile` (`tile_starts`: overlapping by >= `overlap`, none past the edge) are predicted
  in batches of `batch` and blended with `ramp_window` weights. A dimension smaller than the tile is
  reflection-padded to the next multiple of `multiple` (to `tile` if `fixed_size`, for models
  built for one input size), so an image that fits is predicted in one pass. All calls of
  `predict_fn` have one shape (one compilation): the last batch is filled with repeats.
  """
  if a_HxWxC.shape != b_HxWxC.shape:
    raise DataError(f"A/B shapes differ: {a_HxWxC.shape} vs {b_HxWxC.shape}")
  if not 0 <= overlap < tile:
    raise ConfigError(f"--overlap must be in [0, tile={tile}), got {overlap}")
  if batch < 1:
    raise ConfigError(f"--batch must be >= 1, got {batch}")
  h, w = a_HxWxC.shape[:2]
  th, tw = (_tile_side(s, tile, multiple, fixed_size) for s in (h, w))
  pad = ((0, max(th - h, 0)), (0, max(tw - w, 0)), (0, 0))
  if any(after for _, after in pad):
    a_HxWxC, b_HxWxC = (np.pad(x, pad, mode="reflect") for x in (a_HxWxC, b_HxWxC))
  hp, wp = a_HxWxC.shape[:2]
  ys, xs = tile_starts(hp, th, overlap), tile_starts(wp, tw, overlap)
  wy, wx = ramp_window(th, overlap), ramp_window(tw, overlap)
  weight_TxT = np.outer(wy, wx)
  positions = [(y, x) for y in ys for x in xs]
  bsz = min(batch, len(positions))

  acc_HxW = np.zeros((hp, wp), np.float32)
  bar = tqdm(total=len(positions), desc=desc, unit="tile", leave=False, disable=not progress)

  def accumulate(out, chunk):
    prob_BxTxT = np.asarray(out, np.float32)
    if prob_BxTxT.shape[1:] != (th, tw):
      raise ValueError(f"predict_fn returned {prob_BxTxT.shape}, expected (B, {th}, {tw})")
    for (y, x), p in zip(chunk, prob_BxTxT):
      acc_HxW[y:y + th, x:x + tw] += weight_TxT * p
    bar.update(len(chunk))

  pending = None
  for i in range(0, len(positions), bsz):
    chunk = positions[i:i + bsz]
    idx = chunk + [chunk[-1]] * (bsz - len(chunk))
    a_BxTxTxC = np.stack([a_HxWxC[y:y + th, x:x + tw] for y, x in idx])
    b_BxTxTxC = np.stack([b_HxWxC[y:y + th, x:x + tw] for y, x in idx])
    out = predict_fn(a_BxTxTxC, b_BxTxTxC)  # dispatched asynchronously ...
    if pending is not None:
      accumulate(*pending)  # ... while the previous batch is copied back and blended
    pending = (out, chunk)
  accumulate(*pending)
  bar.close()

  # The summed weights are separable (a grid of tiles times an outer-product window): divide by
  # the row and column coverage in place instead of holding a second HxW array.
  acc_HxW /= _coverage(hp, ys, wy)[:, None]
  acc_HxW /= _coverage(wp, xs, wx)[None, :]
  return np.clip(acc_HxW[:h, :w], 0.0, 1.0)


def _coverage(size: int, starts: Sequence[int], w: np.ndarray) -> np.ndarray:
  cov = np.zeros(size, np.float32)
  for s in starts:
    cov[s:s + len(w)] += w
  return cov


# --- pictures ----------------------------------------------------------------------------------

def to_rgb(image_HxWxC: np.ndarray) -> np.ndarray:
  """uint8 HxWx3 for display: the first three bands, or the first band as grey."""
  if image_HxWxC.ndim == 2:
    image_HxWxC = image_HxWxC[:, :, None]
  if image_HxWxC.shape[-1] >= 3:
    return np.ascontiguousarray(image_HxWxC[..., :3])
  return np.repeat(image_HxWxC[..., :1], 3, axis=-1)


def overlay(label_HxW: np.ndarray, pred_HxW: np.ndarray) -> np.ndarray:
  """Comparison with the truth: TP white, FP cyan, FN red, TN black, ignored (255) grey."""
  label_HxW, pred = np.asarray(label_HxW), np.asarray(pred_HxW).astype(bool)
  out = np.zeros(label_HxW.shape + (3,), np.uint8)
  truth = label_HxW == 1
  for mask, colour in ((truth & pred, TP), (~truth & pred, FP), (truth & ~pred, FN),
                       (~truth & ~pred, TN), (label_HxW == IGNORE, IGNORED)):
    out[mask] = colour
  return out


def overlay_on_image(image_HxWxC: np.ndarray, pred_HxW: np.ndarray,
                     alpha: float = 0.5) -> np.ndarray:
  """Predicted changes drawn in semi-transparent red over the image (uint8 HxWx3)."""
  rgb = to_rgb(image_HxWxC).astype(np.float32)
  mask = np.asarray(pred_HxW).astype(bool)
  rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(CHANGE_RED, np.float32)
  return np.rint(rgb).astype(np.uint8)


def save_panel(path: Path, a: np.ndarray, b: np.ndarray, change_HxW: np.ndarray,
               over_HxWx3: np.ndarray, title: str = "") -> Path:
  """A | B | prediction | overlay side by side (matplotlib, Agg)."""
  import matplotlib
  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt

  step = max(1, -(-max(a.shape[:2]) // _PANEL_MAX_SIDE))
  views = [(to_rgb(a), "A"), (to_rgb(b), "B"), (change_HxW, "prediction"), (over_HxWx3, "overlay")]
  h, w = a.shape[:2]
  fig, axes = plt.subplots(1, 4, figsize=(16, 4 * h / w + 0.6), squeeze=False)
  for ax, (img, name) in zip(axes[0], views):
    img = img[::step, ::step]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_title(name)
    ax.set_axis_off()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


# --- GeoTIFF -----------------------------------------------------------------------------------

def _is_tiff(path: Path) -> bool:
  return path.suffix.lower() in (".tif", ".tiff")


def _has_geotiff_tags(path: Path) -> bool:
  try:
    with Image.open(path) as im:
      tags = getattr(im, "tag_v2", {})
      return any(t in tags for t in _GEOTIFF_TAGS)
  except Exception:  # noqa: BLE001 - Pillow cannot parse every GeoTIFF; assume it is one
    return True


def georeference(path: Path) -> tuple[Any, Any] | None:
  """(crs, transform) of a georeferenced TIFF via rasterio, or None. Raises ImportError when a
  GeoTIFF needs rasterio and it is missing."""
  if not _is_tiff(path):
    return None
  try:
    import rasterio  # optional extra `geo`
  except ImportError:
    if _has_geotiff_tags(path):
      raise
    return None
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # NotGeoreferencedWarning for plain TIFFs
    with rasterio.open(path) as ds:
      crs, transform = ds.crs, ds.transform
  if crs is None and transform == rasterio.Affine.identity():
    return None
  return crs, transform


def write_geotiff(path: Path, x_HxW: np.ndarray, crs: Any, transform: Any) -> Path:
  import rasterio
  with rasterio.open(path, "w", driver="GTiff", height=x_HxW.shape[0], width=x_HxW.shape[1],
                     count=1, dtype="uint8", crs=crs, transform=transform,
                     compress="deflate") as ds:
    ds.write(x_HxW, 1)
  return path


# --- pairs and checks --------------------------------------------------------------------------

def read_pairs_file(path: str | Path) -> list[Pair]:
  """Lines `A B [label]` (shell quoting for spaces; `#` comments). Relative paths are relative
  to the pairs file's folder."""
  path = Path(path)
  if not path.is_file():
    raise DataError(f"pairs file not found: {path}")
  pairs = []
  for n, line in enumerate(path.read_text().splitlines(), start=1):
    try:
      fields = shlex.split(line, comments=True)
    except ValueError as e:
      raise DataError(f"{path}:{n}: {e}") from None
    if not fields:
      continue
    if len(fields) not in (2, 3):
      raise DataError(f"{path}:{n}: expected 'A B [label]', got {len(fields)} fields")
    files = [p if p.is_absolute() else path.parent / p for p in map(Path, fields)]
    pairs.append(Pair(*files))
  if not pairs:
    raise DataError(f"pairs file {path} lists no pairs")
  return pairs


def precheck(pairs: Sequence[Pair]) -> None:
  """Fails fast, before the model loads: every file exists and A, B and label sizes agree."""
  for pair in pairs:
    files = [p for p in pair if p is not None]
    for p, what in zip(files, ("image", "image", "label")):
      if not p.is_file():
        raise DataError(f"{what} file not found: {p}")
    # Header sizes only; zero-band stand-ins let check_pair word the message as it always does.
    shapes = [io.image_size(p) for p in files]
    a, b = (np.empty(s + (0,), np.uint8) for s in shapes[:2])
    label = np.empty(shapes[2], np.uint8) if pair.label else None
    io.check_pair(a, b, label, [str(p) for p in files])


def unique_stems(pairs: Sequence[Pair]) -> list[str]:
  """Output names from A's file name; clashes (e.g. SZTAKI's many `im1.bmp`) get the folder."""
  stems: list[str] = []
  for pair in pairs:
    stem = pair.a.stem
    if stem in stems and pair.a.parent.name:
      stem = f"{pair.a.parent.name}_{stem}"
    base, k = stem, 2
    while stem in stems:
      stem, k = f"{base}_{k}", k + 1
    stems.append(stem)
  return stems


def fixed_input_size(config) -> int | None:
  """The one input size of a model whose parameters depend on it (Dsfer-Net's official (C,H,W)
  LayerNorm), or None for fully convolutional models."""
  m = config.model
  if "input_size" in m and m.get("layernorm", "chw") == "chw":
    return int(m.input_size)
  return None


_METRIC_KEYS = ("f1", "iou", "precision", "recall", "oa", "kappa", "miou", "specificity")


def pair_metrics(label_HxW: np.ndarray, change_HxW: np.ndarray, ignore_label: int = IGNORE) -> dict:
  from jaxcd import metrics as metrics_lib
  cm = metrics_lib.confusion_matrix(change_HxW, label_HxW, 2, ignore_label)
  m = metrics_lib.metrics_from_confusion(np.asarray(cm))
  return {**{k: round(m[k], 4) for k in _METRIC_KEYS}, "confusion_matrix": m["confusion_matrix"]}


# --- the job -----------------------------------------------------------------------------------

def load_predictor(config, workdir: str, tile: int, checkpoint: str = "best"):
  """(predict_fn for sliding_window_predict, checkpoint info) of a trained run: the method's
  change score (> 0.5 where its change map says change)."""
  import jax

  from jaxcd import checkpointing, parallel
  from jaxcd.methods import get_method
  mesh = parallel.make_mesh()
  size = fixed_input_size(config) or tile
  predictor = get_method(config).load_predictor(
      workdir, (1, size, size, config.data.num_bands),
      checkpointing.BEST if checkpoint == "best" else checkpointing.LATEST)
  sharding, ndev = parallel.data_sharded(mesh), jax.device_count()

  def predict_fn(a_BxHxWxC: np.ndarray, b_BxHxWxC: np.ndarray):
    n = a_BxHxWxC.shape[0]
    extra = -n % ndev  # the batch is split over the devices: fill it up to a multiple
    if extra:
      a_BxHxWxC, b_BxHxWxC = (np.concatenate([x, np.repeat(x[-1:], extra, 0)])
                              for x in (a_BxHxWxC, b_BxHxWxC))
    a, b = jax.device_put(a_BxHxWxC, sharding), jax.device_put(b_BxHxWxC, sharding)
    return predictor.change_score(a, b)[:n]

  return predict_fn, {"checkpoint": predictor.info["checkpoint"], "step": predictor.info["step"]}


def predict_pairs(config, workdir: str, pairs: Sequence[Pair], out_dir: str | Path, *,
                  tile: int = 256, overlap: int = 64, batch: int = 8, threshold: float = 0.5,
                  checkpoint: str = "best") -> dict:
  """Predicts every pair and writes its pictures into out_dir; returns the JSON summary."""
  fixed = fixed_input_size(config)
  if fixed:
    if tile != fixed:
      logging.info("model %s takes %dx%d inputs only: tile %d -> %d", config.model.name, fixed,
                   fixed, tile, fixed)
    tile = fixed
  elif tile < SIZE_MULTIPLE or tile % SIZE_MULTIPLE:
    raise ConfigError(f"--tile must be a positive multiple of {SIZE_MULTIPLE}, got {tile}")
  if not 0 <= overlap < tile:
    raise ConfigError(f"--overlap must be in [0, tile={tile}), got {overlap}")
  if batch < 1:
    raise ConfigError(f"--batch must be >= 1, got {batch}")
  if not 0.0 <= threshold < 1.0:
    raise ConfigError(f"--threshold must be in [0, 1), got {threshold}")
  precheck(pairs)
  out_dir = Path(out_dir)
  if out_dir.exists() and not out_dir.is_dir():
    raise DataError(f"--out {out_dir} exists and is not a folder")
  out_dir.mkdir(parents=True, exist_ok=True)

  predict_fn, info = load_predictor(config, workdir, tile, checkpoint)
  results = []
  for pair, stem in zip(pairs, unique_stems(pairs)):
    a, b = io.read_image(pair.a), io.read_image(pair.b)
    label = io.read_label(pair.label) if pair.label else None
    names = [str(p) for p in pair if p is not None]
    io.check_pair(a, b, label, names, num_bands=config.data.num_bands)
    prob_HxW = sliding_window_predict(predict_fn, a, b, tile, overlap, batch,
                                      fixed_size=fixed is not None, progress=config.progress,
                                      desc=stem)
    change_HxW = (prob_HxW > threshold).astype(np.uint8)  # > 0.5 is the argmax of two classes
    over = overlay(label, change_HxW) if label is not None else overlay_on_image(b, change_HxW)
    paths = {"change": out_dir / f"{stem}_change.png", "prob": out_dir / f"{stem}_prob.png",
             "overlay": out_dir / f"{stem}_overlay.png", "panel": out_dir / f"{stem}_panel.png"}
    Image.fromarray(change_HxW * np.uint8(255)).save(paths["change"])
    Image.fromarray(np.rint(prob_HxW * 255).astype(np.uint8)).save(paths["prob"])
    Image.fromarray(over).save(paths["overlay"])
    save_panel(paths["panel"], a, b, change_HxW * np.uint8(255), over, title=stem)
    try:
      geo = georeference(pair.a)
    except ImportError:
      geo = None
      logging.warning("%s is a GeoTIFF but rasterio is missing: wrote PNGs without georeference; "
                      "pip install 'jaxcd[geo]' to keep it", pair.a)
    if geo is not None:
      paths["change_tif"] = write_geotiff(out_dir / f"{stem}_change.tif",
                                          change_HxW * np.uint8(255), *geo)
    res: dict[str, Any] = {"a": str(pair.a), "b": str(pair.b),
                           **{k: str(v) for k, v in paths.items()},
                           "changed_fraction": round(float(change_HxW.mean()), 6)}
    if label is not None:
      res["label"] = str(pair.label)
      res["metrics"] = pair_metrics(label, change_HxW, config.loss.ignore_label)
      m = res["metrics"]
      print(f"{stem}: f1 {m['f1']:.4f} iou {m['iou']:.4f} precision {m['precision']:.4f} "
            f"recall {m['recall']:.4f} oa {m['oa']:.4f} kappa {m['kappa']:.4f}", flush=True)
    logging.info("%s: wrote %s", stem, ", ".join(str(p) for p in paths.values()))
    results.append(res)
  return {**info, "workdir": str(workdir), "pairs": results}


def _define_flags() -> None:
  # Defined when run as a program only, so importing this module registers no global flags.
  cli.define_config_flags(workdir_required=True)
  flags.DEFINE_string("out", None, "Output folder for the pictures.", required=True)
  flags.DEFINE_string("label", None, "Optional change label of the pair A B (for metrics).")
  flags.DEFINE_string("pairs_file", None, "File of lines 'A B [label]' (paths relative to it) "
                      "instead of the positional A B.")
  flags.DEFINE_integer("tile", 256, f"Window size (a multiple of {SIZE_MULTIPLE}).")
  flags.DEFINE_integer("overlap", 64, "Overlap of neighbouring windows, blended away.")
  flags.DEFINE_integer("batch", 8, "Windows per model call.")
  flags.DEFINE_float("threshold", 0.5, "Change probability above which a pixel is changed.")
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to load.")


def pairs_from_flags(argv: Sequence[str]) -> list[Pair]:
  f = flags.FLAGS
  args = list(argv[1:])
  if f.pairs_file:
    if args or f.label:
      raise ConfigError("give either --pairs_file or the positional A B [--label], not both")
    return read_pairs_file(f.pairs_file)
  if len(args) != 2:
    raise ConfigError(f"expected two images A B (or --pairs_file), got {len(args)} "
                      f"positional argument(s): {' '.join(args)}")
  return [Pair(Path(args[0]), Path(args[1]), Path(f.label) if f.label else None)]


def main(argv):
  f = flags.FLAGS

  def run():
    pairs = pairs_from_flags(argv)
    return predict_pairs(f.config, f.workdir, pairs, f.out, tile=f.tile, overlap=f.overlap,
                         batch=f.batch, threshold=f.threshold, checkpoint=f.checkpoint)

  cli.print_json(cli.run_guarded(run))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
