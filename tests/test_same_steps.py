"""Same-steps experiment: every model runs its own config under one budget (steps, batch, one
validation), rcr as RCL's supervised baseline on all labels, a finished run keeps its row, and
the tables hold the final test rows. No training: a fake train function writes the rows."""
from pathlib import Path

import pytest

from jaxcd import writers
from jaxcd.errors import ConfigError
from jaxcd.experiments import same_steps

REPO = Path(__file__).resolve().parents[1]


def fake_train(calls):
  def train(config, workdir):
    calls.append(config)
    w = writers.MetricWriter(workdir, tensorboard=False)
    w.write({"step": config.num_steps, "split": "test", "checkpoint": "best", "stage": 1,
             "f1": 0.25 + 0.5 * (config.model.name == "snunet"), "iou": 0.125,
             "precision": 0.5, "recall": 0.5})
    w.close()
  return train


def test_one_budget_for_every_model_and_a_finished_run_keeps_its_row(tmp_path):
  calls = []
  models = ["snunet", "rcr", "cdcluster"]
  rows = same_steps.run(str(tmp_path), models, 30, 4, str(REPO / "configs"), fake_train(calls))
  assert [c.model.name for c in calls] == models
  for c in calls:
    assert (c.num_steps, c.input.batch_size, c.eval_every, c.checkpoint_every) == (30, 4, 30, 30)
    assert tuple(c.eval_splits) == ("test",)
  snunet, rcr, cdc = calls
  assert snunet.loss.name == "snunet" and snunet.optim.name == "adamw"  # its own recipe
  assert (rcr.method, rcr.rcl.mode, rcr.rcl.label_fraction, rcr.rcl.stage1_steps) == (
      "rcl", "sup_only", 1.0, 30)
  assert (cdc.cdcluster.warmup_steps, cdc.cdcluster.cluster_every_steps) == (15, 30)
  assert [(r["model"], r["f1"], r["steps"], r["batch"]) for r in rows] == [
      ("snunet", 0.75, 30, 4), ("rcr", 0.25, 30, 4), ("cdcluster", 0.25, 30, 4)]
  assert rows[1]["config"].endswith("rcl.py")
  md = (tmp_path / "same_steps.md").read_text().splitlines()
  assert md[2].startswith("| snunet | 0.750 | 0.125 |") and len(md) == 5

  # Run again: nothing is trained, the rows (wall times included) come back from the csv.
  again = same_steps.run(str(tmp_path), models, 30, 4, str(REPO / "configs"), fake_train(calls))
  assert len(calls) == 3
  assert [(r["model"], r["f1"], r["seconds"]) for r in again] == [
      (r["model"], r["f1"], r["seconds"]) for r in rows]
  # Another budget trains again.
  same_steps.run(str(tmp_path), ["snunet"], 31, 4, str(REPO / "configs"), fake_train(calls))
  assert len(calls) == 4 and calls[-1].num_steps == 31


def test_bad_model_names_are_one_line():
  with pytest.raises(ConfigError, match=r"^--models: choose 'all' or from .*\(comma-separated\), got 'snunet,nope'$"):
    same_steps.parse_models("snunet,nope")
  assert "vct" in same_steps.parse_models("all") and "bit" in same_steps.parse_models("all")
