"""Shared fixtures. Real data comes from ../shared/data beside the repository (skipped when absent)."""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The suite compiles the same small programs many times (in-process and in subprocesses): a
# persistent XLA cache, shared through the environment, makes the repeats cheap. Results are
# unaffected (the cache is keyed on the program, flags and backend).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.environ.get("TMPDIR", "/tmp"), "jaxcd-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Most tests wait on XLA CPU compiles of small programs, a third of which is LLVM optimising
# machine code: the tests (and their subprocesses) skip that. The optimised HLO is the same; the
# machine code may round differently in a last bit (e.g. no FMA contraction), which no test sees:
# runs compared bit for bit all run under the same flags, parity tests have tolerances. Library
# convolutions and matmuls are unaffected. The user's XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")


@pytest.fixture(autouse=True, scope="session")
def _grain_workers_outside_app_run():
  from jaxcd import parallel
  parallel.allow_grain_workers()  # tests run outside absl's app.run, as notebooks do


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
  """$JAXCD_CACHE (seeded splits, decoded large images) in the test's tmp folder, inherited by
  the test's subprocesses: no test writes to ~/.cache or sees another's splits."""
  cache = tmp_path / "jaxcd-cache"
  monkeypatch.setenv("JAXCD_CACHE", str(cache))
  return cache


@pytest.fixture
def shared_data() -> Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real datasets not found at {SHARED_DATA} (they live beside the repository)")
  return SHARED_DATA


@contextlib.contextmanager
def strict_device_to_host():
  """On CPU a jax array lives in host memory and the device-to-host transfer guard never fires:
  within this, an implicit read (`float(x)`, `np.asarray(x)`, printing) under a disallowing guard
  raises as it does on GPU and TPU. `jax.device_get` stays allowed, as there. The trainer's step
  region runs under `jax.transfer_guard("disallow")`, so a run trained inside this fails on any
  implicit read there."""
  from jax._src import array, config
  value = array.ArrayImpl._value

  def guarded(self):
    if (config.transfer_guard_device_to_host.value == "disallow"
        and not config.guard_lib.thread_local_state().explicit_device_get):
      raise RuntimeError("Disallowed device-to-host transfer (implicit read of a jax.Array)")
    return value.fget(self)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(array.ArrayImpl, "_value", property(guarded))
    yield


def tiny_overrides(**extra) -> list[str]:
  """Command-line overrides turning configs/fc_siam_diff.py into a seconds-long run.

  A constant learning rate keeps the train step's program independent of num_steps, so runs of
  any length share one compiled program through the persistent cache."""
  o = dict(num_steps=6, eval_every=3, checkpoint_every=3, log_every=1, progress=False)
  o.update({"input.batch_size": 2, "input.eval_batch_size": 8, "data.image_size": 64,
            "data.num_train": 16, "data.num_val": 8, "data.num_test": 8,
            "optim.schedule": "constant"})
  o.update(extra)
  return [f"--config.{k}={v}" for k, v in o.items()]


def set_fields(c, fields: dict) -> None:
  """Sets dotted config fields in place: {"rcl.stage1_steps": 6} -> c.rcl.stage1_steps = 6."""
  for key, value in fields.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value


def tiny_config(**extra):
  """The same tiny run as a ConfigDict, for in-process tests."""
  from jaxcd.config_base import sibling
  c = sibling(str(REPO / "configs" / "x.py"), "fc_siam_diff")
  for flag in tiny_overrides(**extra):
    key, value = flag[len("--config."):].split("=", 1)
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    old = node[leaf]
    node[leaf] = type(old)(value) if not isinstance(old, bool) else value == "True"
  return c


def run_module(module: str, *args: str, env: dict | None = None, timeout: int = 600,
               check: bool = True) -> subprocess.CompletedProcess:
  """Runs `python -m module args` from the repository root; returns the completed process."""
  full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc


def last_json(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


def kill_when(cmd: list[str], path, timeout: float = 600) -> None:
  """Starts `cmd` from the repository root and SIGKILLs it as soon as `path` exists (e.g. a
  committed checkpoint; a glob pattern; or a function of no arguments that returns True when
  it is time); fails if the run ended before it could be killed."""
  import glob
  import signal
  import time
  due = path if callable(path) else lambda: bool(glob.glob(str(path)))
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while not due() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def train_cmd(test_module: str, workdir: str, **overrides) -> list[str]:
  """`python -c` training `tiny_config(**overrides)` of a test module (e.g.
  "methods.test_rcl") in `workdir`, as a separate process that can be killed."""
  code = ("import sys; sys.path[:0] = ['tests']; import importlib, json; "
          f"m = importlib.import_module({test_module!r}); "
          "from jaxcd import trainer; "
          "trainer.train_and_evaluate(m.tiny_config(**json.loads(sys.argv[2])), sys.argv[1])")
  return [sys.executable, "-c", code, workdir, json.dumps(overrides)]


def assert_same_checkpoint(a_dir, b_dir, step=None, which="checkpoints") -> None:
  """The `state` items of two checkpoints are bit-identical."""
  import jax
  import numpy as np
  from jaxcd import checkpointing
  a, sa = checkpointing.load_numpy(str(a_dir), step, which)
  b, sb = checkpointing.load_numpy(str(b_dir), step, which)
  assert sa == sb
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb) > 0
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)
