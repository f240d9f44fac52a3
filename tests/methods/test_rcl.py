"""RCL: the reliability ranking on pairs whose stability is known, per-group SGD learning rates,
schedules and config errors, and a tiny end-to-end run of both stages (stage rows, the
`reliable` row, split and pseudo-label files, the standard evaluation path, resume in stage 2),
plus the label-fraction experiment's table."""
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import set_fields, strict_device_to_host
from jaxcd import checkpointing, trainer, writers
from jaxcd.config_base import sibling
from jaxcd.data import semi, source_from_config
from jaxcd.errors import ConfigError
from jaxcd import optim, state as state_lib
from jaxcd.data.normalize import make_normalizer
from jaxcd.methods import rcl

REPO = Path(__file__).resolve().parents[2]


def tiny_config(**extra):
  """configs/rcl.py with FC-Siam-diff on 32x32 scenes: 8 labeled + 8 unlabeled pairs, 6 + 6 steps,
  stage 2 re-initialised (the paper)."""
  c = sibling(str(REPO / "configs" / "x.py"), "rcl")
  c.model = ml_collections.ConfigDict({"name": "fc_siam_diff", "num_classes": 2})
  c.data.update(image_size=32, num_train=16, num_val=4, num_test=4)
  c.input.eval_batch_size = 4
  c.rcl.update(label_fraction=0.5, stage1_steps=6, stage2_steps=6, stage2_init="reinit")
  c.optim.warmup_steps = 0
  c.eval_every, c.checkpoint_every, c.log_every, c.progress = 3, 3, 1, False
  set_fields(c, extra)
  return c


# --- reliability -------------------------------------------------------------------------------

class ThresholdNet(nn.Module):
  """Predicts change where the (normalised) mean of image A exceeds the parameter t."""

  @nn.compact
  def __call__(self, a, b, train=False):
    t = self.param("t", nn.initializers.zeros, ())
    change = a.mean(-1) - t
    return {"logits": jnp.stack([jnp.zeros_like(change), change], axis=-1)}


def _np_mean_iou(p, q):
  ious = []
  for c in (0, 1):
    union = np.sum((p == c) | (q == c))
    if union:
      ious.append(np.sum((p == c) & (q == c)) / union)
  return np.mean(ious)


def test_stability_ranks_the_pairs_every_snapshot_agrees_on_first():
  # Pair i has image A of constant value(s); snapshots threshold at t = -0.6, 0, 0.6 (normalised
  # values), the best model at 0. Pixel values 10 and 250 are far from every threshold.
  halves = [(10, 10), (250, 250), (100, 100), (160, 160), (10, 250), (100, 250), (250, 160)]
  src = []
  for i, (left, right) in enumerate(halves):
    a = np.zeros((8, 8, 3), np.uint8)
    a[:, :4], a[:, 4:] = left, right
    lab = np.zeros((8, 8), np.uint8)
    lab[:, 4:] = 1
    src.append({"image_a": a, "image_b": a, "label": lab, "id": str(i)})
  config = ml_collections.ConfigDict({"input": {"eval_batch_size": 4}, "progress": False})
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  normalize = lambda x: (x.astype(jnp.float32) - 127.5) / 127.5
  var = lambda t: {"params": {"t": jnp.float32(t)}}
  step = rcl.make_stability_step(ThresholdNet(), normalize, 255, mesh)
  res = rcl.stability_pass(step, [var(-0.6), var(0.0), var(0.6)], var(0.0), src, config, mesh)
  # Reference in numpy, from the thresholds.
  x = np.stack([(r["image_a"].mean(-1) - 127.5) / 127.5 for r in src])
  preds = [(x > t).astype(np.uint8) for t in (-0.6, 0.0, 0.6)]
  best = (x > 0).astype(np.uint8)
  want = np.array([np.mean([_np_mean_iou(p[i], best[i]) for p in preds]) for i in range(len(src))])
  np.testing.assert_allclose(res["stability"], want, atol=1e-6)
  np.testing.assert_allclose(want[[0, 1, 4]], 1.0)  # every model agrees on these pairs
  np.testing.assert_allclose(want[[2, 3]], 2 / 3)  # one snapshot of three disagrees everywhere
  np.testing.assert_allclose(want[5], (0.25 + 1 + 1) / 3)  # the t=-0.6 snapshot half-agrees
  np.testing.assert_array_equal(res["pseudo"], best)
  # Per-model confusion against the label (right half changed): the best model on pair 4 is exact.
  np.testing.assert_array_equal(res["confusion"][4, -1], [[32, 0], [0, 32]])
  reliable = rcl.rank_reliable(res["stability"], 0.5)
  np.testing.assert_array_equal(np.flatnonzero(reliable), [0, 1, 4])  # floor(3.5) most stable
  assert rcl.rank_reliable(res["stability"], 1.0).all()
  assert not rcl.rank_reliable(res["stability"], 0.0).any()
  row = rcl.reliability_row(res, reliable)
  assert (row["reliable"], row["unreliable"], row["stability_reliable"]) == (3, 4, 1.0)
  assert row["pseudo_iou_reliable"] == pytest.approx(
      np.sum(best[[0, 1, 4]] & 1 & (np.stack([r["label"] for r in src])[[0, 1, 4]] == 1))
      / np.sum((best[[0, 1, 4]] == 1) | (np.stack([r["label"] for r in src])[[0, 1, 4]] == 1)),
      abs=1e-4)
  assert len(row["snapshot_iou_unreliable"]) == 3


