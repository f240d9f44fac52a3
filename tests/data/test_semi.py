"""Semi-supervised data: labeled-fraction splits (determinism, disjointness, stored and reused),
the stage-2 unlabeled pool, the no-change companions, and two-stream batches."""
import dataclasses
import json

import numpy as np
import pytest

from jaxcd.data import pipeline, semi
from jaxcd.data.augment import FlipRot, StrongAugment, make_augment
from jaxcd.errors import ConfigError, DataError


class Src:
  """n records of 8x8x3 with a constant image value per record; labels 1 on the first row."""

  def __init__(self, n: int, named: bool = True):
    self.n = n
    if named:
      self.ids = [f"p{i:03d}" for i in range(n)]

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    rng = np.random.default_rng(i)
    lab = np.zeros((8, 8), np.uint8)
    lab[0] = 1
    return {"image_a": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
            "image_b": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "label": lab,
            "id": f"p{i:03d}"}


@pytest.mark.parametrize("n,fraction", [(98, 0.1), (99, 0.05), (1000, 0.4), (7, 1.0)])
def test_split_is_deterministic_disjoint_and_complete(n, fraction):
  lab, unl = semi.draw_labeled(n, fraction, seed=3)
  assert len(lab) == round(fraction * n)
  assert len(np.intersect1d(lab, unl)) == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([lab, unl])), np.arange(n))
  assert np.all(np.diff(lab) > 0) and np.all(np.diff(unl) > 0)  # sorted
  again = semi.draw_labeled(n, fraction, seed=3)
  np.testing.assert_array_equal(lab, again[0])
  if 0 < len(lab) < n:
    assert not np.array_equal(lab, semi.draw_labeled(n, fraction, seed=4)[0])


def test_fraction_errors_name_the_field():
  with pytest.raises(ConfigError, match="config.rcl.label_fraction must be in"):
    semi.draw_labeled(10, 0.0, 0)
  with pytest.raises(ConfigError, match="config.rcl.label_fraction must be in"):
    semi.draw_labeled(10, 1.5, 0)
  with pytest.raises(ConfigError, match="config.rcl.label_fraction=0.01 labels none of the 20 "
                                        "training pairs"):
    semi.draw_labeled(20, 0.01, 0)


def test_split_files_are_written_once_and_reused(tmp_path):
  src = Src(20)
  lab, unl = semi.labeled_split(str(tmp_path), src, 0.25, seed=1)
  d = tmp_path / "splits"
  lines = (d / "labeled.txt").read_text().splitlines()
  assert lines == [f"{i}\tp{i:03d}" for i in lab]
  np.testing.assert_array_equal(semi.read_index_file(d / "unlabeled.txt"), unl)
  assert json.loads((d / "split.json").read_text())["labeled"] == 5
  # Reused as stored, even if the drawing code changed: rewrite the file with another choice.
  other = np.array([0, 1, 2, 3, 4])
  semi.write_index_file(d / "labeled.txt", other, src.ids)
  semi.write_index_file(d / "unlabeled.txt", np.arange(5, 20), src.ids)
  lab2, unl2 = semi.labeled_split(str(tmp_path), src, 0.25, seed=1)
  np.testing.assert_array_equal(lab2, other)
  np.testing.assert_array_equal(unl2, np.arange(5, 20))
  with pytest.raises(ConfigError, match="label_fraction=0.25.*label_fraction=0.5"):
    semi.labeled_split(str(tmp_path), src, 0.5, seed=1)
  # A source whose ids no longer match the stored names.
  renamed = Src(20)
  renamed.ids = [f"q{i}" for i in range(20)]
  with pytest.raises(DataError, match="names other pairs"):
    semi.labeled_split(str(tmp_path), renamed, 0.25, seed=1)
  # Without cheap ids the id column stays empty; not writing leaves no files.
  lab3, _ = semi.labeled_split(str(tmp_path / "x"), Src(20, named=False), 0.25, 1, write=False)
  np.testing.assert_array_equal(lab3, lab)
  assert not (tmp_path / "x").exists()


