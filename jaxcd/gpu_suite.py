"""`python -m jaxcd.bench --suite gpu --out DIR`: everything a lent GPU should measure, in one go.

  pip install -e ".[cuda,test]"
  python -m jaxcd.bench --suite gpu --out runs/gpu_suite          # < 8 min on one H100/H200
  python -m jaxcd.bench --suite gpu --out /tmp/suite --quick      # the same plumbing, any CPU

Parts, in order (each a list of `jaxcd.bench` result dicts in DIR/suite.json, a table in
DIR/suite.md):
  models     every registered model's train step and forward pass, pairs/s and MFU, in bfloat16
             and float32, at a batch that fills the chip: a probe at `probe_batch` gives the
             step's bytes per pair (XLA's memory analysis), the measured batch is the power of two
             that uses at most `fill` of the device's memory (capped at `max_batch`);
  test_pass  the LEVIR-CD-sized test pass: 2048 pairs of 256x256 through Dsfer-Net's evaluation
             (`ModelInference.evaluate`, the trainer's own), from host memory, pairs/s;
  hopfield   Dsfer-Net's Hopfield retrieval kernel: cuDNN attention against XLA's and the einsum;
  pipeline   the host input pipeline with 0 and several grain worker processes;
  tests      the fast test tier (`pytest -m "not slow"`) in a subprocess, its time and counts.
A part that fails records its one-line error and the suite goes on; parts past the time budget
are recorded as skipped. With --quick: small sizes, few steps, no fast tier (a test runs it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import optax

from jaxcd.errors import ConfigError, one_line

# The methods' own models first: a suite cut short by its budget still has them.
FIRST = ("dsfernet", "rcr", "cdcluster", "fc_siam_diff")


def _settings(quick: bool) -> dict[str, Any]:
  if quick:
    return dict(size=32, probe_batch=1, max_batch=2, steps=1, dtypes=("float32",),
                test_pairs=4, test_size=32, eval_batch=2, hopfield=dict(batch=1, tokens=64, dim=32),
                impls=("xla", "reference"), pipeline_batches=2, workers=(0, 1), budget_s=600.0,
                tests=False, models=("fc_siam_diff",))
  return dict(size=256, probe_batch=8, max_batch=256, steps=5, dtypes=("bfloat16", "float32"),
              test_pairs=2048, test_size=256, eval_batch=64,
              hopfield=dict(batch=8, tokens=4096, dim=512), impls=("xla", "cudnn", "reference"),
              pipeline_batches=50, workers=(0, 4), budget_s=420.0, tests=True, models=None)


def device_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("bytes_limit")


def fill_batch(probe: dict[str, Any], capacity: int | None, fill: float, probe_batch: int,
               max_batch: int) -> int:
  """The largest power of two <= max_batch whose step fits `fill` of `capacity`, from a probe's
  memory analysis: the arguments (mostly state) stay, the temporaries grow with the batch."""
  if not capacity or probe.get("train_temp_bytes") is None:
    return min(probe_batch, max_batch)
  per_pair = max(probe["train_temp_bytes"] / probe_batch, 1)
  room = fill * capacity - probe["train_argument_bytes"]
  b = probe_batch
  while b * 2 <= max_batch and (b * 2) * per_pair <= room:
    b *= 2
  return b


def _guarded(part: str, fn: Callable[[], Any]) -> Any:
  try:
    return fn()
  except Exception as e:  # noqa: BLE001  the suite records a part that fails and goes on
    return {"kind": part, "error": f"{type(e).__name__}: {one_line(e)[:300]}"}


def models_part(s: dict[str, Any], deadline: float, fill: float = 0.6) -> list[dict[str, Any]]:
  from jaxcd import bench
  from jaxcd.models import list_models
  names = list(s["models"] or ([m for m in FIRST if m in list_models()]
                               + [m for m in list_models() if m not in FIRST]))
  capacity = device_bytes()
  out = []
  for name in names:
    for dtype in s["dtypes"]:
      if time.monotonic() > deadline:
        out.append({"kind": "model", "model": name, "dtype": dtype,
                    "error": "skipped: the suite's time budget is spent"})
        continue

      def one():
        probe = bench.bench_model(name, batch=s["probe_batch"], size=s["size"], dtype=dtype,
                                  steps=1, num_devices=1)
        batch = fill_batch(probe, capacity, fill, s["probe_batch"], s["max_batch"])
        if batch == s["probe_batch"] and s["steps"] <= 1:
          return {**probe, "probe_batch": s["probe_batch"]}
        r = bench.bench_model(name, batch=batch, size=s["size"], dtype=dtype, steps=s["steps"],
                              num_devices=1)
        return {**r, "probe_batch": s["probe_batch"], "device_bytes": capacity}
      out.append(_guarded("model", one) | {"model": name, "dtype": dtype})
  return out


def test_pass(pairs: int, size: int, eval_batch: int, dtype: str = "bfloat16") -> dict[str, Any]:
  """Dsfer-Net's evaluation of `pairs` random size x size pairs from host memory, as the trainer
  evaluates a test split (`ModelInference.evaluate`: batches, transfers, confusion matrices)."""
  from jaxcd import config_base, parallel, state as state_lib
  from jaxcd.bench import LevirLikeSource
  from jaxcd.data.normalize import make_normalizer
  from jaxcd.methods.base import Method, ModelInference
  c = config_base.base_config()
  c.model.name, c.model.input_size, c.dtype = "dsfernet", size, dtype
  c.input.eval_batch_size, c.input.eval_tile, c.progress = eval_batch, size, False
  c.data.image_size = size
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = state_lib.build_model(c)
  st = state_lib.create_state(model, optax.identity(), (1, size, size, 3), 0, mesh)
  source = LevirLikeSource(n=pairs, size=size)
  inf = ModelInference(Method(c), model, make_normalizer(c), mesh)
  small = LevirLikeSource(n=eval_batch, size=size)
  t0 = time.perf_counter()
  inf.evaluate(st.params, st.batch_stats, None, small, "warm-up")  # compiles
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  res = inf.evaluate(st.params, st.batch_stats, None, source, "test")
  seconds = time.perf_counter() - t0
  d = jax.devices()[0]
  return {"kind": "test_pass", "model": "dsfernet", "pairs": pairs, "size": size,
          "eval_batch": eval_batch, "dtype": dtype, "seconds": seconds,
          "pairs_per_s": pairs / seconds, "warm_up_s": compile_s, "f1": res["f1"],
          "platform": d.platform, "device_kind": d.device_kind}


def fast_tier(timeout_s: float, workers: int = 4) -> dict[str, Any]:
  """`pytest -m "not slow"` in a subprocess: its wall time and its closing line."""
  t0 = time.perf_counter()
  cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-n", str(workers), "tests"]
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout_s, 1))
    tail = (p.stdout.strip().splitlines() or [""])[-1]
    rc = p.returncode
  except subprocess.TimeoutExpired:
    tail, rc = f"timed out after {timeout_s:.0f} s", None
  return {"kind": "tests", "command": " ".join(cmd[1:]), "returncode": rc, "summary": tail,
          "seconds": time.perf_counter() - t0}


def run_suite(out: str, quick: bool = False, emit: bool = False) -> list[dict[str, Any]]:
  """Runs every part within the budget; writes OUT/suite.json and OUT/suite.md; returns the rows."""
  from jaxcd import bench, cli
  if not out:
    raise ConfigError("--suite: give --out DIR for its suite.json and suite.md")
  os.makedirs(out, exist_ok=True)
  s = _settings(quick)
  start = time.monotonic()
  deadline = start + s["budget_s"]
  rows: list[dict[str, Any]] = []

  def add(r):
    rows.extend(r if isinstance(r, list) else [r])
    for x in (r if isinstance(r, list) else [r]):
      if emit:
        cli.print_json(x)
    _write(out, rows, quick, time.monotonic() - start)

  # The models get what the later parts leave: about 60% of the budget.
  add(models_part(s, start + 0.6 * s["budget_s"]))
  add(_guarded("test_pass", lambda: test_pass(s["test_pairs"], s["test_size"], s["eval_batch"])))
  add(_guarded("kernel", lambda: bench.bench_hopfield(dtype="bfloat16", impls=s["impls"],
                                                       steps=max(s["steps"], 1),
                                                       **s["hopfield"])))
  for w in s["workers"]:
    add(_guarded("pipeline", lambda: bench.bench_pipeline(
        "levir_like", batch=8, num_batches=s["pipeline_batches"], worker_count=w,
        size=s["size"])))
  if s["tests"]:
    add(fast_tier(deadline + 120 - time.monotonic()))
  else:
    add({"kind": "tests", "skipped": "--quick: the fast tier is not run"})
  return rows


def _write(out: str, rows: list[dict[str, Any]], quick: bool, seconds: float) -> None:
  d = jax.devices()[0]
  head = {"device_kind": d.device_kind, "platform": d.platform, "jax": jax.__version__,
          "quick": quick, "seconds": round(seconds, 1)}
  with open(os.path.join(out, "suite.json"), "w") as f:
    json.dump({**head, "rows": rows}, f, indent=1, default=str)
  with open(os.path.join(out, "suite.md"), "w") as f:
    f.write(markdown(head, rows))


def _pct(x) -> str:
  return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


def markdown(head: dict[str, Any], rows: list[dict[str, Any]]) -> str:
  lines = [f"# GPU suite on {head['device_kind']} ({head['platform']}, jax {head['jax']})", "",
           f"{'Reduced run (--quick). ' if head['quick'] else ''}Total {head['seconds']} s.", "",
           "| model | dtype | batch | train pairs/s | MFU | forward pairs/s | fwd MFU "
           "| compile s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    if r.get("kind") != "model":
      continue
    if "error" in r:
      lines.append(f"| {r['model']} | {r['dtype']} | - | {r['error'][:80]} | | | | |")
      continue
    lines.append(f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['train_pairs_per_s']:.1f} | "
                 f"{_pct(r['mfu'])} | {r['fwd_pairs_per_s']:.1f} | {_pct(r['fwd_mfu'])} | "
                 f"{r['compile_s']:.1f} |")
  lines.append("")
  for r in rows:
    kind = r.get("kind")
    if kind == "model":
      continue
    if "error" in r or "skipped" in r:
      lines.append(f"- {kind}: {r.get('error') or r.get('skipped')}")
    elif kind == "test_pass":
      lines.append(f"- test pass: {r['pairs']} pairs of {r['size']}x{r['size']} through "
                   f"dsfernet ({r['dtype']}, batch {r['eval_batch']}): {r['seconds']:.1f} s, "
                   f"{r['pairs_per_s']:.1f} pairs/s")
    elif kind == "kernel":
      from jaxcd.bench import _describe_kernel
      lines.append(f"- {_describe_kernel(r)}")
    elif kind == "pipeline":
      from jaxcd.bench import _describe_pipeline
      lines.append(f"- {_describe_pipeline(r)}")
    elif kind == "tests":
      lines.append(f"- fast tier: `{r['command']}`: {r['summary']} in {r['seconds']:.0f} s")
  return "\n".join(lines) + "\n"
