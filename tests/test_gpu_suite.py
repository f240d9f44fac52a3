"""`python -m jaxcd.bench --suite gpu --quick`: the GPU suite's plumbing on this CPU, every part
reduced (the fast tier itself is not re-run inside a test)."""
import json

import pytest

from jaxcd import bench


def test_fill_batch_doubles_while_the_temporaries_fit():
  probe = {"train_temp_bytes": 8 * 100, "train_argument_bytes": 1000}  # 100 bytes per pair
  # room = 0.5 * 10_000 - 1000 = 4000 bytes: 32 pairs (3200) fit, 64 (6400) do not.
  assert bench.fill_batch(probe, 10_000, 0.5, 8, 1024) == 32
  assert bench.fill_batch(probe, 10_000, 0.5, 8, 16) == 16  # capped
  assert bench.fill_batch(probe, None, 0.5, 8, 1024) == 8  # no memory figure: the probe


@pytest.mark.slow
def test_quick_suite_writes_json_and_markdown(tmp_path, capsys):
  rows = bench.run(["--suite", "gpu", "--quick", "--out", str(tmp_path), "--json"])
  kinds = [r["kind"] for r in rows]
  assert kinds == ["model", "test_pass", "kernel", "pipeline", "pipeline", "tests"]
  for r in rows[:-1]:
    assert "error" not in r, r
  model, tp, kernel, p0, p1, tests = rows
  assert (model["model"], model["batch"], model["dtype"]) == ("fc_siam_diff", 1, "float32")
  assert model["train_pairs_per_s"] > 0 and model["train_temp_bytes"] > 0
  assert tp["pairs"] == 4 and tp["pairs_per_s"] > 0 and 0 <= tp["f1"] <= 1
  assert set(kernel["impls"]) == {"xla", "reference"}
  assert (p0["worker_count"], p1["worker_count"]) == (0, 1) and p1["pairs_per_s"] > 0
  assert "skipped" in tests
  saved = json.loads((tmp_path / "suite.json").read_text())
  assert saved["quick"] and len(saved["rows"]) == len(rows)
  md = (tmp_path / "suite.md").read_text()
  assert "| fc_siam_diff | float32 | 1 |" in md and "test pass: 4 pairs of 32x32" in md
  lines = capsys.readouterr().out.strip().splitlines()
  assert [json.loads(x)["kind"] for x in lines] == kinds  # --json: one line per row, as it goes