def test_ties_keep_source_order():
  np.testing.assert_array_equal(rcl.rank_reliable(np.array([0.5, 1.0, 0.5, 0.5]), 0.5),
                                [True, True, False, False])


# --- optimiser, schedule, config ---------------------------------------------------------------

def test_backbone_multiplier_is_a_per_group_sgd_learning_rate():
  o = ml_collections.ConfigDict(dict(name="sgd", lr=0.1, schedule="poly", poly_power=0.9,
                                     warmup_steps=0, weight_decay=1e-2, momentum=0.9,
                                     grad_clip=0.0))
  tx, _ = optim.make_optimizer(o, 10)
  params = {"backbone": {"w": jnp.array([1.0, -2.0])}, "head": {"w": jnp.array([0.5])}}
  mult = rcl.backbone_multipliers(params, "backbone", 0.1)
  # Reference: torch-style SGD with the backbone's learning rate divided by 10.
  sched = lambda lr: optax.polynomial_schedule(lr, 0.0, 0.9, 10)
  ref_tx = optax.multi_transform(
      {"bb": optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(sched(0.01), momentum=0.9)),
       "hd": optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(sched(0.1), momentum=0.9))},
      {"backbone": {"w": "bb"}, "head": {"w": "hd"}})
  ours = rcl.with_group_lr(tx, mult, 1e-2)
  p, q = params, params
  s, r = ours.init(p), ref_tx.init(q)
  rng = np.random.default_rng(0)
  for _ in range(5):
    g = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), p)
    u, s = ours.update(g, s, p)
    p = optax.apply_updates(p, u)
    v, r = ref_tx.update(g, r, q)
    q = optax.apply_updates(q, v)
  for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(q)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  # Same optimizer state structure as optim.make_optimizer: standard tools restore it.
  assert jax.tree_util.tree_structure(s) == jax.tree_util.tree_structure(tx.init(params))
  with pytest.raises(ConfigError, match="config.rcl.backbone_params"):
    rcl.backbone_multipliers(params, "encoder", 0.1)


