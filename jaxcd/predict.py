"""python -m jaxcd.predict --config C --workdir W A.png B.png [--label L.png] --out DIR
       [--tile 256 --overlap 64 --batch 8 --threshold 0.5 --checkpoint best|latest]
       (or --pairs_file F with lines "A B [label]" instead of A and B)

Change maps for image pairs of any size, large scenes included: overlapping tiles, blended with a
linear-ramp window so seams vanish, batched through the jitted model (`jaxcd.sliding`, which
`jaxcd.evaluate` uses for pairs larger than its window). Files are decoded as the training source
decodes them, with the config's data options (`scale_16bit`, `label_encoding`, `num_bands`); the
model applies `band_order`, mean and std. Writes per pair into DIR:
  <stem>_change.png   0/255 change map            <stem>_prob.png   change score 0-255 (the
                      method's: a probability, or CDCluster's score through the checkpoint's
                      cluster-to-change map)
  <stem>_overlay.png  with a label: TP white, FP cyan, FN red, TN black, ignored grey;
                      without: predicted changes in red over B
  <stem>_panel.png    A | B | prediction | overlay side by side (more than 3 bands: true colour,
                      `display_images`; `config.data.rgb_bands` picks the bands)
  <stem>_change.tif   when A is a georeferenced GeoTIFF (same CRS and transform)
With a label the metrics are printed. The last stdout line is JSON with the paths (and metrics).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from absl import flags, logging
from PIL import Image

from jaxcd import cli, sliding, storage
from jaxcd.data import io, pairs as data_pairs
from jaxcd.errors import ConfigError, DataError

IGNORE = 255
# Overlay colours (RGB).
TP, FP, FN, TN, IGNORED = (255, 255, 255), (0, 255, 255), (255, 0, 0), (0, 0, 0), (128, 128, 128)
CHANGE_RED = (255, 0, 0)
_PANEL_MAX_SIDE = 1024  # the panel is a preview: big scenes are subsampled for it
# True colour (B04, B03, B02) of 13-band Sentinel-2 L1C in band order B01..B08, B8A, B09..B12.
SENTINEL2_RGB = (3, 2, 1)
STRETCH_PERCENTILES = (2.0, 98.0)
_STRETCH_SAMPLE = 2**20  # pixels the stretch limits are estimated on


class Pair(NamedTuple):
  a: Path
  b: Path
  label: Path | None = None


# --- pictures ----------------------------------------------------------------------------------

def rgb_bands(num_bands: int, override: Sequence[int] = ()) -> tuple[int, int, int]:
  """Band indices shown as red, green, blue: `override` (`config.data.rgb_bands`) when set;
  B04, B03, B02 of 13 bands (Sentinel-2's order B01..B08, B8A, B09..B12); else the first three
  bands, or the first band as grey."""
  if override:
    bands = tuple(int(i) for i in override)
    if len(bands) != 3 or not all(0 <= i < num_bands for i in bands):
      raise ConfigError(f"config.data.rgb_bands must be 3 band indices in 0..{num_bands - 1}, "
                        f"got {tuple(override)}")
    return bands
  if num_bands == 13:
    return SENTINEL2_RGB
  return (0, 1, 2) if num_bands >= 3 else (0, 0, 0)


def to_rgb(image_HxWxC: np.ndarray, bands: Sequence[int] | None = None) -> np.ndarray:
  """HxWx3 of the `bands` (default `rgb_bands` of the image's band count), values unchanged."""
  if image_HxWxC.ndim == 2:
    image_HxWxC = image_HxWxC[:, :, None]
  bands = rgb_bands(image_HxWxC.shape[-1]) if bands is None else bands
  return np.ascontiguousarray(image_HxWxC[..., list(bands)])


def stretch_limits(images: Sequence[np.ndarray],
                   percentiles: tuple[float, float] = STRETCH_PERCENTILES):
  """(low, high) per channel: the percentiles of HxWx3 `images` taken together (a subsample of
  about 1M pixels for large scenes)."""
  pixels = sum(x.shape[0] * x.shape[1] for x in images)
  step = max(1, int(np.ceil(np.sqrt(pixels / _STRETCH_SAMPLE))))
  sample = np.concatenate([x[::step, ::step].reshape(-1, x.shape[-1]) for x in images])
  lo, hi = np.percentile(sample.astype(np.float32), percentiles, axis=0)
  return lo, hi


def stretch(image_HxWx3: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """uint8: [lo, hi] of each channel mapped linearly onto [0, 255], clipped; a constant channel
  (hi == lo) is kept as it is."""
  x = image_HxWx3.astype(np.float32)
  span = np.where(hi > lo, hi - lo, 1.0)
  y = np.where(hi > lo, (x - lo) * (255.0 / span), x)
  return np.rint(np.clip(y, 0, 255)).astype(np.uint8)


def display_images(images: Sequence[np.ndarray], override: Sequence[int] = ()) -> list[np.ndarray]:
  """uint8 HxWx3 pictures of images of one band layout (the two dates of a pair). More than 3
  bands: the true colour of `rgb_bands`, stretched between the 2nd and 98th percentile of each
  shown band over all images at once, since visible bands of 16-bit multispectral data scaled to
  8 bits are near black; one stretch keeps the dates comparable. RGB and grey images are already
  display-scaled and shown as they are."""
  bands = images[0].shape[-1] if images[0].ndim == 3 else 1
  views = [to_rgb(x, rgb_bands(bands, override)) for x in images]
  if bands <= 3:
    return views
  lo, hi = stretch_limits(views)
  return [stretch(v, lo, hi) for v in views]


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


def save_panel(path: Path, rgb_a: np.ndarray, rgb_b: np.ndarray, change_HxW: np.ndarray,
               over_HxWx3: np.ndarray, title: str = "") -> Path:
  """A | B | prediction | overlay side by side (matplotlib, Agg); A and B as `display_images`."""
  import matplotlib
  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt

  step = max(1, -(-max(rgb_a.shape[:2]) // _PANEL_MAX_SIDE))
  views = [(rgb_a, "A"), (rgb_b, "B"), (change_HxW, "prediction"), (over_HxWx3, "overlay")]
  h, w = rgb_a.shape[:2]
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


def georeference(path: Path) -> tuple[Any, Any] | None:
  """(crs, transform) of a georeferenced TIFF, or None."""
  if not _is_tiff(path):
    return None
  import warnings

  import rasterio
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
      io.existing(p, what)
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


_METRIC_KEYS = ("f1", "iou", "precision", "recall", "oa", "kappa", "miou", "specificity")


def pair_metrics(label_HxW: np.ndarray, change_HxW: np.ndarray, ignore_label: int = IGNORE) -> dict:
  from jaxcd import metrics as metrics_lib
  cm = metrics_lib.confusion_matrix(change_HxW, label_HxW, 2, ignore_label)
  m = metrics_lib.metrics_from_confusion(np.asarray(cm))
  return {**{k: round(m[k], 4) for k in _METRIC_KEYS}, "confusion_matrix": m["confusion_matrix"]}


# --- the job -----------------------------------------------------------------------------------

def pair_source(config, pairs: Sequence[Pair]) -> data_pairs.PairListSource:
  """The pairs as a source that decodes them as training does: the same `PairListSource` reads
  with the config's data options (16-bit scaling, label encoding, band count)."""
  opts = {k: config.data.get(k, v) for k, v in data_pairs.COMMON_OPTIONS.items()}
  opts["cache_size"] = 0  # every file is read once
  records = [data_pairs.Pair(str(i), p.a, p.b, p.label) for i, p in enumerate(pairs)]
  return data_pairs.PairListSource(records, name="predict", split="predict", layout="pairs",
                                   root=Path("."), **opts)


def load_predictor(config, workdir: str, tile: int, checkpoint: str = "best"):
  """(predict_fn for sliding_window_predict, checkpoint info) of a trained run: the method's
  change score (> 0.5 where its change map says change)."""
  from jaxcd import checkpointing, parallel
  from jaxcd.methods import get_method
  mesh = parallel.make_mesh()
  size = sliding.fixed_input_size(config) or tile
  predictor = get_method(config).load_predictor(
      workdir, (1, size, size, config.data.num_bands),
      checkpointing.BEST if checkpoint == "best" else checkpointing.LATEST)
  return (sliding.sharded_predict_fn(predictor.change_score, mesh),
          {"checkpoint": predictor.info["checkpoint"], "step": predictor.info["step"]})


def predict_pairs(config, workdir: str, pairs: Sequence[Pair], out_dir: str | Path, *,
                  tile: int = 256, overlap: int = 64, batch: int = 8, threshold: float = 0.5,
                  checkpoint: str = "best") -> dict:
  """Predicts every pair and writes its pictures into out_dir; returns the JSON summary."""
  fixed = sliding.fixed_input_size(config)
  if fixed:
    if tile != fixed:
      logging.info("model %s takes %dx%d inputs only: tile %d -> %d", config.model.name, fixed,
                   fixed, tile, fixed)
    tile = fixed
  elif tile < sliding.SIZE_MULTIPLE or tile % sliding.SIZE_MULTIPLE:
    raise ConfigError(f"--tile must be a positive multiple of {sliding.SIZE_MULTIPLE}, got {tile}")
  if not 0 <= overlap < tile:
    raise ConfigError(f"--overlap must be in [0, tile={tile}), got {overlap}")
  if batch < 1:
    raise ConfigError(f"--batch must be >= 1, got {batch}")
  if not 0.0 <= threshold < 1.0:
    raise ConfigError(f"--threshold must be in [0, 1), got {threshold}")
  shown = config.data.get("rgb_bands", ())
  rgb_bands(config.data.num_bands, shown)  # a bad field fails before the model loads
  precheck(pairs)
  source = pair_source(config, pairs)
  if storage.is_remote(out_dir):
    storage.check_remote(str(out_dir))
  if storage.path(out_dir).is_file():
    raise DataError(f"--out {out_dir} exists and is not a folder")
  stage = storage.Staged(out_dir)  # written here, uploaded after each pair for a gs:// --out
  local_dir = Path(stage.local)

  predict_fn, info = load_predictor(config, workdir, tile, checkpoint)
  results = []
  for i, (pair, stem) in enumerate(zip(pairs, unique_stems(pairs))):
    rec = source[i]
    a, b = rec["image_a"], rec["image_b"]
    label = rec["label"] if pair.label else None
    prob_HxW = sliding.sliding_window_predict(predict_fn, a, b, tile, overlap, batch,
                                              fixed_size=fixed is not None,
                                              progress=config.progress, desc=stem)
    change_HxW = (prob_HxW > threshold).astype(np.uint8)  # > 0.5 is the argmax of two classes
    rgb_a, rgb_b = display_images([a, b], shown)
    over = overlay(label, change_HxW) if label is not None else overlay_on_image(rgb_b, change_HxW)
    paths = {"change": local_dir / f"{stem}_change.png", "prob": local_dir / f"{stem}_prob.png",
             "overlay": local_dir / f"{stem}_overlay.png", "panel": local_dir / f"{stem}_panel.png"}
    Image.fromarray(change_HxW * np.uint8(255)).save(paths["change"])
    Image.fromarray(np.rint(prob_HxW * 255).astype(np.uint8)).save(paths["prob"])
    Image.fromarray(over).save(paths["overlay"])
    save_panel(paths["panel"], rgb_a, rgb_b, change_HxW * np.uint8(255), over, title=stem)
    geo = georeference(pair.a)
    if geo is not None:
      paths["change_tif"] = write_geotiff(local_dir / f"{stem}_change.tif",
                                          change_HxW * np.uint8(255), *geo)
    stage.upload()
    paths = {k: storage.join(str(out_dir), v.name) if stage.remote else v for k, v in paths.items()}
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
  flags.DEFINE_integer("tile", 256, f"Window size (a multiple of {sliding.SIZE_MULTIPLE}).")
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
  cli.run_app(main)
