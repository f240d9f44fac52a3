"""Label-fraction experiment (RCL Tables II/III/IV/VI): every (method, fraction) gets its own
workdir and config, the table holds ours beside the paper's, and the command line applies
--config overrides to every run."""
import csv
import json
from pathlib import Path

import pytest

from conftest import last_json, run_module
from jaxcd import writers
from jaxcd.config_base import sibling
from jaxcd.errors import ConfigError
from jaxcd.experiments import label_fractions as lf

REPO = Path(__file__).resolve().parents[1]


def fake_train(calls):
  """Records its calls and writes final test rows like rcl.train_and_evaluate (IoU = f/1000)."""
  def train(config, workdir):
    calls.append((config.rcl.mode, config.rcl.label_fraction, config.rcl.stage1_epochs, workdir))
    w = writers.MetricWriter(workdir, tensorboard=False)
    f = config.rcl.label_fraction
    stages = [1] if config.rcl.mode == "sup_only" or f == 1.0 else [1, 2]
    for s in stages:
      w.write({"step": 10 * s, "split": "test", "checkpoint": "best", "stage": s,
               "iou": f / 10 + s / 100, "f1": 0.5, "oa": 0.9, "kappa": 0.4})
    w.close()
  return train


def test_runs_every_method_and_fraction_and_writes_the_paper_layout(tmp_path):
  config = sibling(str(REPO / "configs" / "x.py"), "rcl_sztaki")
  config.rcl.stage1_epochs = 2.0  # an override: every run gets it
  calls = []
  rows = lf.run(config, str(tmp_path), [10.0, 100.0], train_fn=fake_train(calls))
  assert [(m, f, e) for m, f, e, _ in calls] == [
      ("sup_only", 0.1, 2.0), ("rcl", 0.1, 2.0), ("sup_only", 1.0, 2.0), ("rcl", 1.0, 2.0)]
  assert [Path(w).name for *_, w in calls] == ["sup_only_10pct", "rcl_10pct", "sup_only_100pct",
                                               "rcl_100pct"]
  assert config.rcl.mode == "rcl" and config.rcl.label_fraction == 0.1  # the caller's is untouched
  got = [(r["method"], r["fraction"], r["iou"], r["paper_iou"], r["stage"]) for r in rows]
  assert got == [("Sup. only", 10.0, 2.0, 9.85, 1), ("Sup. only", 100.0, 11.0, 39.78, 1),
                 ("RCL pre", 10.0, 2.0, 12.37, 1), ("RCL pre", 100.0, 11.0, 41.25, 1),
                 ("RCL", 10.0, 3.0, 12.68, 2)]  # no stage 2 at 100%, nor in the paper
  md = (tmp_path / "label_fractions.md").read_text().splitlines()
  assert md[2:] == ["| Method | 10% | 100% |", "|---|---|---|",
                    "| Sup. only | 2.00 (9.85) | 11.00 (39.78) |",
                    "| RCL pre | 2.00 (12.37) | 11.00 (41.25) |",
                    "| RCL | 3.00 (12.68) | - |"]
  with open(tmp_path / "label_fractions.csv") as f:
    table = list(csv.DictReader(f))
  assert len(table) == 5 and table[0]["paper_iou"] == "9.85"
  # The plot: ours and the paper's per method (RCL has no 100% point in either).
  assert lf.series(rows)["RCL"] == {"ours": [(10.0, 3.0)], "paper": [(10.0, 12.68)]}
  assert lf.series(rows)["Sup. only"]["ours"] == [(10.0, 2.0), (100.0, 11.0)]
  png = (tmp_path / "label_fractions.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_paper_tables_and_errors(tmp_path):
  assert lf.PAPER["VI"]["RCL"]["iou"][100] == 44.54
  assert lf.PAPER["III"]["RCL"]["oa"][5] == 95.67
  assert lf.parse_methods("rcl") == ["rcl"]
  with pytest.raises(ConfigError, match="--methods"):
    lf.parse_methods("nope")
  with pytest.raises(ConfigError, match="--fractions: percentages must be in"):
    lf.parse_fractions("0.5,120")
  c = sibling(str(REPO / "configs" / "x.py"), "fc_siam_diff")
  with pytest.raises(ConfigError, match="config.method must be 'rcl'"):
    lf.run(c, str(tmp_path), [10.0], train_fn=fake_train([]))


@pytest.mark.slow
def test_command_line_with_overrides(tmp_path):
  # A config file that swaps the network for FC-Siam-diff (compiles in seconds).
  cfg = tmp_path / "tiny_rcl.py"
  cfg.write_text(
      "import ml_collections\nfrom jaxcd.config_base import sibling\n"
      f"def get_config():\n  c = sibling({str(REPO / 'configs' / 'x.py')!r}, 'rcl')\n"
      "  c.model = ml_collections.ConfigDict({'name': 'fc_siam_diff', 'num_classes': 2})\n"
      "  return c\n")
  out = tmp_path / "out"
  proc = run_module("jaxcd.experiments.label_fractions", "--config", str(cfg), "--fractions", "50",
                    "--methods", "sup_only", "--out", str(out), "--config.progress=False",
                    "--config.rcl.stage1_steps=3", "--config.eval_every=3",
                    "--config.data.image_size=32", "--config.data.num_train=16",
                    "--config.data.num_val=4", "--config.data.num_test=4",
                    "--config.input.eval_batch_size=4")
  rows = last_json(proc.stdout)
  assert [(r["method"], r["fraction"]) for r in rows] == [("Sup. only", 50.0)]
  run_rows = writers.read_metrics(str(out / "sup_only_50pct"))
  assert [r["step"] for r in run_rows if r["split"] == "train"] == [3]  # log_every 25: last step
  assert json.loads((out / "sup_only_50pct" / "splits" / "split.json").read_text())["labeled"] == 8
  assert (out / "label_fractions.md").read_text().count("Sup. only") == 1
  bad = run_module("jaxcd.experiments.label_fractions", "--config", str(cfg), "--fractions", "0",
                   "--out", str(out), check=False)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: --fractions")


def seeded_train(calls, iou):
  """Writes a final test row per run with IoU `iou[(mode or method, fraction, seed)]`."""
  def train(config, workdir):
    name = config.rcl.mode if config.method == "rcl" else config.method
    calls.append((name, config.seed, config.input.batch_size,
                  config.rcr.unlabeled_batch_size if config.method == "rcr" else None,
                  Path(workdir).name))
    w = writers.MetricWriter(workdir, tensorboard=False)
    f = config.gan.label_fraction if name in lf.GAN_METHODS else config.rcl.label_fraction
    stages = [1] if name != "rcl" else [1, 2]
    for s in stages:
      w.write({"step": 10, "split": "test", "checkpoint": "best", "stage": s,
               "iou": iou[(name, round(100 * f), config.seed)] + (s - 1) / 100,
               "f1": 0.5, "oa": 0.9, "kappa": 0.4})
    w.close()
  return train


def test_seeds_give_mean_spread_and_which_methods_beat_sup_only(tmp_path):
  config = sibling(str(REPO / "configs" / "x.py"), "rivals_sztaki_cpu")
  iou = {("sup_only", 10, 0): 0.30, ("sup_only", 10, 1): 0.20,   # 20..30
         ("rcl", 10, 0): 0.35, ("rcl", 10, 1): 0.31,             # above: 31 > 30
         ("rcr", 10, 0): 0.40, ("rcr", 10, 1): 0.25,             # overlaps
         ("advnet", 10, 0): 0.10, ("advnet", 10, 1): 0.19,       # below: 19 < 20
         ("sup_only", 20, 0): 0.5, ("sup_only", 20, 1): 0.5,
         ("rcl", 20, 0): 0.4, ("rcl", 20, 1): 0.6,
         ("rcr", 20, 0): 0.6, ("rcr", 20, 1): 0.7,
         ("advnet", 20, 0): 0.5, ("advnet", 20, 1): 0.5}
  calls = []
  rows = lf.run(config, str(tmp_path), [10.0, 20.0], ["sup_only", "rcl", "rcr", "advnet"],
                train_fn=seeded_train(calls, iou), seeds=[0, 1])
  assert len(calls) == 16 and len({c[-1] for c in calls}) == 16  # a workdir per run
  assert calls[0][-1] == "sup_only_10pct_seed0" and calls[4][-1] == "sup_only_10pct_seed1"
  n_l = config.gan.n_labeled
  by = {(c[0], c[1]): c[2:4] for c in calls}
  # Sup. only, RCL and RCR take the adversarial rows' labeled (and unlabeled) pairs per step.
  assert by[("sup_only", 0)] == by[("rcl", 1)] == (n_l, None)
  assert by[("rcr", 1)] == (n_l, config.input.batch_size - n_l)
  mean = {(r["method"], r["fraction"]): r for r in rows if r["seed"] == "mean"}
  assert mean[("Sup. only", 10.0)]["iou"] == 25.0
  assert (mean[("Sup. only", 10.0)]["iou_min"], mean[("Sup. only", 10.0)]["iou_max"]) == (20, 30)
  assert mean[("RCL", 10.0)]["iou"] == 34.0  # stage 2: 0.35 + 0.01, 0.31 + 0.01
  assert len([r for r in rows if r["method"] == "RCR" and r["fraction"] == 10.0]) == 3
  spread = lf.beyond_spread(rows, [10.0, 20.0])
  assert spread[10.0] == {"above": ["RCL pre", "RCL"], "below": ["AdvNet"]}
  assert spread[20.0] == {"above": ["RCR"], "below": []}
  md = (tmp_path / "label_fractions.md").read_text()
  assert "| Sup. only | 25.00 ± 5.00 (9.85) | 50.00 ± 0.00 (28.11) |" in md
  assert "- 10%: above: RCL pre, RCL; below: AdvNet" in md
  assert "- 20%: above: RCR; below: none" in md
  with open(tmp_path / "label_fractions.csv") as f:
    table = list(csv.DictReader(f))
  assert {r["seed"] for r in table} == {"0", "1", "mean"}
  # The plot shows the means.
  assert lf.series(rows)["RCR"]["ours"] == [(10.0, 32.5), (20.0, 65.0)]


def test_parse_seeds():
  assert lf.parse_seeds("") is None
  assert lf.parse_seeds("0, 1") == [0, 1]
  with pytest.raises(ConfigError, match="--seeds"):
    lf.parse_seeds("0,0")
  with pytest.raises(ConfigError, match="--seeds"):
    lf.parse_seeds("a")


def test_every_row_gets_the_pairs_per_step_of_the_configs_own_method(tmp_path):
  config = sibling(str(REPO / "configs" / "x.py"), "rcr")  # 8 labeled + 8 unlabeled pairs
  config.rcr.unlabeled_batch_size = 6
  seen = {}

  def train(c, workdir):
    seen[Path(workdir).name] = (c.method, c.input.batch_size, c.gan.n_labeled,
                                c.rcr.unlabeled_batch_size)
    writers.MetricWriter(workdir, tensorboard=False).close()

  lf.run(config, str(tmp_path), [10.0], ["sup_only", "rcr", "advnet"], train_fn=train)
  assert seen == {"sup_only_10pct": ("rcl", 8, 8, 6), "rcr_10pct": ("rcr", 8, 8, 6),
                  "advnet_10pct": ("advnet", 14, 8, 6)}
