"""CDCluster training: warm-up selection, the cluster-to-change map, pseudo-label sources, head
re-initialisation, and a tiny end-to-end run (metrics rows, checkpointed clustering state, resume
without re-clustering)."""
import itertools
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import set_fields, strict_device_to_host
from jaxcd import checkpointing, clustering, trainer, writers
from jaxcd.config_base import sibling
from jaxcd.data import pipeline, source_from_config
from jaxcd.errors import ConfigError
from jaxcd.methods import cdcluster as cdc
from jaxcd import optim, state as state_lib
from jaxcd.data.normalize import make_normalizer

REPO = Path(__file__).resolve().parents[2]
K = 5
EVAL_KEYS = {"step", "split", "phase", "f1", "oa", "kappa", "specificity", "mse",
             "confusion_matrix", "iou", "precision", "recall"}


def tiny_config(**extra):
  c = sibling(str(REPO / "configs" / "x.py"), "cdcluster")
  c.data.update(image_size=64, num_train=32, num_val=8, num_test=8)
  c.input.batch_size, c.input.eval_batch_size = 4, 8
  c.model.num_clusters = K
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every = 12, 4, 2, 1
  c.keep_checkpoints = 10
  c.progress = False
  c.cdcluster.update(warmup_fraction=0.5, warmup_steps=4, cluster_every_steps=4,
                     max_samples=3000, faiss_threads=1)
  set_fields(c, extra)
  return c


# --- units -------------------------------------------------------------------------------------

def _label_source(fractions, size=10):
  """Records whose label has round(f * size^2) changed pixels."""
  out = []
  for i, f in enumerate(fractions):
    lab = np.zeros(size * size, np.uint8)
    lab[:int(round(f * size * size))] = 1
    out.append({"label": lab.reshape(size, size), "id": str(i)})
  return out


def test_warmup_indices_draw_only_tiles_with_enough_change():
  rng = np.random.default_rng(0)
  fracs = rng.choice([0.0, 0.01, 0.02, 0.05, 0.2], 200)
  src = _label_source(fracs)
  idx = cdc.warmup_indices(src, 0.3, 0.03, seed=1)
  assert len(idx) == 60 and len(set(idx.tolist())) == 60
  assert np.all(fracs[idx] >= 0.03)
  np.testing.assert_array_equal(idx, cdc.warmup_indices(src, 0.3, 0.03, seed=1))  # deterministic
  assert not np.array_equal(idx, cdc.warmup_indices(src, 0.3, 0.03, seed=2))
  # Filter off: unchanged tiles can be drawn too.
  assert np.any(fracs[cdc.warmup_indices(src, 0.5, 0.0, seed=1)] < 0.03)
  # Fewer eligible tiles than wanted: all of them.
  few = cdc.warmup_indices(src, 0.9, 0.1, seed=0)
  np.testing.assert_array_equal(few, np.flatnonzero(fracs >= 0.1))
  with pytest.raises(ConfigError, match="config.cdcluster.min_change"):
    cdc.warmup_indices(_label_source([0.0, 0.01]), 0.5, 0.03, seed=0)


def test_change_fraction_ignores_255():
  lab = np.array([[1, 0], [255, 255]], np.uint8)
  assert cdc.change_fraction(lab) == 0.5


def _f1(counts, chosen):
  tp = counts[chosen, 1].sum()
  fp = counts[chosen, 0].sum()
  fn = counts[:, 1].sum() - tp
  return 2 * tp / max(2 * tp + fp + fn, 1)


@pytest.mark.parametrize("seed", range(5))
def test_f1_change_map_is_the_best_subset_of_clusters(seed):
  rng = np.random.default_rng(seed)
  counts = rng.integers(0, 200, (8, 2)) * (rng.random((8, 1)) < 0.8)
  best = max(_f1(counts, np.array(s, bool)) for s in itertools.product([0, 1], repeat=8))
  m = cdc.change_map_from_counts(counts, "f1")
  assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
  assert _f1(counts, m.astype(bool)) == pytest.approx(best)
  assert cdc.f1_of_map(counts, m) == pytest.approx(best)