def test_schedule_and_snapshots():
  rc = tiny_config().rcl
  rc.update(stage1_steps=0, stage2_steps=0, stage1_epochs=80.0, stage2_epochs=2.0)
  assert rcl.stage_steps(rc, 1, 10, 8) == 100  # 80 epochs of 10 labeled pairs, batch 8
  assert rcl.stage_steps(rc, 2, 89, 4) == 45
  rc.update(steps_by_fraction="40:1800, 100:900", label_fraction=0.4)
  assert [rcl.stage_steps(rc, s, 40, 8) for s in (1, 2)] == [1800, 1800]
  rc.label_fraction = 0.2  # not listed: the epochs above
  assert rcl.stage_steps(rc, 1, 20, 8) == 200
  assert rcl.snapshot_steps(100) == [33, 66, 100]
  with pytest.raises(ConfigError, match="3 snapshots need >= 3"):
    rcl.snapshot_steps(2)


@pytest.mark.parametrize("field,value,match", [
    ("rcl.mode", "semi", "config.rcl.mode"),
    ("rcl.nochange", "twins", "config.rcl.nochange"),
    ("rcl.stage2_init", "warm", "config.rcl.stage2_init"),
    ("rcl.label_fraction", 0.0, "config.rcl.label_fraction must be in"),
    ("rcl.label_fraction", 0.01, "labels none of the 16"),
    ("rcl.reliable_fraction", 1.5, "config.rcl.reliable_fraction"),
    ("rcl.n_labeled", 8, "config.rcl.n_labeled"),
    ("rcl.backbone_lr_mult", 0.1, "needs config.optim.name='sgd'"),
    ("rcl.stage1_steps", 2, "3 snapshots"),
    ("rcl.steps_by_fraction", "40=1800", "config.rcl.steps_by_fraction: expected"),
    ("rcl.steps_by_fraction", "140:1800", "config.rcl.steps_by_fraction: '140:1800' needs"),
])
def test_config_errors_name_the_field(tmp_path, field, value, match):
  with pytest.raises(ConfigError, match=match):
    trainer.train_and_evaluate(tiny_config(**{field: value}), str(tmp_path))


# --- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rcl") / "run")
  with strict_device_to_host():  # the loop's steps make explicit transfers only
    final = trainer.train_and_evaluate(tiny_config(), workdir)
  return workdir, final


@pytest.mark.slow
def test_rows_of_both_stages(run):
  workdir, final = run
  rows = writers.read_metrics(workdir)
  train = [r for r in rows if r["split"] == "train"]
  assert [(r["step"], r["stage"]) for r in train] == [(s, 1 + (s > 6)) for s in range(1, 13)]
  assert all(r["loss"] == pytest.approx(r["ce"] + r["ct"], rel=1e-5) for r in train)
  # Stage 2 restarts the schedule.
  assert train[0]["lr"] == train[6]["lr"] == pytest.approx(tiny_config().optim.lr)
  val = [r for r in rows if r["split"] == "val"]
  assert [(r["step"], r["stage"]) for r in val] == [(3, 1), (6, 1), (9, 2), (12, 2)]
  (rel,) = [r for r in rows if r["split"] == "reliable"]
  assert (rel["step"], rel["pairs"], rel["reliable"], rel["unreliable"]) == (6, 8, 4, 4)
  assert rel["stability_reliable"] >= rel["stability_unreliable"]
  assert rel["snapshot_steps"] == [2, 4, 6] and rel["best_step"] in (3, 6)
  for key in ("pseudo_iou_reliable", "pseudo_iou_unreliable", "pseudo_iou_all"):
    assert 0 <= rel[key] <= 1
  test = [r for r in rows if r["split"] == "test"]
  assert [(r["stage"], r["checkpoint"]) for r in test] == [(1, "best"), (2, "best")]
  for stage, r in zip((1, 2), test):
    best = max((v for v in val if v["stage"] == stage), key=lambda v: v["f1"])
    assert r["step"] == best["step"]
  assert final["test"]["f1"] == pytest.approx(test[1]["f1"])
  assert final["stage1_test"]["iou"] == pytest.approx(test[0]["iou"])


