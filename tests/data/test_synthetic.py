"""The embedded synthetic scenes: contract, determinism, and what is (and is not) labelled change."""
import pickle

import numpy as np
import pytest
from PIL import Image

from jaxcd.config_base import base_config
from jaxcd.data import make_source, source_from_config
from jaxcd.data.synthetic import SyntheticSource, generate_pair, save_examples
from jaxcd.errors import ConfigError


def _equal(r1: dict, r2: dict) -> bool:
  return r1["id"] == r2["id"] and all(np.array_equal(r1[k], r2[k]) for k in ("image_a", "image_b", "label"))


@pytest.fixture(scope="module")
def sample() -> list[dict]:
  src = SyntheticSource("train")
  return [src[i] for i in range(48)]


def test_records_follow_the_contract():
  for size in (64, 96):
    src = SyntheticSource("val", image_size=size, num_val=7)
    assert len(src) == 7
    ids = set()
    for i in range(len(src)):
      rec = src[i]
      assert rec["image_a"].shape == rec["image_b"].shape == (size, size, 3)
      assert rec["image_a"].dtype == rec["image_b"].dtype == rec["label"].dtype == np.uint8
      assert rec["label"].shape == (size, size)
      assert set(np.unique(rec["label"])) <= {0, 1}
      assert rec["image_a"].flags.c_contiguous and rec["image_b"].flags.c_contiguous
      ids.add(rec["id"])
    assert len(ids) == 7
    with pytest.raises(IndexError):
      src[7]
    assert _equal(src[-1], src[6])


def test_deterministic_random_access_and_picklable():
  src = SyntheticSource("train", seed=3)
  late_first = [src[i] for i in (5, 2, 0)]
  fresh = SyntheticSource("train", seed=3)
  for i, rec in zip((5, 2, 0), late_first):
    assert _equal(rec, fresh[i])
  clone = pickle.loads(pickle.dumps(src))
  assert _equal(clone[4], src[4])


def test_cache_returns_the_same_pairs_as_generating():
  cached, uncached = SyntheticSource("train", num_train=6), SyntheticSource("train", num_train=6, cache_mb=0)
  first = cached[2]
  first["image_a"][:] = 0  # a caller writing into its record must not corrupt the cache
  for _ in range(2):
    for i in range(6):
      assert _equal(cached[i], uncached[i])
  assert len(cached._cache) == 6 and not uncached._cache
  assert not pickle.loads(pickle.dumps(cached))._cache


def test_splits_seeds_and_indices_differ():
  base = SyntheticSource("train")[0]
  others = [SyntheticSource("val")[0], SyntheticSource("test")[0], SyntheticSource("train", seed=1)[0],
            SyntheticSource("train")[1]]
  for rec in others:
    assert not np.array_equal(rec["image_a"], base["image_a"])


def test_changed_fraction_in_intended_range(sample):
  frac = np.array([rec["label"].mean() for rec in sample])
  assert 0.03 <= frac.mean() <= 0.15, frac.mean()
  assert (frac > 0).mean() >= 0.7  # most tiles contain some change
  assert frac.max() <= 0.4


def test_nuisance_changes_are_labelled_unchanged(sample):
  # Many unchanged pixels differ strongly between the dates (seasons, shadows, lighting, shift):
  # without them CVA would not be fooled.
  big = 60  # mean absolute difference over bands, in 0-255 units
  counts = []
  for rec in sample:
    d = np.abs(rec["image_b"].astype(np.int16) - rec["image_a"].astype(np.int16)).mean(-1)
    counts.append(((d > big) & (rec["label"] == 0)).sum())
  counts = np.array(counts)
  assert (counts > 0).mean() >= 0.8
  unchanged = sum((rec["label"] == 0).sum() for rec in sample)
  assert counts.sum() / unchanged >= 0.03


def _mean_abs_diff(records: list[dict]) -> tuple[float, float]:
  """Mean |B - A| (over bands, 0-255 units) on changed and on unchanged pixels."""
  changed, unchanged = [], []
  for rec in records:
    d = np.abs(rec["image_b"].astype(np.int16) - rec["image_a"].astype(np.int16)).mean(-1)
    changed.append(d[rec["label"] == 1])
    unchanged.append(d[rec["label"] == 0])
  return np.concatenate(changed).mean(), np.concatenate(unchanged).mean()


def test_labels_mark_buildings_that_appear_or_disappear(sample):
  # With seasons, lighting and shift turned off, what remains of the unchanged pixels' difference
  # is grain, shadows and roof shading; the labelled pixels (a roof on one date only) stand out.
  clean = SyntheticSource("train", nuisance=0.0, max_shift=0)
  changed, unchanged = _mean_abs_diff([clean[i] for i in range(24)])
  assert changed >= 2.5 * unchanged, (changed, unchanged)
  changed, unchanged = _mean_abs_diff(sample)  # still more different with the nuisances on
  assert changed >= 1.2 * unchanged, (changed, unchanged)
  # Footprints are solid blobs (houses), not scattered pixels: most changed pixels have all four
  # neighbours changed too.
  interior = total = 0
  for rec in sample:
    lab = np.pad(rec["label"], 1)
    core = lab[1:-1, 1:-1] == 1
    nb = (lab[:-2, 1:-1] & lab[2:, 1:-1] & lab[1:-1, :-2] & lab[1:-1, 2:]) == 1
    interior += (core & nb).sum()
    total += core.sum()
  assert interior / total >= 0.6


def test_misregistration_shifts_b_only_and_labels_follow_a():
  # max_shift 0..2 share the world, so A and the label are identical and B is the same picture
  # seen through a window moved by at most 2 pixels.
  shifts = []
  for index in range(12):
    a0, b0, l0 = generate_pair(np.random.default_rng([0, 0, index]), 64, max_shift=0)
    a2, b2, l2 = generate_pair(np.random.default_rng([0, 0, index]), 64, max_shift=2)
    assert np.array_equal(a0, a2) and np.array_equal(l0, l2)
    found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
             if np.array_equal(b2[max(-dy, 0):64 - max(dy, 0), max(-dx, 0):64 - max(dx, 0)],
                               b0[max(dy, 0):64 + min(dy, 0), max(dx, 0):64 + min(dx, 0)])]
    assert len(found) == 1, found
    shifts.append(found[0])
  assert any(s != (0, 0) for s in shifts)


def test_registry_and_config_build_the_source():
  data = base_config().data
  assert data.name == "synthetic"
  src = source_from_config(data, "val")
  assert isinstance(src, SyntheticSource) and len(src) == 100
  assert _equal(src[0], make_source("synthetic", "val", data_dir="", num_bands=3)[0])


@pytest.mark.parametrize("kwargs, field", [
    (dict(num_bands=4), "config.data.num_bands"),
    (dict(image_size=8), "config.data.image_size"),
    (dict(num_train=-1), "config.data.num_train"),
    (dict(max_shift=20), "config.data.max_shift"),
])
def test_bad_options_name_the_field(kwargs, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as e:
    SyntheticSource("train", **kwargs)
  assert "\n" not in str(e.value)


def test_save_examples_writes_a_grid(tmp_path):
  path = save_examples(SyntheticSource("test", num_test=3), tmp_path / "grid.png", n=5)
  with Image.open(path) as im:
    w, h = im.size
  assert w > 200 and h > 150 and h < 2 * w  # three rows of three panels, not five