def test_unlabeled_pool_never_shows_ground_truth():
  src = Src(6)
  reliable = np.array([True, False, True, False])
  pseudo = np.stack([np.full((8, 8), 7, np.uint8), np.full((8, 8), 9, np.uint8)])
  pool = semi.UnlabeledPool(src, [5, 1, 2, 0], reliable, pseudo)
  recs = [pool[i] for i in range(4)]
  assert [r["kind"] for r in recs] == ["reliable", "unreliable", "reliable", "unreliable"]
  assert [r["id"] for r in recs] == ["p005", "p001", "p002", "p000"]
  assert np.all(recs[0]["label"] == 7) and np.all(recs[2]["label"] == 9)
  assert np.all(recs[1]["label"] == 0) and np.all(recs[3]["label"] == 0)
  with pytest.raises(ValueError, match="pseudo-labels for 2 reliable"):
    semi.UnlabeledPool(src, [0, 1, 2, 3], reliable, pseudo[:1])


def test_unreliable_pairs_become_one_date_with_zero_label():
  rec = {**Src(1)[0], "kind": semi.UNRELIABLE}
  aug = semi.RclAugment(make_augment("none"))
  seen = set()
  for s in range(20):
    out = aug(rec, np.random.default_rng(s))
    np.testing.assert_array_equal(out["image_a"], out["image_b"])
    assert not out["label"].any() and "kind" not in out
    seen.add("a" if np.array_equal(out["image_a"], rec["image_a"]) else "b")
  assert seen == {"a", "b"}


def test_companions_are_aligned_no_change_pairs():
  rec = {**Src(1)[0], "kind": semi.LABELED}
  # "same": the companion is (X, X) for X one of the fed (augmented) dates.
  out = semi.RclAugment(FlipRot(), None, "same")(rec, np.random.default_rng(0))
  assert out["image_a"].shape == (8, 8, 6)
  pa, ca = semi.split_companion(out["image_a"], 3)
  pb, cb = semi.split_companion(out["image_b"], 3)
  np.testing.assert_array_equal(ca, cb)
  assert np.array_equal(ca, pa) or np.array_equal(ca, pb)
  # "perturb" with perturbations of strength 0: the companion is (A, A) of the flipped A.
  still = StrongAugment(brightness=0, contrast=0, saturation=0, hue=0, p_gray=0, p_blur=0,
                        p_cutout=0)
  for s in range(8):
    out = semi.RclAugment(FlipRot(), still, "perturb")(rec, np.random.default_rng(s))
    pa, ca = semi.split_companion(out["image_a"], 3)
    _, cb = semi.split_companion(out["image_b"], 3)
    np.testing.assert_array_equal(ca, pa)
    np.testing.assert_array_equal(cb, pa)
  # Real perturbations: the two companion images differ in colour, never in a shared cutout.
  a, b = semi.perturbed_pair(rec["image_a"], dataclasses.replace(StrongAugment(), p_cutout=1.0,
                                                                 p_jitter=1.0),
                             np.random.default_rng(1))
  assert a.shape == b.shape == (8, 8, 3) and not np.array_equal(a, b)
  with pytest.raises(ConfigError, match="config.rcl.nochange"):
    semi.RclAugment(FlipRot(), None, "twins")


def test_reliable_pairs_get_the_strong_augmentation_labeled_ones_do_not():
  src = Src(2)
  strong = dataclasses.replace(StrongAugment(), p_jitter=1.0, p_cutout=1.0)
  aug = semi.RclAugment(make_augment("none"), strong, "")
  rel = aug({**src[0], "kind": semi.RELIABLE}, np.random.default_rng(0))
  lab = aug({**src[0], "kind": semi.LABELED}, np.random.default_rng(0))
  assert not np.array_equal(rel["image_a"], src[0]["image_a"]) and (rel["label"] == 255).any()
  np.testing.assert_array_equal(lab["image_a"], src[0]["image_a"])
  np.testing.assert_array_equal(lab["label"], src[0]["label"])


