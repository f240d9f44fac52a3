"""`python -m jaxcd.bench --suite gpu --quick` and its offline launcher: the GPU suite's plumbing
on this CPU, every part reduced (the fast tier itself is not re-run inside a test)."""
import json
import os
import pathlib
import subprocess
import sys
import time
import zipfile

import pytest

from jaxcd import bench

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_fill_batch_doubles_while_the_temporaries_fit():
  probe = {"train_temp_bytes": 8 * 100, "train_argument_bytes": 1000}  # 100 bytes per pair
  # room = 0.5 * 10_000 - 1000 = 4000 bytes: 32 pairs (3200) fit, 64 (6400) do not.
  assert bench.fill_batch(probe, 10_000, 0.5, 8, 1024) == 32
  assert bench.fill_batch(probe, 10_000, 0.5, 8, 16) == 16  # capped
  assert bench.fill_batch(probe, None, 0.5, 8, 1024) == 8  # no memory figure: the probe


def test_an_attention_implementation_that_does_not_apply_leaves_the_others_timed():
  """cuDNN is absent on a CPU (on a GPU it refuses, e.g., Dsfer-Net's one head of 512)."""
  r = bench.bench_hopfield(batch=1, tokens=16, dim=32, dtype="bfloat16", impls=("cudnn", "xla"),
                           steps=1, num_heads=2)
  assert "error" in r["impls"]["cudnn"] and r["impls"]["xla"]["ms"] > 0
  assert r["impls"]["xla"]["max_abs_diff_vs_f32_ref"] < 2e-2  # bf16 against the f32 einsum
  line = bench._describe_kernel(r)
  assert "heads=2" in line and "cudnn: " in line and "xla " in line


def test_fast_tier_reports_failures_and_a_cut_off_run(tmp_path):
  """The suite's fast-tier part on a folder of three tests: one passes only under the tier's
  environment (shared device, float32 numerics), one fails; then the same cut off mid-run."""
  (tmp_path / "test_tier.py").write_text(
      "import os\n"
      "def test_env():\n"
      "  assert os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'\n"
      "  assert os.environ['JAX_DEFAULT_MATMUL_PRECISION'] == 'highest'\n"
      "def test_fails():\n"
      "  assert 1 == 2\n"
      "def test_skipped():\n"
      "  import pytest; pytest.skip('no')\n")
  r = bench.fast_tier(120, workers=0, paths=["test_tier.py"], cwd=str(tmp_path))
  assert r["returncode"] == 1 and "1 failed, 1 passed, 1 skipped" in r["summary"], r
  assert [f.split()[1] for f in r["failed"]] == ["test_tier.py::test_fails"]
  md = bench.suite_markdown({"device_kind": "d", "platform": "p", "jax": "j", "quick": False,
                             "seconds": 1.0}, [r])
  assert "  - FAILED test_tier.py::test_fails" in md

  (tmp_path / "test_slow.py").write_text("import time\ndef test_sleeps():\n  time.sleep(60)\n")
  t0 = time.monotonic()
  r = bench.fast_tier(6, workers=0, paths=["test_tier.py", "test_slow.py"], cwd=str(tmp_path))
  assert time.monotonic() - t0 < 30  # the group was killed, not waited for
  assert r["returncode"] is None
  assert r["summary"].startswith("timed out after 6 s: 1 passed, 1 failed, 1 skipped"), r


@pytest.mark.slow
def test_quick_suite_writes_json_and_markdown(tmp_path, capsys):
  rows = bench.run(["--suite", "gpu", "--quick", "--out", str(tmp_path), "--json"])
  kinds = [r["kind"] for r in rows]
  assert kinds == ["model", "test_pass", "kernel", "kernel", "pipeline", "pipeline", "tests"]
  for r in rows[:-1]:
    assert "error" not in r, r
  model, tp, kernel, kernel2, p0, p1, tests = rows
  assert (kernel["num_heads"], kernel2["num_heads"]) == (1, 2)
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


@pytest.mark.slow
def test_launcher_installs_carried_wheels_and_runs_the_suite(tmp_path):
  """launch/gpu_suite.sh, as run on an offline GPU machine: the wheels in .whl/ go to a site
  folder on PYTHONPATH, then the suite writes its files and prints its table."""
  work = tmp_path / "work"
  (work / ".whl").mkdir(parents=True)
  files = {"jaxcd_carried/__init__.py": "WHERE = 'carried'\n",
           "jaxcd_carried-0.1.dist-info/METADATA":
               "Metadata-Version: 2.1\nName: jaxcd_carried\nVersion: 0.1\n",
           "jaxcd_carried-0.1.dist-info/WHEEL":
               "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
  files["jaxcd_carried-0.1.dist-info/RECORD"] = "".join(f"{f},,\n" for f in files) + (
      "jaxcd_carried-0.1.dist-info/RECORD,,\n")
  with zipfile.ZipFile(work / ".whl" / "jaxcd_carried-0.1-py3-none-any.whl", "w") as z:
    for name, text in files.items():
      z.writestr(name, text)
  env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
  out = tmp_path / "out"
  p = subprocess.run([str(ROOT / "launch" / "gpu_suite.sh"), str(out), "--quick"], cwd=work,
                     env=env, capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  site = tmp_path / "jaxcd-site"
  assert (site / "jaxcd_carried" / "__init__.py").exists()
  check = subprocess.run([sys.executable, "-c", "import jaxcd_carried; print(jaxcd_carried.WHERE)"],
                         env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True, text=True)
  assert check.stdout.strip() == "carried"
  assert "jax " in (out / "devices.txt").read_text()
  saved = json.loads((out / "suite.json").read_text())
  assert saved["quick"] and [r["kind"] for r in saved["rows"]][:2] == ["model", "test_pass"]
  assert not [r for r in saved["rows"][:-1] if "error" in r]
  assert "| fc_siam_diff | float32 | 1 |" in p.stdout  # the table, printed last
