"""vs_torch: jaxcd and PyTorch side by side. One tiny run of the whole experiment (both
subprocesses per round) checks the tables' rows, that the ratios are the quotients of the rates
beside them, and that both sides time the same FC-Siam-diff; bad input is one line."""
import csv
import statistics

import pytest

from jaxcd.errors import ConfigError
from jaxcd.experiments import vs_torch


@pytest.mark.slow  # two rounds of two subprocesses that each compile or build a model
def test_tiny_run_writes_rounds_and_medians(tmp_path):
  pytest.importorskip("torch", reason="torch not installed (pip install 'jaxcd[torch]'): no "
                      "torch side to compare with")
  rows = vs_torch.run(str(tmp_path), ["fc_siam_diff"], batch=1, size=64, steps=1, rounds=2)
  with open(tmp_path / "vs_torch.csv", newline="") as f:
    table = list(csv.DictReader(f))
  assert [r["round"] for r in table] == ["1", "2", "median"] == [str(r["round"]) for r in rows]
  rounds = table[:2]
  for r in rounds:
    for side in ("train", "fwd"):
      ratio = float(r[f"jaxcd_{side}_pairs_per_s"]) / float(r[f"torch_{side}_pairs_per_s"])
      assert float(r[f"{side}_ratio"]) == pytest.approx(ratio, rel=1e-9)
    assert int(r["jaxcd_params"]) == int(r["torch_params"]) == 1_350_146
  med = table[2]
  for side in ("train", "fwd"):
    assert float(med[f"{side}_ratio"]) == pytest.approx(
        statistics.median(float(r[f"{side}_ratio"]) for r in rounds), rel=1e-9)
  md = (tmp_path / "vs_torch.md").read_text().splitlines()
  assert md[2].startswith("| model | train ratio per round |")
  assert len(md) == 5 and md[4].startswith("| fc_siam_diff | ")


def test_bad_input_names_the_flag():
  with pytest.raises(ConfigError, match=r"^--models: choose from dsfernet, rcr, fc_siam_diff"):
    vs_torch.parse_models("fc_siam_diff,nope")
  with pytest.raises(ConfigError, match=r"^--rounds must be positive"):
    vs_torch.check_args(["rcr"], 1, 64, 1, 0)
  with pytest.raises(ConfigError, match=r"^--dsfernet_official: no such directory"):
    vs_torch.check_args(["dsfernet"], 1, 64, 1, 1, "/no/such/dir", "x.py")
