"""Shared fixtures. Real data comes from ../shared/data beside the repository (skipped when absent)."""
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


@pytest.fixture
def shared_data() -> Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real datasets not found at {SHARED_DATA} (they live beside the repository)")
  return SHARED_DATA


def tiny_overrides(**extra) -> list[str]:
  """Command-line overrides turning configs/fc_siam_diff.py into a seconds-long run."""
  o = dict(num_steps=6, eval_every=3, checkpoint_every=3, log_every=1, progress=False)
  o.update({"input.batch_size": 8, "input.eval_batch_size": 8, "data.image_size": 64,
            "data.num_train": 32, "data.num_val": 8, "data.num_test": 8})
  o.update(extra)
  return [f"--config.{k}={v}" for k, v in o.items()]


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