def test_majority_change_map_and_counts():
  pseudo = np.array([[0, 0, 1, 1, 2, 2, 2, 3]], np.uint8)
  truth = np.array([[0, 1, 1, 1, 0, 0, 1, 255]], np.uint8)
  counts = cdc.cluster_change_counts(pseudo, truth, 4)
  np.testing.assert_array_equal(counts, [[1, 1], [0, 2], [2, 1], [0, 0]])  # pixel 7 ignored
  np.testing.assert_array_equal(cdc.change_map_from_counts(counts, "majority"), [0, 1, 0, 0])
  with pytest.raises(ConfigError, match="change_rule"):
    cdc.change_map_from_counts(counts, "vote")


def test_pseudo_labels_follow_the_joint_augmentation():
  rng = np.random.default_rng(0)
  src = [{"image_a": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
          "image_b": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
          "label": np.zeros((16, 16), np.uint8), "id": str(i)} for i in range(8)]
  # A pseudo-label that is a function of the pixel: any misalignment after flips/rot90 shows.
  pseudo = np.stack([r["image_a"][..., 0] % 7 for r in src]).astype(np.uint8)
  wrapped = cdc.PseudoLabeled(src, pseudo)
  ds = pipeline.train_dataset(wrapped, global_batch_size=4, seed=3, augment="flip_rot")
  it = iter(ds)
  moved = False
  for _ in range(4):
    b = next(it)
    np.testing.assert_array_equal(b["label"], b["image_a"][..., 0] % 7)
    moved |= not any(np.array_equal(b["image_a"][0], r["image_a"]) for r in src)
  assert moved, "the augmentation never changed an image: the test proves nothing"
  assert len(pipeline.Subset(src, [5, 2])) == 2 and pipeline.Subset(src, [5, 2])[1]["id"] == "2"


def test_reinit_resets_only_the_top_layer_and_its_moments():
  config = tiny_config()
  model = state_lib.build_model(config)
  tx, _ = optim.make_optimizer(config.optim, 10)
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  state = state_lib.create_state(model, tx, (1, 16, 16, 3), 0, mesh)
  # Non-zero Adam moments everywhere, as after some training.
  state = state.replace(opt_state=jax.tree_util.tree_map(
      lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x, state.opt_state))
  sh = jax.tree_util.tree_map(lambda x: x.sharding, state)
  new = cdc.make_reinit(tx, sh)(state, jax.random.key(5))
  flat_old = dict(jax.tree_util.tree_leaves_with_path(state))
  for path, leaf in jax.tree_util.tree_leaves_with_path(new):
    top = cdc._is_top(path)
    old = flat_old[path]
    if top and "opt_state" in jax.tree_util.keystr(path):
      assert np.all(np.asarray(leaf) == 0), jax.tree_util.keystr(path)  # fresh moments
    elif top and jax.tree_util.keystr(path).endswith("['bias']"):
      assert np.all(np.asarray(leaf) == 0)
    elif top:
      assert not np.array_equal(leaf, old)
    else:
      np.testing.assert_array_equal(leaf, old, err_msg=jax.tree_util.keystr(path))
  assert sum(cdc._is_top(p) for p, _ in jax.tree_util.tree_leaves_with_path(new)) == 6


def test_cluster_schedule():
  due = [s for s in range(0, 30) if cdc.clustering_due(s, 4, 10, 24)]
  assert due == [4, 14]  # never at the last step: nothing would train on those labels
  assert [s for s in range(0, 30) if cdc.clustering_due(s, 0, 10, 30)] == [0, 10, 20]
  c = tiny_config()
  assert cdc.cluster_every_steps(c.cdcluster, 1000, 16) == 4
  c.cdcluster.cluster_every_steps = 0
  assert cdc.cluster_every_steps(c.cdcluster, 1000, 16) == 5 * 62


def test_bad_k_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="config.model.num_clusters"):
    trainer.train_and_evaluate(tiny_config(**{"model.num_clusters": 300}), str(tmp_path))


