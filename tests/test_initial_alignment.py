"""Initial Alignment: IA equals scikit-learn's adjusted MI of the returned pseudo-labels, depends on
the seed (and only on it), and the command line writes ia.csv and ia.png."""
import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from conftest import last_json, run_module
from jaxcd.config_base import sibling
from jaxcd.experiments import initial_alignment as ia_lib

pytestmark = pytest.mark.slow  # end-to-end runs

REPO = Path(__file__).resolve().parents[1]
TINY = {"data.num_train": 6, "data.num_val": 2, "data.num_test": 2, "input.eval_batch_size": 4}


def tiny_config():
  c = sibling(str(REPO / "configs" / "x.py"), "cdcluster")
  c.data.update(num_train=6, num_val=2, num_test=2)
  c.input.eval_batch_size = 4
  c.cdcluster.faiss_threads = 1
  return c


def test_ia_is_adjusted_mutual_information_of_the_pseudo_labels():
  rows = ia_lib.initial_alignment(tiny_config(), [2, 5], [0, 1], max_pairs=5, max_samples=4000,
                                  progress=False, return_labels=True)
  assert [(r["k"], r["seed"]) for r in rows] == [(2, 0), (5, 0), (2, 1), (5, 1)]
  for r in rows:
    labels, truth = r["labels"], r["truth"]
    assert labels.shape == truth.shape == (5, 64, 64)
    assert labels.min() >= 0 and labels.max() < r["k"]
    assert len(np.unique(labels)) == r["k"]  # no empty cluster over the pairs
    ok = truth != 255
    assert r["ia"] == pytest.approx(adjusted_mutual_info_score(truth[ok], labels[ok]), abs=1e-9)
  # The network's seed matters; the same seed gives the same value.
  assert rows[0]["ia"] != rows[2]["ia"]
  again = ia_lib.initial_alignment(tiny_config(), [2], [1], max_pairs=5, max_samples=4000,
                                   progress=False)
  assert again[0]["ia"] == pytest.approx(rows[2]["ia"], abs=1e-12)


def test_cli_writes_csv_and_plot(tmp_path):
  out = tmp_path / "ia"
  proc = run_module("jaxcd.experiments.initial_alignment", "--config", "configs/cdcluster.py",
                    "--ks", "2,4", "--seeds", "2", "--max_pairs", "4", "--max_samples", "3000",
                    "--out", str(out), "--config.progress=False",
                    *[f"--config.{k}={v}" for k, v in TINY.items()])
  res = last_json(proc.stdout)
  with open(out / "ia.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(int(r["k"]), int(r["seed"])) for r in rows] == [(2, 0), (4, 0), (2, 1), (4, 1)]
  assert all(-1 <= float(r["ia"]) <= 1 for r in rows)
  mean2 = np.mean([float(r["ia"]) for r in rows if r["k"] == "2"])
  assert res["mean_ia"]["2"] == pytest.approx(mean2, abs=1e-6)
  assert (out / "ia.png").stat().st_size > 1000
