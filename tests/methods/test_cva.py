"""CVA + Otsu: the threshold against a brute-force reference, CVA on simple pairs, and its score
on the synthetic scenes (an acceptance figure: it must be fooled, F1 <= 0.5)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from jaxcd.methods.cva import cva_magnitude, cva_predict, otsu_threshold
from jaxcd.trainer import train_and_evaluate

REPO = Path(__file__).resolve().parents[2]


def _brute_force_otsu(values: np.ndarray, bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Between-class variance of the raw values for every candidate threshold (the bin edges)."""
  edges = np.linspace(values.min(), values.max(), bins + 1)[1:-1]
  scores = []
  for t in edges:
    low, high = values[values < t], values[values >= t]
    if len(low) == 0 or len(high) == 0:
      scores.append(0.0)
      continue
    w0, w1 = len(low) / len(values), len(high) / len(values)
    scores.append(w0 * w1 * (low.mean() - high.mean()) ** 2)
  return edges, np.array(scores)


def test_otsu_splits_a_bimodal_histogram_between_the_modes():
  rng = np.random.default_rng(0)
  low, high = rng.normal(50, 5, 3000), rng.normal(200, 8, 800)
  t = otsu_threshold(np.concatenate([low, high]))
  assert low.max() < t <= high.min()


@pytest.mark.parametrize("seed", range(4))
def test_otsu_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  # Skewed, three-component mixtures: Otsu's optimum is not simply the midpoint of two modes.
  parts = [rng.gamma(2.0, 3.0, rng.integers(500, 4000)), rng.normal(25, 4, rng.integers(100, 1500)),
           rng.normal(rng.uniform(30, 60), 6, rng.integers(50, 800))]
  values = np.concatenate(parts)
  edges, scores = _brute_force_otsu(values)
  t = otsu_threshold(values)
  # The histogram approximates the class means by bin centres: the chosen threshold must be a
  # candidate edge whose raw between-class variance is (almost) the best one.
  i = int(np.argmin(np.abs(edges - t)))
  assert abs(edges[i] - t) < 1e-9 * max(1.0, abs(t))
  assert scores[i] >= 0.999 * scores.max()
  assert abs(t - edges[np.argmax(scores)]) <= 2 * (values.max() - values.min()) / 256


def test_otsu_on_constant_values_finds_no_upper_class():
  t = otsu_threshold(np.full(100, 7.0))
  assert not (np.full(100, 7.0) >= t).any()


def test_cva_magnitude_is_the_norm_of_the_difference():
  a = np.zeros((1, 1, 3), np.uint8)
  b = np.array([[[3, 4, 0]]], np.uint8)
  assert cva_magnitude(a, b, normalise=False)[0, 0] == pytest.approx(5.0)
  # Standardised per image and band, a global gain and offset is no change at all.
  rng = np.random.default_rng(1)
  a = rng.integers(40, 160, (32, 32, 3)).astype(np.uint8)
  b = (a.astype(np.float32) * np.float32([1.3, 0.8, 1.1]) + 20).astype(np.uint8)
  assert cva_magnitude(a, b).max() < 0.05
  assert cva_magnitude(a, b, normalise=False).mean() > 10


@pytest.mark.parametrize("normalise", [True, False])
def test_cva_finds_a_bright_square_exactly(normalise):
  # Two fields with a mild texture; on the second date a bright square straddles their border.
  rng = np.random.default_rng(2)
  a = np.full((64, 64, 3), 70, np.int32)
  a[:, 32:] = (120, 140, 90)
  a = (a + rng.integers(-5, 6, a.shape)).astype(np.uint8)
  b = a.copy()
  b[20:36, 24:40] = 255
  truth = np.zeros((64, 64), np.uint8)
  truth[20:36, 24:40] = 1
  pred = cva_predict(a, b, normalise)
  assert pred.dtype == np.uint8
  np.testing.assert_array_equal(pred, truth)


def _cva_config():
  spec = importlib.util.spec_from_file_location("cva_config", REPO / "configs" / "cva.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.progress = False
  return config


@pytest.mark.slow
def test_cva_is_fooled_by_synthetic_nuisances(tmp_path):
  # Acceptance figure: on the default embedded data CVA scores test F1 <= 0.5.
  config = _cva_config()
  assert config.method == "cva" and config.data.name == "synthetic"
  final = train_and_evaluate(config, str(tmp_path))
  assert set(final) == {"val", "test"}
  assert 0.0 < final["test"]["f1"] <= 0.5, final["test"]["f1"]
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["split"] for r in rows] == ["val", "test"]
  for row in rows:
    assert row["step"] == 0
    for key in ("f1", "iou", "precision", "recall", "oa", "kappa"):
      assert key in row
  assert rows[1]["f1"] == pytest.approx(final["test"]["f1"])
  # 200 test pairs of 64x64 pixels, each pixel counted once.
  assert np.sum(rows[1]["confusion_matrix"]) == 200 * 64 * 64
