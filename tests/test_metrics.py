"""Confusion matrices and metrics against scikit-learn, accumulation, masking, jit; NMI and
adjusted mutual information against scikit-learn."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from jaxcd import metrics

IGNORE = 255


def _maps(seed: int, num_classes: int, shape=(4, 64, 64), ignore_frac: float = 0.1):
  """Random prediction and label maps; the label has `ignore_frac` ignore pixels, and the
  prediction agrees with it on about 70% of the pixels so that the scores are not trivial."""
  rng = np.random.default_rng(seed)
  label = rng.integers(0, num_classes, shape).astype(np.uint8)
  pred = np.where(rng.random(shape) < 0.7, label, rng.integers(0, num_classes, shape))
  label[rng.random(shape) < ignore_frac] = IGNORE
  return pred.astype(np.int32), label


def _sklearn(pred, label, num_classes: int) -> dict:
  keep = label != IGNORE
  y, p = label[keep].astype(int), pred[keep].astype(int)
  labels = list(range(num_classes))
  avg = "binary" if num_classes == 2 else "macro"
  kw = dict(labels=labels, average=avg, zero_division=0)
  if num_classes == 2:
    specificity = skm.recall_score(y, p, pos_label=0, average="binary", zero_division=0)
  else:  # macro average of each class's true-negative rate (one-vs-rest)
    specificity = np.mean([skm.recall_score(y != c, p != c, zero_division=0) for c in labels])
  return dict(
      cm=skm.confusion_matrix(y, p, labels=labels),
      precision=skm.precision_score(y, p, **kw), recall=skm.recall_score(y, p, **kw),
      f1=skm.f1_score(y, p, **kw), iou=skm.jaccard_score(y, p, **kw),
      miou=skm.jaccard_score(y, p, labels=labels, average="macro", zero_division=0),
      oa=skm.accuracy_score(y, p), kappa=skm.cohen_kappa_score(y, p, labels=labels),
      specificity=specificity,
      per_class_f1=skm.f1_score(y, p, labels=labels, average=None, zero_division=0),
      mse=skm.mean_squared_error(y, p), mae=skm.mean_absolute_error(y, p))


@pytest.mark.parametrize("num_classes,seed", [(2, 0), (2, 1), (3, 2)])
def test_against_sklearn(num_classes, seed):
  pred, label = _maps(seed, num_classes)
  cm = metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(label), num_classes, IGNORE)
  ref = _sklearn(pred, label, num_classes)
  np.testing.assert_array_equal(np.asarray(cm), ref["cm"])
  m = metrics.metrics_from_confusion(cm)
  for key in ("precision", "recall", "f1", "iou", "miou", "oa", "kappa", "specificity"):
    assert m[key] == pytest.approx(ref[key], abs=1e-9), key
  np.testing.assert_allclose(m["per_class_f1"], ref["per_class_f1"], atol=1e-9)
  assert m["pixels"] == int((label != IGNORE).sum())
  # MSE/MAE of the class-index maps (the 0/1 maps when binary)
  assert m["mse"] == pytest.approx(ref["mse"], abs=1e-9)
  assert m["mae"] == pytest.approx(ref["mae"], abs=1e-9)


def test_ignore_pixels_do_not_count():
  pred, label = _maps(3, 2)
  # Whatever is predicted where the label is 255 must not change the matrix.
  other = pred.copy()
  other[label == IGNORE] = 1 - other[label == IGNORE]
  a = metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(label))
  b = metrics.confusion_matrix(jnp.asarray(other), jnp.asarray(label))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(a.sum()) == int((label != IGNORE).sum())


@pytest.mark.parametrize("pred_value", [0, 1])
def test_no_positive_labels_gives_zeros_not_nan(pred_value):
  label = np.zeros((2, 16, 16), np.uint8)
  label[0, :2] = IGNORE
  pred = np.full(label.shape, pred_value, np.int32)
  m = metrics.metrics_from_confusion(metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(label)))
  for key, value in m.items():
    if isinstance(value, float):
      assert np.isfinite(value), key
  assert m["precision"] == m["recall"] == m["f1"] == m["iou"] == 0.0
  ref = _sklearn(pred, label, 2)
  assert m["kappa"] == pytest.approx(ref["kappa"] if np.isfinite(ref["kappa"]) else 0.0)
  assert m["oa"] == pytest.approx(ref["oa"]) and m["specificity"] == pytest.approx(ref["specificity"])


def test_all_ignored_gives_zeros():
  label = np.full((1, 8, 8), IGNORE, np.uint8)
  m = metrics.metrics_from_confusion(
      metrics.confusion_matrix(jnp.zeros((1, 8, 8), jnp.int32), jnp.asarray(label)))
  assert m["pixels"] == 0
  assert all(v == 0.0 for v in m.values() if isinstance(v, float))


@pytest.mark.parametrize("safe", [None, 3000])
def test_accumulator_equals_one_big_matrix(monkeypatch, safe):
  if safe is not None:
    # Forces the device total to be flushed to the int64 host total every couple of batches.
    monkeypatch.setattr(metrics, "_INT32_SAFE", safe)
  batches = [_maps(10 + i, 3, shape=(1, 32, 32)) for i in range(7)]
  acc = metrics.ConfusionAccumulator(3)
  for pred, label in batches:
    acc.add(metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(label), 3), label.size)
  all_pred = np.concatenate([p for p, _ in batches])
  all_label = np.concatenate([l for _, l in batches])
  big = metrics.confusion_matrix(jnp.asarray(all_pred), jnp.asarray(all_label), 3)
  result = acc.result()
  assert result.dtype == np.int64
  np.testing.assert_array_equal(result, np.asarray(big))
  np.testing.assert_array_equal(result, _sklearn(all_pred, all_label, 3)["cm"])
  np.testing.assert_array_equal(acc.result(), result)  # result() does not reset or double count


def test_accumulator_flush_keeps_counts_beyond_int32():
  # The host total is int64: counts past 2**31 survive when every flush stays below the bound.
  acc = metrics.ConfusionAccumulator(2)
  chunk = jnp.asarray([[2**30, 0], [0, 0]], jnp.int32)
  for _ in range(4):
    acc.add(chunk, 2**30)
  assert acc.result()[0, 0] == 2**32


def test_valid_masks_padded_examples():
  pred, label = _maps(4, 2, shape=(4, 16, 16))
  valid = np.array([True, True, False, True])
  cm = metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(label),
                                valid=jnp.asarray(valid)[:, None, None])
  ref = _sklearn(pred[valid], label[valid], 2)["cm"]
  np.testing.assert_array_equal(np.asarray(cm), ref)


def test_jit_and_sharded_batch():
  pred, label = _maps(5, 2, shape=(8, 16, 16))
  fn = jax.jit(metrics.confusion_matrix, static_argnums=(2, 3))
  cm = fn(jnp.asarray(pred), jnp.asarray(label), 2, IGNORE)
  np.testing.assert_array_equal(np.asarray(cm), _sklearn(pred, label, 2)["cm"])
  # Under a mesh the sum covers every device's share of the batch.
  n = min(jax.device_count(), 8)
  mesh = jax.make_mesh((n,), ("data",), devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))
  sh = jax.sharding.NamedSharding(mesh, jax.P("data"))
  cm_sharded = fn(jax.device_put(jnp.asarray(pred), sh), jax.device_put(jnp.asarray(label), sh),
                  2, IGNORE)
  np.testing.assert_array_equal(np.asarray(cm_sharded), np.asarray(cm))


# --- NMI / AMI -------------------------------------------------------------------------------

@pytest.mark.parametrize("n,ka,kb", [(40, 2, 2), (300, 2, 20), (500, 5, 7), (2000, 30, 3),
                                     (1000, 50, 50), (60, 1, 4), (25, 25, 25)])
def test_nmi_and_ami_match_sklearn(n, ka, kb):
  rng = np.random.default_rng(n + ka + kb)
  a = rng.integers(0, ka, n)
  b = rng.integers(0, kb, n)
  b[: n // 2] = a[: n // 2] % kb  # partly dependent labelings
  assert metrics.nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)
  assert metrics.adjusted_mutual_info(a, b) == pytest.approx(adjusted_mutual_info_score(a, b),
                                                             abs=1e-10)


def test_mutual_info_edge_cases_and_arbitrary_label_values():
  a = np.array([0, 0, 1, 1, 2, 2])
  relabelled = np.array([255, 255, 7, 7, -3, -3])  # a permutation of names: a perfect match
  assert metrics.nmi(a, relabelled) == pytest.approx(1.0)
  assert metrics.adjusted_mutual_info(a, relabelled) == pytest.approx(1.0)
  for x, y in [(np.zeros(5, int), np.zeros(5, int)), (np.zeros(5, int), np.arange(5)),
               (np.arange(4), np.arange(4)), (np.array([], int), np.array([], int))]:
    assert metrics.nmi(x, y) == pytest.approx(normalized_mutual_info_score(x, y))
    assert metrics.adjusted_mutual_info(x, y) == pytest.approx(adjusted_mutual_info_score(x, y))
  # Label maps (any shape) flatten; many pixels against a 2-class ground truth still match.
  rng = np.random.default_rng(0)
  gt = (rng.random((4, 64, 64)) < 0.1).astype(np.uint8)
  pl = rng.integers(0, 40, (4, 64, 64)).astype(np.uint8)
  pl[gt == 1] = rng.integers(0, 5, int(gt.sum()))
  assert metrics.adjusted_mutual_info(gt, pl) == pytest.approx(
      adjusted_mutual_info_score(gt.ravel(), pl.ravel()), abs=1e-10)
  # The chunked sum gives the same answer with tiny chunks.
  table = metrics.contingency(gt, pl)
  assert metrics.expected_mutual_info(table, max_terms=7) == pytest.approx(
      metrics.expected_mutual_info(table), rel=1e-12)
  with pytest.raises(ValueError, match="differ in size"):
    metrics.nmi(np.zeros(3, int), np.zeros(4, int))
