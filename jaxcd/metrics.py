"""Change-detection metrics from a confusion matrix accumulated on device.

Rows of the confusion matrix are the truth, columns the prediction; class 1 is "change".
MSE and MAE are those of the predicted class-index map against the true one (for binary maps
both equal the error rate, 1 - OA); they are reported because CDCluster's Tables 1-2 list them.

Also NMI and adjusted mutual information (sklearn's definitions, arithmetic averaging) for label
maps of millions of pixels, e.g. pseudo-labels against the truth or against the previous ones.
"""
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln

_INT32_SAFE = 2**31 - 1


def confusion_matrix(pred: jax.Array, label: jax.Array, num_classes: int = 2,
                     ignore_label: int = 255, valid: jax.Array | None = None) -> jax.Array:
  """int32 [K, K] counts of (truth, prediction) over pixels whose label != ignore_label.

  `valid` (broadcastable to label, e.g. Bx1x1) masks out padded examples of an eval batch.
  Jittable; under a mesh the sum covers the global batch, i.e. all devices.
  """
  label = label.astype(jnp.int32)
  pred = pred.astype(jnp.int32)
  ok = (label != ignore_label) & (label >= 0) & (label < num_classes)
  if valid is not None:
    ok = ok & jnp.broadcast_to(valid, ok.shape)
  k2 = num_classes * num_classes
  idx = jnp.where(ok, label * num_classes + pred, k2)  # masked pixels land in an extra bin
  counts = jnp.bincount(idx.ravel(), length=k2 + 1)[:k2]
  return counts.reshape(num_classes, num_classes).astype(jnp.int32)


class ConfusionAccumulator:
  """Sums per-batch confusion matrices on device, flushing to an int64 host total before int32
  could overflow (a device-side int32 holds ~2.1e9 pixels, e.g. 33k tiles of 256x256)."""

  def __init__(self, num_classes: int = 2):
    self.num_classes = num_classes
    self._device: jax.Array | None = None
    self._device_pixels = 0
    self._host = np.zeros((num_classes, num_classes), np.int64)

  def add(self, cm: jax.Array, pixels_in_batch: int) -> None:
    if self._device_pixels + pixels_in_batch > _INT32_SAFE:
      self._flush()
    self._device = cm if self._device is None else self._device + cm
    self._device_pixels += pixels_in_batch

  def _flush(self) -> None:
    if self._device is not None:
      self._host += np.asarray(jax.device_get(self._device), np.int64)
    self._device, self._device_pixels = None, 0

  def result(self) -> np.ndarray:
    self._flush()
    return self._host.copy()


