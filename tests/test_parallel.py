"""Data parallelism: 8 fake CPU devices vs 1 device, 2 processes vs 1 process, and the
collectives of two-stream steps on 4 fake devices."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, tiny_overrides
from jaxcd import checkpointing, writers

pytestmark = pytest.mark.slow  # end-to-end runs


def test_sharded_step_equals_single_device_step():
  proc = subprocess.run([sys.executable, str(REPO / "tests" / "sharded_step_check.py")], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  import json
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  assert r["devices"] == 8
  assert r["init_params"] == 0.0  # same initialisation on both meshes
  # Tolerances: float32 reductions in another order (per-device partial sums + all-reduce),
  # amplified by BatchNorm's backward pass: measured loss rel. diff ~1e-7 and gradient diff
  # ~1e-4 of the gradient scale. Per-device BatchNorm statistics, a wrong batch or a missing
  # all-reduce differ by ~1e-1.
  assert r["loss_8"] == pytest.approx(r["loss_1"], rel=1e-5)
  assert r["grad_max_abs_diff"] <= 1e-3 * r["grad_scale"], r
  # BatchNorm statistics cover the global batch on both meshes (not per-device batches).
  assert r["batch_stats_max_abs_diff"] <= 1e-5, r


def test_two_stream_steps_move_no_rows_between_devices():
  """RCR's and AdvNet's compiled steps on 4 devices: the labeled/unlabeled split of each device's
  rows is local, so the only collectives are the all-reduces of gradients and BatchNorm
  statistics. Splitting [all labeled; all unlabeled] instead compiles to 10 collective-permutes
  (and AdvNet's [p_l; p_u] concatenation to all-to-alls)."""
  import json
  proc = _run([sys.executable, str(REPO / "tests" / "stream_layout_check.py"), "rcr", "advnet"])
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  for method, ops in r.items():
    assert ops["all-reduce"]["count"] > 0, method  # partitioned over the 4 devices
    moved = {op: v for op, v in ops.items() if op != "all-reduce" and v["count"]}
    assert not moved, (method, moved)


def _run(cmd, env=None):
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                        env={**os.environ, **(env or {})})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_two_processes_match_one_process(tmp_path):
  # SGD keeps parameters that BatchNorm makes irrelevant (conv biases) from amplifying rounding
  # noise the way Adam's normalised steps do, so parameters can be compared directly.
  # Batch 8 (4 per process) on 32 pairs with the poly schedule: the tolerances below were
  # measured there; at 1 pair per process, or at a constant rate, BatchNorm's backward
  # amplifies the reduction-order rounding past them.
  extra = tiny_overrides(**{"num_steps": 6, "optim.name": "sgd", "optim.lr": 0.05,
                            "optim.schedule": "poly", "input.batch_size": 8,
                            "data.num_train": 32})
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  train = [sys.executable, "-m", "jaxcd.train", "--config", "configs/fc_siam_diff.py"]
  _run(train + ["--workdir", one] + extra)
  _run(["bash", "launch/local.sh", "2"] + train + ["--workdir", two] + extra,
       env={"JAX_PLATFORMS": "cpu"})
  a, step_a = checkpointing.load_numpy(one)
  b, step_b = checkpointing.load_numpy(two)
  assert step_a == step_b == 6
  # Tolerance: 6 SGD steps of float32 rounding in another reduction order (measured ~2e-5 on
  # weights of magnitude ~0.2); a wrong batch, BatchNorm or gradient would differ by >1e-2.
  for x, y in zip(jax.tree_util.tree_leaves(a["params"]), jax.tree_util.tree_leaves(b["params"])):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
  loss_1 = [r["loss"] for r in writers.read_metrics(one) if r["split"] == "train"]
  loss_2 = [r["loss"] for r in writers.read_metrics(two) if r["split"] == "train"]
  assert len(loss_1) == len(loss_2) == 6
  np.testing.assert_allclose(loss_2, loss_1, rtol=1e-4)
  rows_1 = [r for r in writers.read_metrics(one) if r["split"] in ("val", "test")]
  rows_2 = [r for r in writers.read_metrics(two) if r["split"] in ("val", "test")]
  assert [(r["split"], r["step"]) for r in rows_1] == [(r["split"], r["step"]) for r in rows_2]
  for r1, r2 in zip(rows_1, rows_2):
    assert r1["pixels"] == r2["pixels"]  # every evaluation pixel counted once across processes
    assert r2["f1"] == pytest.approx(r1["f1"], abs=1e-3)
    assert r2["kappa"] == pytest.approx(r1["kappa"], abs=1e-3)