def test_two_streams_are_process_invariant_and_checkpointable():
  src = Src(24)
  aug = semi.RclAugment(FlipRot(), StrongAugment(), "perturb")

  def streams(pidx, pcount):
    mk = lambda s, bs, stream: iter(pipeline.train_dataset(
        pipeline.Subset(src, s, semi.LABELED if stream == 0 else semi.RELIABLE),
        global_batch_size=bs, seed=semi.stream_seed(0, 2, stream), augment=aug,
        process_index=pidx, process_count=pcount))
    return {"labeled": mk(np.arange(6), 4, 0), "unlabeled": mk(np.arange(6, 24), 4, 1)}

  # Each stream is process-count invariant.
  one = streams(0, 1)
  two = [streams(0, 2), streams(1, 2)]
  for _ in range(3):
    for name in ("labeled", "unlabeled"):
      b1 = next(one[name])
      parts = [next(p[name]) for p in two]
      for key in ("image_a", "image_b", "label"):
        np.testing.assert_array_equal(
            b1[key], np.concatenate([p[key] for p in parts]), err_msg=f"{name}/{key}")

  # Streams joins them on the host, labeled first, and checkpoints both (bytes, as grain's
  # orbax handler stores an iterator that is not its own).
  joined, ref = pipeline.Streams(streams(0, 1)), streams(0, 1)
  b, lab, unl = next(joined), next(ref["labeled"]), next(ref["unlabeled"])
  for key in ("image_a", "image_b", "label"):
    np.testing.assert_array_equal(b[key], np.concatenate([lab[key], unl[key]]), err_msg=key)
  state = joined.get_state()
  assert isinstance(state, bytes) and set(json.loads(state)) == {"labeled", "unlabeled"}
  want = next(joined)
  fresh = pipeline.Streams(streams(0, 1))
  fresh.set_state(state)
  got = next(fresh)
  for key in want:
    np.testing.assert_array_equal(want[key], got[key])
  with pytest.raises(DataError, match="data streams"):
    pipeline.Streams({"labeled": streams(0, 1)["labeled"]}).set_state(state)
  np.testing.assert_array_equal(semi.tile_indices(np.array([3, 5]), 5), [3, 5, 3, 5, 3, 5])


def test_streams_lay_out_each_devices_share_and_split_back_per_device():
  """2 processes x 2 devices, 4 labeled and 2 unlabeled pairs per process: every device holds 2
  labeled then 1 unlabeled pair, and `parallel.split_streams` on the global batch gives each
  stream's global batch (process 0's rows, then process 1's) without crossing devices."""
  import jax.numpy as jnp
  from jaxcd import parallel
  # Row values: 100 x stream + 10 x process + index within the process's batch.
  local = {p: {"labeled": iter([{"x": 100 + 10 * p + np.arange(4)}]),
               "unlabeled": iter([{"x": 200 + 10 * p + np.arange(2)}])} for p in (0, 1)}
  host = [next(pipeline.Streams(local[p], groups=2))["x"] for p in (0, 1)]
  assert host[0].tolist() == [100, 101, 200, 102, 103, 201]
  global_rows = np.concatenate(host)
  devices = global_rows.reshape(4, 3)  # a 1-D data mesh: device d holds rows 3d .. 3d+2
  assert all(sorted(d // 100 for d in rows) == [1, 1, 2] for rows in devices.tolist())
  lab, unl = parallel.split_streams(jnp.asarray(global_rows), (8, 4), groups=4)
  assert lab.tolist() == [100, 101, 102, 103, 110, 111, 112, 113]
  assert unl.tolist() == [200, 201, 210, 211]
  # One group is the old layout, every stream whole.
  one = {"labeled": iter([{"x": np.arange(4)}]), "unlabeled": iter([{"x": np.arange(2) + 9}])}
  assert next(pipeline.Streams(one))["x"].tolist() == [0, 1, 2, 3, 9, 10]
  odd = {"labeled": iter([{"x": np.arange(3)}]), "unlabeled": iter([{"x": np.arange(2)}])}
  with pytest.raises(ConfigError, match="'labeled' stream's 3 pairs per process"):
    next(pipeline.Streams(odd, groups=2))