def _div(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.where(b > 0, a / np.where(b > 0, b, 1), 0.0)


def metrics_from_confusion(cm: Any) -> dict[str, Any]:
  """Precision, recall, F1, IoU (of the change class for binary maps), mIoU, OA, kappa,
  specificity, MSE/MAE, and per-class lists. Undefined ratios (0/0) are reported as 0."""
  cm = np.asarray(cm, np.float64)
  k = cm.shape[0]
  n = cm.sum()
  tp = np.diag(cm)
  fp = cm.sum(0) - tp  # predicted as class c, truly another
  fn = cm.sum(1) - tp
  tn = n - tp - fp - fn
  precision = _div(tp, tp + fp)
  recall = _div(tp, tp + fn)
  f1 = _div(2 * precision * recall, precision + recall)
  iou = _div(tp, tp + fp + fn)
  specificity = _div(tn, tn + fp)
  oa = float(_div(tp.sum(), n))
  pe = float(_div((cm.sum(0) * cm.sum(1)).sum(), n * n))
  kappa = float(_div(oa - pe, 1 - pe)) if pe < 1 else 0.0
  if k == 2:
    pos = 1
    main = dict(precision=precision[pos], recall=recall[pos], f1=f1[pos], iou=iou[pos],
                specificity=specificity[pos])
  else:  # macro averages over classes
    main = dict(precision=precision.mean(), recall=recall.mean(), f1=f1.mean(), iou=iou.mean(),
                specificity=specificity.mean())
  out = {key: float(v) for key, v in main.items()}
  dist = np.subtract.outer(np.arange(k), np.arange(k))  # truth index - predicted index
  mse = float(_div((cm * dist**2).sum(), n))
  mae = float(_div((cm * np.abs(dist)).sum(), n))
  out.update(oa=oa, kappa=kappa, miou=float(iou.mean()), mse=mse, mae=mae, pixels=int(n),
             per_class_f1=[float(v) for v in f1], per_class_iou=[float(v) for v in iou],
             confusion_matrix=[[int(v) for v in row] for row in cm])
  return out


# --- NMI and adjusted mutual information (sklearn's definitions, vectorised) -----------------

def contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Dense contingency table (int64) of two label vectors, empty rows and columns dropped."""
  a, b = np.ravel(a), np.ravel(b)
  if a.shape != b.shape:
    raise ValueError(f"label vectors differ in size: {a.size} vs {b.size}")
  if a.size == 0:
    return np.zeros((0, 0), np.int64)
  if a.dtype.kind not in "ui" or b.dtype.kind not in "ui" or min(a.min(), b.min()) < 0 \
      or (int(a.max()) + 1) * (int(b.max()) + 1) > 1 << 26:
    # Arbitrary values: compact them first (a sort; the bincount path below avoids it).
    a = np.unique(a, return_inverse=True)[1].ravel()
    b = np.unique(b, return_inverse=True)[1].ravel()
  ka, kb = int(a.max()) + 1, int(b.max()) + 1
  table = np.bincount(a.astype(np.int64) * kb + b, minlength=ka * kb).reshape(ka, kb)
  return table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]


def _entropy(counts: np.ndarray) -> float:
  if counts.size <= 1:
    return 0.0
  p = counts.astype(np.float64)
  total = p.sum()
  return float(-np.sum((p / total) * (np.log(p) - math.log(total))))


def _mutual_info(table: np.ndarray) -> float:
  if table.shape[0] <= 1 or table.shape[1] <= 1:
    return 0.0
  nzx, nzy = np.nonzero(table)
  nz = table[nzx, nzy].astype(np.float64)
  total = float(table.sum())
  pi, pj = table.sum(axis=1), table.sum(axis=0)
  log_outer = -np.log((pi[nzx] * pj[nzy]).astype(np.float64)) + math.log(pi.sum()) + \
      math.log(pj.sum())
  mi = (nz / total) * (np.log(nz) - math.log(total)) + (nz / total) * log_outer
  mi = np.where(np.abs(mi) < np.finfo(np.float64).eps, 0.0, mi)
  return float(max(mi.sum(), 0.0))


def expected_mutual_info(table: np.ndarray, max_terms: int = 1 << 22) -> float:
  """E[MI] under the permutation model (hypergeometric), as sklearn's
  `expected_mutual_information`, vectorised over (i, j, n_ij) in chunks of max_terms.

  Only n_ij within t = sqrt(400 min(a_i, b_j)) of the mean a_i b_j / N are summed: by Hoeffding's
  bound for sampling without replacement the hypergeometric probability of any n_ij outside is
  below exp(-800), which is 0.0 in float64, so sklearn's exact sum adds exactly zero for them.
  """
  a, b = table.sum(axis=1).astype(np.int64), table.sum(axis=0).astype(np.int64)
  if a.size <= 1 or b.size <= 1:
    return 0.0
  n = int(a.sum())
  ai, bj = np.repeat(a, b.size), np.tile(b, a.size)
  lo = np.maximum(1, ai - n + bj)
  hi = np.minimum(ai, bj)
  mean = ai.astype(np.float64) * bj / n
  half = np.sqrt(400.0 * np.minimum(ai, bj))
  lo = np.maximum(lo, np.floor(mean - half).astype(np.int64))
  hi = np.minimum(hi, np.ceil(mean + half).astype(np.int64))
  length = np.maximum(hi - lo + 1, 0)
  # Per-pair constants of sklearn's log term3: gammaln of the margins minus gammaln(N + 1).
  const = gammaln(ai + 1) + gammaln(bj + 1) + gammaln(n - ai + 1) + gammaln(n - bj + 1) - \
      gammaln(n + 1)
  log_ab = np.log(ai) + np.log(bj)
  emi = 0.0
  ends = np.cumsum(length)
  start_pair = 0
  while start_pair < len(length):
    # Pairs [start_pair, stop) whose terms fit in one chunk (at least one pair).
    base = ends[start_pair - 1] if start_pair else 0
    stop = max(int(np.searchsorted(ends, base + max_terms, side="right")), start_pair + 1)
    sl = slice(start_pair, stop)
    lens = length[sl]
    pair = np.repeat(np.arange(start_pair, stop), lens)
    offset = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    nij = (lo[pair] + offset).astype(np.float64)
    api, bpj = ai[pair], bj[pair]
    gln = const[pair] - gammaln(nij + 1) - gammaln(api - nij + 1) - gammaln(bpj - nij + 1) - \
        gammaln(n - api - bpj + nij + 1)
    term2 = math.log(n) + np.log(nij) - log_ab[pair]
    emi += float(np.sum((nij / n) * term2 * np.exp(gln)))
    start_pair = stop
  return emi


def _both_trivial(table: np.ndarray) -> bool:
  return table.shape[0] == table.shape[1] and table.shape[0] <= 1


def nmi(a: np.ndarray, b: np.ndarray) -> float:
  """Normalised mutual information with arithmetic averaging (sklearn's default)."""
  table = contingency(a, b)
  if _both_trivial(table):
    return 1.0
  mi = _mutual_info(table)
  if mi == 0:
    return 0.0
  return float(mi / np.mean([_entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))]))


def adjusted_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
  """Adjusted mutual information, arithmetic averaging: sklearn's `adjusted_mutual_info_score`."""
  table = contingency(a, b)
  if _both_trivial(table):
    return 1.0
  if table.shape[0] == 1 or table.shape[1] == 1:
    return 0.0
  mi = _mutual_info(table)
  emi = expected_mutual_info(table)
  normalizer = float(np.mean([_entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))]))
  eps = np.finfo(np.float64).eps
  den = normalizer - emi
  den = min(den, -eps) if den < 0 else max(den, eps)
  num = mi - emi
  num = min(num, -eps) if num < 0 else max(num, eps)
  return float(num / den)