def test_sztaki_config_reads_the_real_tiles():
  c = sibling(str(REPO / "configs" / "x.py"), "cdcluster_sztaki")
  data_dir = REPO / c.data.data_dir
  if not data_dir.is_dir():
    pytest.skip(f"real data absent: {data_dir}")
  from jaxcd.data import source_from_config
  c.data.data_dir = str(data_dir)
  train = source_from_config(c.data, "train")
  assert len(train) == 99 and train[0]["image_a"].shape == (256, 256, 3)
  assert c.input.augment == "flip_rot_crop" and c.input.crop_size == 128
  # the warm-up tiles the 30% default would draw: only tiles with >= 3% change
  idx = cdc.warmup_indices(train, c.cdcluster.warmup_fraction, c.cdcluster.min_change, c.seed)
  assert all(np.mean(train[int(i)]["label"] == 1) >= 0.03 for i in idx)


# --- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("cdcluster"))
  with strict_device_to_host():  # the loop's steps make explicit transfers only
    final = trainer.train_and_evaluate(tiny_config(), workdir)
  return workdir, final


@pytest.mark.slow
def test_rows_of_a_tiny_run(run):
  workdir, final = run
  rows = writers.read_metrics(workdir)
  train = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train] == list(range(1, 13))
  assert [r["phase"] for r in train] == ["warmup"] * 4 + ["cluster"] * 8
  clus = [r for r in rows if r["split"] == "cluster"]
  assert [r["step"] for r in clus] == [4, 8]
  for r in clus:
    assert len(r["cluster_sizes"]) == K and sum(r["cluster_sizes"]) == r["samples"]
    assert min(r["cluster_sizes"]) > 0  # no empty cluster
    assert 0 < r["samples"] <= 3000 and r["seconds"] > 0 and r["num_splits"] >= 0
  assert clus[0]["nmi_prev"] is None and 0.0 <= clus[1]["nmi_prev"] <= 1.0
  val = [r for r in rows if r["split"] == "val"]
  assert [(r["step"], r["phase"]) for r in val] == [(4, "warmup"), (8, "cluster"), (12, "cluster")]
  assert "labeled_f1" not in val[0] and all(0 <= r["labeled_f1"] <= 1 for r in val[1:])
  test = [r for r in rows if r["split"] == "test"]
  assert len(test) == 1
  for r in val + test:
    assert EVAL_KEYS <= set(r), EVAL_KEYS - set(r)
    assert np.sum(r["confusion_matrix"]) == 8 * 64 * 64
  best = max(val, key=lambda r: r["f1"])  # first maximum, as the trainer keeps
  assert (test[0]["step"], test[0]["phase"]) == (best["step"], best["phase"])
  assert final["test"]["f1"] == pytest.approx(test[0]["f1"])


@pytest.mark.slow
def test_evaluate_workdir_matches_the_final_test_row(run):
  workdir, final = run
  from jaxcd import evaluate
  # jaxcd.evaluate (the CLI's function) maps clusters to change through the stored map.
  res = evaluate.evaluate_workdir(tiny_config(), workdir, "test")
  assert res["checkpoint"] == "best" and res["pairs"] == 8
  best = max((r for r in writers.read_metrics(workdir) if r["split"] == "val"),
             key=lambda r: r["f1"])
  assert res["phase"] == best["phase"]
  for key in ("f1", "kappa", "oa", "specificity"):
    assert res[key] == pytest.approx(final["test"][key], abs=1e-9)


@pytest.mark.slow
def test_predict_applies_the_stored_change_map_like_evaluate(run, tmp_path):
  # One 64x64 window per pair (no blending): predict's change maps must give exactly the
  # confusion matrix of the evaluation, which maps argmax clusters through the checkpoint's map.
  from PIL import Image
  from jaxcd import predict
  from jaxcd.data import source_from_config
  workdir, _ = run
  config = tiny_config()
  pairs = []
  for r in source_from_config(config.data, "test"):
    paths = [tmp_path / f"{r['id']}_{x}.png" for x in ("a", "b", "label")]
    for path, x in zip(paths, (r["image_a"], r["image_b"], r["label"] * np.uint8(255))):
      Image.fromarray(x).save(path)
    pairs.append(predict.Pair(*paths))
  res = predict.predict_pairs(config, workdir, pairs, tmp_path / "out", tile=64, overlap=0)
  cm = np.sum([p["metrics"]["confusion_matrix"] for p in res["pairs"]], axis=0)
  from jaxcd import evaluate
  expected = evaluate.evaluate_workdir(config, workdir, "test")
  assert res["checkpoint"] == "best"
  np.testing.assert_array_equal(cm, expected["confusion_matrix"])
  assert 0 < cm[1, 1] < cm[:, 1].sum() + cm[1, :].sum()  # not a trivial all-or-nothing map


