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
  fast_math = "--xla_cpu_enable_fast_math=true"
  rows = vs_torch.run(str(tmp_path), ["fc_siam_diff"], batch=1, size=64, steps=1, rounds=2,
                      settings=[("plain", ""), ("fast_math", fast_math)])
  with open(tmp_path / "vs_torch.csv", newline="") as f:
    table = list(csv.DictReader(f))
  assert [(r["setting"], r["round"]) for r in table] == [
      (s, r) for s in ("plain", "fast_math") for r in ("1", "2", "median")]
  assert [str(r["round"]) for r in rows] == [r["round"] for r in table]
  assert {r["xla_flags"] for r in table if r["setting"] == "fast_math"} == {fast_math}
  for setting in ("plain", "fast_math"):
    rounds = [r for r in table if r["setting"] == setting][:2]
    for r in rounds:
      for side in ("train", "fwd"):
        ratio = float(r[f"jaxcd_{side}_pairs_per_s"]) / float(r[f"torch_{side}_pairs_per_s"])
        assert float(r[f"{side}_ratio"]) == pytest.approx(ratio, rel=1e-9)
      assert int(r["jaxcd_params"]) == int(r["torch_params"]) == 1_350_146
    med = [r for r in table if r["setting"] == setting][2]
    for side in ("train", "fwd"):
      assert float(med[f"{side}_ratio"]) == pytest.approx(
          statistics.median(float(r[f"{side}_ratio"]) for r in rounds), rel=1e-9)
  # Both settings of a round are compared with that round's one torch measurement.
  for rnd in ("1", "2"):
    torch_rates = {r["torch_train_pairs_per_s"] for r in table if r["round"] == rnd}
    assert len(torch_rates) == 1
  md = (tmp_path / "vs_torch.md").read_text().splitlines()
  assert md[2].startswith("| model | setting | train ratio per round |")
  assert len(md) == 6 and md[4].startswith("| fc_siam_diff | plain | ")
  assert md[5].startswith("| fc_siam_diff | fast_math | ")


def test_bad_input_names_the_flag():
  with pytest.raises(ConfigError, match=r"^--models: choose from dsfernet, rcr, fc_siam_diff"):
    vs_torch.parse_models("fc_siam_diff,nope")
  with pytest.raises(ConfigError, match=r"^--rounds must be positive"):
    vs_torch.check_args(["rcr"], 1, 64, 1, 0)
  with pytest.raises(ConfigError, match=r"^--dsfernet_official: no such directory"):
    vs_torch.check_args(["dsfernet"], 1, 64, 1, 1, "/no/such/dir", "x.py")
  with pytest.raises(ConfigError, match=r"^--settings: each setting is NAME=XLA_FLAGS"):
    vs_torch.parse_settings("a=--x;--xla_cpu_enable_fast_math=true")
  with pytest.raises(ConfigError, match=r"^--settings: names must be distinct"):
    vs_torch.parse_settings("a=;a=--x")
  with pytest.raises(ConfigError, match=r"^--baseline: /no/such holds no jaxcd checkout"):
    vs_torch._check_baseline("/no/such")


def test_settings_keep_commas_inside_flags():
  flags = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution"
  assert vs_torch.parse_settings(f"default=; ynn = {flags}") == [("default", ""), ("ynn", flags)]
  # Each round starts at the next setting, so none always runs first.
  assert [vs_torch._rotated("abc", r) for r in range(4)] == [list("abc"), list("bca"),
                                                            list("cab"), list("abc")]
