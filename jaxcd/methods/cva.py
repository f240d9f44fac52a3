"""Change Vector Analysis (CVA) with an Otsu threshold: the classical, training-free baseline.

Per pair: each image is standardised per band (its own mean and standard deviation), so a global
gain/offset between the dates does not count as change; the change magnitude is the Euclidean
norm over bands of the difference vector, ||B' - A'||; Otsu's method (256-bin histogram of that
pair's magnitudes) picks a threshold per image, and pixels with magnitude >= threshold are change.
"""
import jax
import numpy as np
from tqdm.auto import tqdm

from jaxcd import metrics as metrics_lib
from jaxcd.methods import base

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


class CVAPredictor:
  """CVA as a `base.Predictor`: no checkpoint, per-pair Otsu thresholds on the host."""

  def __init__(self, config):
    self.config = config
    self.normalise = bool(config.get("cva", {}).get("normalise", True))
    self.info = {"checkpoint": None, "step": 0}

  def evaluate(self, source, desc: str) -> dict:
    return evaluate_source(source, self.config.loss.ignore_label, self.normalise,
                           desc=f"cva {desc}", progress=self.config.progress)

  def change_score(self, a_BxHxWxC, b_BxHxWxC) -> np.ndarray:
    """The 0/1 CVA maps as scores (a hard map: blended windows vote)."""
    a, b = np.asarray(a_BxHxWxC), np.asarray(b_BxHxWxC)
    return np.stack([cva_predict(x, y, self.normalise) for x, y in zip(a, b)]).astype(np.float32)


class CVA(base.Method):
  """Nothing to train: the loop only evaluates 'val' and `eval_splits` (rows at step 0)."""
  name = "cva"
  trains = False

  def final_splits(self) -> tuple[str, ...]:
    return ("val", *self.config.eval_splits)

  def load_predictor(self, workdir: str, sample_shape, checkpoint: str = "best") -> CVAPredictor:
    return CVAPredictor(self.config)


METHOD = CVA