@pytest.mark.slow
def test_checkpoint_holds_centroids_labels_and_warmup_only_change_map(run):
  workdir, _ = run
  config = tiny_config()
  ckpt = checkpointing.Checkpointer(workdir, keep=10)
  extra = ckpt.restore_extra(8)
  assert ckpt.restore_extra(2) is None  # warm-up checkpoints carry no clustering state
  ckpt.close()
  cents, prep, labels = cdc._from_extra(extra)
  train = source_from_config(config.data, "train")
  assert cents.shape == (K, 16) and labels.shape == (32, 64, 64) and labels.dtype == np.uint8
  assert labels.max() < K and len(np.unique(labels)) > 1
  # The stored labels are exactly the nearest-centroid labels of the checkpointed network.
  state, _ = checkpointing.load_numpy(workdir, step=8)
  model = state_lib.build_model(config)
  feature_fn = clustering.make_feature_fn(model, make_normalizer(config))
  variables = state_lib.variables_of(state["params"], state["batch_stats"])
  again = clustering.assign(feature_fn, variables, prep, cents,
                            pipeline.eval_dataset(train, global_batch_size=8), len(train))
  np.testing.assert_array_equal(again, labels)
  # The cluster-to-change map is a function of the warm-up tiles' (training) labels only.
  meta = _meta(workdir, 8)
  idx = cdc.warmup_indices(train, 0.5, 0.03, config.seed)
  truth = np.stack([train[int(i)]["label"] for i in idx])
  counts = cdc.cluster_change_counts(labels[idx], truth, K)
  np.testing.assert_array_equal(meta["change_map"], cdc.change_map_from_counts(counts, "f1"))
  assert meta["cluster_step"] == 8
  # Before each later evaluation the map is refitted from the network's predictions on the same
  # warm-up tiles (config change_map_from="predictions"): checkpoint 12 holds that map.
  state12, _ = checkpointing.load_numpy(workdir, step=12)
  logits = model.apply(state_lib.variables_of(state12["params"], state12["batch_stats"]),
                       *(make_normalizer(config)(
                           np.stack([train[int(i)][key] for i in idx]))
                         for key in ("image_a", "image_b")), train=False)["logits"]
  counts12 = cdc.cluster_change_counts(np.asarray(logits).argmax(-1), truth, K)
  np.testing.assert_array_equal(_meta(workdir, 12)["change_map"],
                                cdc.change_map_from_counts(counts12, "f1"))


def _meta(workdir, step):
  import json
  return json.loads((Path(workdir) / "checkpoints" / str(step) / "meta" / "metadata").read_text())


@pytest.mark.slow
def test_resume_after_clustering_keeps_labels_and_does_not_recluster(run, tmp_path):
  workdir, _ = run
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  for step in ("10", "12"):  # as if killed just after the clustering at step 8
    shutil.rmtree(Path(resumed) / "checkpoints" / step)
  shutil.rmtree(Path(resumed) / "best")
  trainer.train_and_evaluate(tiny_config(), resumed)
  rows = writers.read_metrics(resumed)
  assert [r["step"] for r in rows if r["split"] == "cluster"] == [4, 8]  # no second clustering at 8
  assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 13))
  a, b = checkpointing.load_numpy(workdir, 12)[0], checkpointing.load_numpy(resumed, 12)[0]
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)  # same labels, same data order: the same parameters
  ea = checkpointing.Checkpointer(workdir, keep=10).restore_extra(12)
  eb = checkpointing.Checkpointer(resumed, keep=10).restore_extra(12)
  assert set(ea) == set(eb) >= {"centroids", "pseudo_labels", "prep_mean", "prep_l2"}
  for key in ea:
    np.testing.assert_array_equal(ea[key], eb[key])
  assert _meta(resumed, 12)["change_map"] == _meta(workdir, 12)["change_map"]


