"""Change-detection metrics from a confusion matrix accumulated on device.

Rows of the confusion matrix are the truth, columns the prediction; class 1 is "change".
MSE and MAE are those of the predicted class-index map against the true one (for binary maps
both equal the error rate, 1 - OA); they are reported because CDCluster's Tables 1-2 list them.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