@pytest.mark.slow
def test_split_and_pseudo_label_files(run):
  workdir, _ = run
  d = Path(workdir) / "splits"
  lab, unl = (semi.read_index_file(d / f"{n}.txt") for n in ("labeled", "unlabeled"))
  assert len(lab) == len(unl) == 8 and not set(lab) & set(unl)
  relf, unrelf = (semi.read_index_file(d / f"{n}.txt") for n in ("reliable", "unreliable"))
  assert sorted(np.concatenate([relf, unrelf])) == sorted(unl)
  stab = [float(line.split("\t")[2]) for line in (d / "reliable.txt").read_text().splitlines()]
  stab_u = [float(line.split("\t")[2]) for line in (d / "unreliable.txt").read_text().splitlines()]
  assert min(stab) >= max(stab_u)
  z = rcl.load_reliability(workdir)
  np.testing.assert_array_equal(z["indices"][z["reliable"]], relf)
  assert z["pseudo_labels"].shape == (4, 32, 32) and z["pseudo_labels"].dtype == np.uint8
  # The pseudo-labels are the stage-1 best model's argmax on those pairs.
  config = tiny_config()
  state, _ = checkpointing.load_numpy(str(Path(workdir) / "stage1"), which=checkpointing.BEST)
  train = source_from_config(config.data, "train")
  norm = make_normalizer(config)
  a, b = (norm(np.stack([train[int(i)][k] for i in relf])) for k in ("image_a", "image_b"))
  logits = state_lib.build_model(config).apply(
      state_lib.variables_of(state["params"], state["batch_stats"]), a, b, train=False)["logits"]
  np.testing.assert_array_equal(np.asarray(logits).argmax(-1), z["pseudo_labels"])
  assert sorted(p.name for p in (Path(workdir) / "stage1" / "snapshots" / "checkpoints")
                .iterdir()) == ["2", "4", "6"]


@pytest.mark.slow
def test_standard_evaluate_loads_the_final_model(run):
  workdir, final = run
  from jaxcd import evaluate
  res = evaluate.evaluate_workdir(tiny_config(), workdir, "test")
  assert res["checkpoint"] == "best"
  assert res["f1"] == pytest.approx(final["test"]["f1"], abs=1e-9)


@pytest.mark.slow
def test_resume_in_stage_two_keeps_the_reliable_set(run, tmp_path):
  workdir, _ = run
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  shutil.rmtree(Path(resumed) / "checkpoints" / "12")  # killed after step 9's checkpoint
  before = (Path(resumed) / "pseudo_labels.npz").read_bytes()
  trainer.train_and_evaluate(tiny_config(), resumed)
  rows = writers.read_metrics(resumed)
  assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 13))
  assert len([r for r in rows if r["split"] == "reliable"]) == 1
  assert [r["stage"] for r in rows if r["split"] == "test"] == [1, 2]
  assert (Path(resumed) / "pseudo_labels.npz").read_bytes() == before
  a, b = checkpointing.load_numpy(workdir, 12)[0], checkpointing.load_numpy(resumed, 12)[0]
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)  # same reliable set and data order: the same parameters


@pytest.mark.slow
def test_killed_between_stages_recomputes_the_same_reliable_set(run, tmp_path):
  workdir, _ = run
  resumed = Path(tmp_path / "between")
  shutil.copytree(workdir, resumed)
  # As if killed during the reliability pass: stage 1 done, nothing of stage 2 written yet.
  for p in ("checkpoints", "best"):
    shutil.rmtree(resumed / p)
  for p in ("pseudo_labels.npz", "splits/reliable.txt", "splits/unreliable.txt"):
    (resumed / p).unlink()
  # Stage 2 may still change: start it from the stage-1 best model this time.
  trainer.train_and_evaluate(tiny_config(**{"rcl.stage2_init": "stage1", "keep_checkpoints": 10}),
                         str(resumed))
  a, b = rcl.load_reliability(workdir), rcl.load_reliability(str(resumed))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # from the stored snapshots
  assert (resumed / "splits" / "reliable.txt").read_text() == \
      (Path(workdir) / "splits" / "reliable.txt").read_text()
  rows = writers.read_metrics(str(resumed))
  assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 13))
  assert len([r for r in rows if r["split"] == "reliable"]) == 1
  start, _ = checkpointing.load_numpy(str(resumed), 6)  # stage 2's first state
  best, _ = checkpointing.load_numpy(str(resumed / "stage1"), which=checkpointing.BEST)
  for key in ("params", "batch_stats"):
    for u, v in zip(jax.tree_util.tree_leaves(start[key]), jax.tree_util.tree_leaves(best[key])):
      np.testing.assert_array_equal(u, v)
  assert int(start["step"]) == 0  # a fresh optimizer state and schedule


