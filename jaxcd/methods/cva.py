"""Change Vector Analysis (CVA) with an Otsu threshold: the classical, training-free baseline.

Per pair: each image is standardised per band (its own mean and standard deviation), so a global
gain/offset between the dates does not count as change; the change magnitude is the Euclidean
norm over bands of the difference vector, ||B' - A'||; Otsu's method (256-bin histogram of that
pair's magnitudes) picks a threshold per image, and pixels with magnitude >= threshold are change.
"""
import logging
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxcd import metrics as metrics_lib
from jaxcd import writers
from jaxcd.data import source_from_config

_EPS = 1e-6
_confusion = jax.jit(metrics_lib.confusion_matrix, static_argnums=(2, 3))  # one compile per shape


def _standardise(x_HxWxC: np.ndarray) -> np.ndarray:
  x = x_HxWxC.astype(np.float32)
  return (x - x.mean(axis=(0, 1))) / (x.std(axis=(0, 1)) + _EPS)


def cva_magnitude(a: np.ndarray, b: np.ndarray, normalise: bool = True) -> np.ndarray:
  """HxW float32 magnitude of the change vector B - A (over bands), after per-image per-band
  standardisation when `normalise` (else in raw units)."""
  if a.shape != b.shape:
    raise ValueError(f"cva_magnitude: image shapes differ: {a.shape} vs {b.shape}")
  a_, b_ = (_standardise(a), _standardise(b)) if normalise else (a.astype(np.float32), b.astype(np.float32))
  diff = b_ - a_
  return np.sqrt((diff * diff).sum(axis=-1)) if diff.ndim == 3 else np.abs(diff)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
  """Otsu's threshold of `values`: the histogram split (over [min, max], `bins` bins) maximising
  the between-class variance. Values >= the returned threshold form the upper class."""
  v = np.asarray(values, np.float64).ravel()
  v = v[np.isfinite(v)]
  if v.size == 0:
    raise ValueError("otsu_threshold: no finite values")
  lo, hi = float(v.min()), float(v.max())
  if hi <= lo:  # constant input: everything falls below a threshold just above it
    return float(np.nextafter(hi, np.inf))
  hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
  centres = (edges[:-1] + edges[1:]) / 2
  # Split after bin i: class 0 = bins 0..i, class 1 = bins i+1..end.
  w0 = np.cumsum(hist)[:-1].astype(np.float64)
  w1 = v.size - w0
  s0 = np.cumsum(hist * centres)[:-1]
  mu0 = s0 / np.maximum(w0, 1)
  mu1 = (np.sum(hist * centres) - s0) / np.maximum(w1, 1)
  between = np.where((w0 > 0) & (w1 > 0), w0 * w1 * (mu0 - mu1) ** 2, -1.0)
  return float(edges[int(np.argmax(between)) + 1])


def cva_predict(a: np.ndarray, b: np.ndarray, normalise: bool = True) -> np.ndarray:
  """HxW uint8 change map {0, 1}: CVA magnitude thresholded with this pair's Otsu threshold."""
  mag = cva_magnitude(a, b, normalise)
  return (mag >= otsu_threshold(mag)).astype(np.uint8)


def evaluate_source(source, ignore_label: int = 255, normalise: bool = True, desc: str = "cva",
                    progress: bool = True) -> dict:
  """Metrics of CVA over every pair of `source` (one confusion matrix, label 255 ignored)."""
  cm = np.zeros((2, 2), np.int64)
  for i in tqdm(range(len(source)), desc=desc, leave=False, disable=not progress):
    rec = source[i]
    pred = cva_predict(rec["image_a"], rec["image_b"], normalise)
    cm += np.asarray(_confusion(pred, rec["label"], 2, ignore_label), np.int64)
  return metrics_lib.metrics_from_confusion(cm)


def train_and_evaluate(config, workdir: str) -> dict:
  """Nothing to train: predicts every pair of 'val' and `config.eval_splits`, writes one row per
  split to WORKDIR/metrics.jsonl and returns {split: metrics}."""
  writer = writers.MetricWriter(workdir)
  normalise = bool(config.get("cva", {}).get("normalise", True))
  final = {}
  try:
    for split in dict.fromkeys(("val", *config.eval_splits)):  # ordered, without repeats
      source = source_from_config(config.data, split)
      t0 = time.perf_counter()
      res = evaluate_source(source, config.loss.ignore_label, normalise, desc=f"cva {split}",
                            progress=config.progress)
      writer.write({"step": 0, "split": split, "method": "cva", "pairs": len(source),
                    "seconds": round(time.perf_counter() - t0, 2), **res})
      logging.info("cva %s: f1 %.4f iou %.4f kappa %.4f (%d pairs)", split, res["f1"], res["iou"],
                   res["kappa"], len(source))
      final[split] = res
  finally:
    writer.close()
  return final