@pytest.mark.slow
def test_sigkill_in_the_cluster_phase_then_resume_is_bit_identical(run, tmp_path):
  from conftest import assert_same_checkpoint, kill_when, train_cmd
  workdir, _ = run
  killed = tmp_path / "killed"
  # Killed once step 6 is committed: after the clustering at 4, before the one at 8.
  kill_when(train_cmd("methods.test_cdcluster_method", str(killed)),
            killed / "checkpoints" / "6")
  trainer.train_and_evaluate(tiny_config(), str(killed))
  assert_same_checkpoint(workdir, killed, 12)
  assert_same_checkpoint(workdir, killed, which="best")
  rows = writers.read_metrics(str(killed))
  assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 13))
  assert [r["step"] for r in rows if r["split"] == "cluster"] == [4, 8]


# --- Table 2 (warm-up fraction) ----------------------------------------------------------------

@pytest.mark.slow
def test_warmup_fraction_table(tmp_path):
  from jaxcd.experiments import warmup_fraction as wf
  assert wf.settings([0.01, 0.2], [0.06]) == [("1%", 0.01, 0.0), ("20%", 0.2, 0.0),
                                              ("6% (sampled)", 0.06, 0.03)]
  config = tiny_config(num_steps=4, eval_every=4, checkpoint_every=4)
  config.cdcluster.update(warmup_steps=2, cluster_every_steps=2)
  # 1/32 of the split is one tile: fewer than a batch, so the warm-up repeats it.
  rows = wf.run(config, str(tmp_path), [1 / 32], [])
  assert [(r["setting"], r["warmup_tiles"]) for r in rows] == [("3.125%", 1)]
  test = [r for r in writers.read_metrics(str(tmp_path / "3.125pct")) if r["split"] == "test"]
  assert rows[0]["accuracy"] == pytest.approx(test[0]["oa"], abs=1e-4)
  assert rows[0]["mae"] == pytest.approx(test[0]["mae"], abs=1e-4)
  md = (tmp_path / "table2.md").read_text().splitlines()
  assert md[0] == "| Metric | 3.125% |" and md[3].startswith("| Accuracy | ")
  assert (tmp_path / "table2.csv").read_text().startswith(",".join(wf.COLUMNS))


@pytest.mark.slow
def test_two_processes_cluster_to_identical_centroids(tmp_path):
  """launch/local.sh 2: both processes gather the same feature sample and fit it with the same
  seed, so they log the same centroid digest, which is also the one in the cluster row."""
  import re
  import subprocess
  import sys
  overrides = {"num_steps": 5, "eval_every": 5, "checkpoint_every": 5, "log_every": 1,
               "progress": False, "data.image_size": 64, "data.num_train": 32,
               "data.num_val": 8, "data.num_test": 8, "input.batch_size": 4,
               "input.eval_batch_size": 8, "model.num_clusters": K,
               "cdcluster.warmup_fraction": 0.5, "cdcluster.warmup_steps": 4,
               "cdcluster.cluster_every_steps": 100, "cdcluster.max_samples": 3000,
               "cdcluster.faiss_threads": 1}
  cmd = ["bash", "launch/local.sh", "2", sys.executable, "-m", "jaxcd.train", "--config",
         "configs/cdcluster.py", "--workdir", str(tmp_path)]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = dict(re.findall(r"process (\d) clustered at step 4: centroids sha1 ([0-9a-f]{40})",
                          proc.stderr))
  assert sorted(found) == ["0", "1"], proc.stderr[-3000:]
  assert found["0"] == found["1"]
  clus = [r for r in writers.read_metrics(str(tmp_path)) if r["split"] == "cluster"]
  assert [r["step"] for r in clus] == [4] and clus[0]["centroids_sha1"] == found["0"]
  assert min(clus[0]["cluster_sizes"]) > 0