@pytest.mark.slow
def test_sigkill_in_each_stage_then_resume_is_bit_identical(run, tmp_path):
  # Killed in stage 1 (step 3 committed), resumed and killed again in stage 2 (step 9), resumed.
  from conftest import assert_same_checkpoint, kill_when, train_cmd
  workdir, _ = run
  killed = tmp_path / "killed"
  kill_when(train_cmd("methods.test_rcl", str(killed)), killed / "stage1" / "checkpoints" / "3")
  assert not (killed / "checkpoints").exists(), "the first kill came after stage 1"
  kill_when(train_cmd("methods.test_rcl", str(killed)), killed / "checkpoints" / "9")
  trainer.train_and_evaluate(tiny_config(), str(killed))
  for sub in ("stage1", ""):
    assert_same_checkpoint(Path(workdir) / sub, killed / sub)
    assert_same_checkpoint(Path(workdir) / sub, killed / sub, which="best")
  a, b = rcl.load_reliability(workdir), rcl.load_reliability(str(killed))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  rows = writers.read_metrics(str(killed))
  assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 13))


@pytest.mark.slow
def test_label_fraction_table_with_sup_only(run, tmp_path):
  from jaxcd.experiments import label_fractions as lf
  workdir, _ = run
  out = tmp_path / "table"
  shutil.copytree(workdir, lf.workdir_for(str(out), "rcl", 50))  # finished: only re-evaluated
  config = tiny_config(**{"rcl.paper_table": "II"})
  rows = lf.run(config, str(out), [50.0])
  assert [(r["method"], r["stage"]) for r in rows] == [("Sup. only", 1), ("RCL pre", 1), ("RCL", 2)]
  sup = writers.read_metrics(lf.workdir_for(str(out), "sup_only", 50))
  assert [r["stage"] for r in sup if r["split"] == "train"] == [1] * 6
  assert all("ct" not in r for r in sup if r["split"] == "train")  # plain CE
  assert not any(r["split"] == "reliable" for r in sup)
  (sup_test,) = [r for r in sup if r["split"] == "test"]
  assert rows[0]["iou"] == pytest.approx(100 * sup_test["iou"], abs=0.01)
  assert rows[0]["paper_iou"] is None  # Table II has no 50% column
  md = (out / "label_fractions.md").read_text().splitlines()
  assert md[2] == "| Method | 50% |" and md[4].startswith("| Sup. only | ")
  assert (out / "label_fractions.csv").read_text().startswith(",".join(lf.COLUMNS))
  # Its final model is also in WORKDIR/best, for jaxcd.evaluate.
  assert checkpointing.Checkpointer(lf.workdir_for(str(out), "sup_only", 50)).best_step() == \
      sup_test["step"]
  assert lf.parse_fractions("10,20,100") == [10.0, 20.0, 100.0]
  with pytest.raises(ConfigError, match="--fractions"):
    lf.parse_fractions("0,10")
  paper = lf.collect(str(out), [10.0], ["sup_only", "rcl"], "II")
  assert [(r["method"], r["iou"], r["paper_iou"]) for r in paper] == [
      ("Sup. only", None, 9.85), ("RCL pre", None, 12.37), ("RCL", None, 12.68)]


