"""The trainer's step compiled ahead of time for a TPU topology, on a machine with no TPU.

  pip install -e ".[tpu]"   # libtpu: XLA's TPU compiler, which runs on the CPU
  python -m jaxcd.bench --aot v5p:4x4x4 --model dsfernet --batch_per_chip 8 --dtype bfloat16 --json
  python -m jaxcd.bench --aot v5e:2x2 --config configs/fc_siam_diff.py --max_batch --json
  python -m jaxcd.bench --aot v5p --aot_scaling --model fc_siam_diff --json   # 4 -> 256 chips
  python -m jaxcd.bench --aot v5p --aot_scaling --aot_chips 4,64,256 --max_batch \
      --config configs/rcr_levir.py --size 256 --dtype bfloat16 --json --aot_jobs 4

`jax.experimental.topologies` gives compile-only devices of the topology; the method's own
`train_step` (what `jaxcd.trainer` jits: same function, shardings and donation) is lowered with
shape-only state and batch sharded over a mesh of them and compiled by libtpu. The executable's
memory analysis gives HBM per chip; its cost analysis the FLOPs and `optimal_seconds`, XLA's TPU
cost model's step time; its HLO the collectives and the `suspects`, what a bf16 step should not
hold (f32 matmuls, gathers, scatters, transposes, copies), each with the JAX ops it came from.
Every time, throughput and MFU here is that cost model's ESTIMATE, never a measurement (nothing
runs).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import queue
import re
import tempfile
import threading
import time
from typing import Any, Callable

import jax
import numpy as np

from jaxcd import config_base, parallel
from jaxcd.errors import ConfigError, one_line
from jaxcd.trainer import check_config

ESTIMATE = "XLA TPU cost model estimate (compiled, not run)"
# Tracing is Python and touches the config; libtpu compiles on a thread of its own without the GIL,
# so concurrent probes lower one at a time and compile together. The log is appended under it too.
_LOCK = threading.Lock()

# ~3.6x less compile CPU for FC-Siam-diff on v5p (libtpu 0.0.42.1), the same fusions, FLOPs and
# collectives; but no memory-space assignment (no VMEM prefetches), so HBM and `optimal_seconds`
# are not those of the program training runs. For quick looks at program structure only.
FAST_COMPILE = {"exec_time_optimization_effort": -1.0}


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_bytes: int
  peak_bf16_flops: float
  source: str


# By `device_kind` of the compile-only devices. Dense bf16 peaks and HBM per chip (Cloud TPU docs,
# system architecture pages); MFU always uses the bf16 peak, the MXU's native rate.
CHIPS: dict[str, Chip] = {
    "TPU v4": Chip(32 * 2**30, 275e12, "Cloud TPU v4: 32 GiB HBM2, 275 TFLOP/s bf16"),
    "TPU v5 lite": Chip(16 * 2**30, 197e12, "Cloud TPU v5e: 16 GiB HBM2, 197 TFLOP/s bf16"),
    "TPU v5": Chip(95 * 2**30, 459e12, "Cloud TPU v5p: 95 GiB HBM2e, 459 TFLOP/s bf16"),
    "TPU v6 lite": Chip(32 * 2**30, 918e12, "Cloud TPU v6e: 32 GiB HBM, 918 TFLOP/s bf16"),
}

# Weak-scaling series of `--aot_scaling`: chips -> topology name, per generation.
SCALING = {
    "v5p": {4: "v5p:2x2x1", 16: "v5p:2x2x4", 64: "v5p:4x4x4", 256: "v5p:8x8x4"},
    "v5e": {4: "v5e:2x2", 16: "v5e:4x4", 64: "v5e:8x8", 256: "v5e:16x16"},
}


def accepted_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
  """The subset of kwargs that model `name` has fields for (so `--model all` can share them)."""
  from jaxcd.models import _REGISTRY, _import_all
  _import_all()
  if name not in _REGISTRY:
    return kwargs  # get_model names the unknown model
  cls = _REGISTRY[name]
  if dataclasses.is_dataclass(cls):
    names = {f.name for f in dataclasses.fields(cls)}
  else:  # a factory function (cdcluster): its parameters, unless it takes **kwargs
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
      return kwargs
    names = {p.name for p in params}
  return {k: v for k, v in kwargs.items() if k in names}


def libtpu_available() -> bool:
  import importlib.util
  return importlib.util.find_spec("libtpu") is not None


def topology_devices(name: str) -> list:
  """Compile-only devices of a TPU topology such as "v5p:2x2x1" or "v5e:16x16"."""
  if not libtpu_available():
    raise ConfigError("--aot needs XLA's TPU compiler: pip install -e '.[tpu]' (libtpu)")
  # libtpu takes an exclusive lock on its chips; compiling needs none, and another jax process
  # on this machine (which loads libtpu too once installed) may hold it.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  try:
    return list(topologies.get_topology_desc(name, "tpu").devices)
  except Exception as e:  # noqa: BLE001  libtpu's messages name the bad topology
    raise ConfigError(f"--aot {name!r}: not a TPU topology libtpu knows ({one_line(e)[:200]}); "
                      "e.g. v5p:2x2x1, v5p:4x4x4, v5e:2x2, v5e:16x16") from None


# --- the trainer's step on abstract inputs -----------------------------------------------------

def aot_config(config=None, *, model: str | None = None, size: int | None = None,
               dtype: str | None = None, model_kwargs: dict[str, Any] | None = None):
  """The training config to compile: `config` (a configs/*.py result; default the base config)
  with the given overrides. Only the data's shapes matter to a compile, so the data become a few
  synthetic pairs of the config's bands and size: a paper config (e.g. configs/rcr_levir.py)
  compiles here without its dataset on disk."""
  c = config_base.base_config() if config is None else config
  c = c.unlock() if hasattr(c, "unlock") else c
  if c.data.name != "synthetic":
    side = size or c.input.crop_size or c.data.get("image_size") or 256
    config_base.on_dataset(c, "synthetic")
    c.data.image_size = side
  if model:
    c.model.name = model
  if size:
    c.data.image_size = size
    c.input.crop_size = min(c.input.crop_size, size)
    if "input_size" in accepted_kwargs(c.model.name, {"input_size": size}):
      c.model.input_size = size  # e.g. dsfernet's (C,H,W) LayerNorms: built per size
  c.model.update(model_kwargs or {})
  if dtype:
    c.dtype = dtype
  c.data.num_train, c.data.num_val, c.data.num_test = 32, 4, 4
  return c


@dataclasses.dataclass
class TrainStep:
  """The jitted step and the abstract (ShapeDtypeStruct, sharded) arguments it is lowered with."""
  step: Callable
  state: Any
  batch: dict[str, jax.ShapeDtypeStruct]
  method: str
  stage: str


def _method_and_stage(config, mesh, workdir: str):
  """The config's method, a `Run` on `mesh` and its first stage, as the trainer builds them."""
  from jaxcd import state as state_lib
  from jaxcd.data import source_from_config
  from jaxcd.data.normalize import make_normalizer
  from jaxcd.methods.base import ModelInference, Run
  method = check_config(config)
  if not method.trains:
    raise ConfigError(f"config.method: {config.method!r} trains nothing; no step to compile")
  train_src = source_from_config(config.data, "train")
  val_src = source_from_config(config.data, "val")
  model, normalize = method.build_model(), make_normalizer(config)
  # Built like `trainer.make_run` (stages may jit with its inference, e.g. CDCluster's counts).
  run = Run(config, workdir, mesh, model, normalize, train_src, val_src,
            state_lib.sample_shape(train_src, config), None,
            ModelInference(method, model, normalize, mesh))
  return method, run, method.stages(run)[0]


def train_step(config, mesh, global_batch: int) -> TrainStep:
  """The method's train step for `mesh` (`Method.train_step`, which the trainer jits), with its
  state and a `global_batch` batch as sharded ShapeDtypeStructs: nothing is allocated."""
  config = config.copy_and_resolve_references()
  check_config(config).resize_batch(global_batch, mesh.devices.size)
  with tempfile.TemporaryDirectory(prefix="jaxcd-aot-") as workdir:
    method, run, stage = _method_and_stage(config, mesh, workdir)
    tx, _ = method.optimizer(run, stage)
    # The shapes and shardings of `method.init_state`'s result.
    state = method.abstract_state(run.model, tx, run.sample_shape, mesh)
    step = method.train_step(run, stage, state, tx)
    batch = _batch_spec(config, mesh, global_batch, workdir, stage.name)
  return TrainStep(step, state, batch, method.name, stage.name)


def _batch_spec(config, mesh, global_batch: int, workdir: str, stage_name: str):
  """The shapes of one global batch of the stage's own data stream (`Method.data`), read from a
  host batch of a pair per stream and host device: the loop feeds what `parallel.to_global`
  keeps of it."""
  small, host_devices = config.copy_and_resolve_references(), jax.device_count()
  small.input.worker_count = 0
  check_config(small).resize_batch(2 * host_devices, host_devices)
  method, run, _ = _method_and_stage(small, jax.sharding.Mesh(np.array(jax.devices()[:1]),
                                                              (parallel.DATA_AXIS,)), workdir)
  stage = next(s for s in method.stages(run) if s.name == stage_name)
  host = next(method.data(run, stage))
  sharding = parallel.data_sharded(mesh)
  spec = {}
  for k, v in host.items():
    v = np.asarray(v)
    if v.dtype.kind in "US O":
      continue
    spec[k] = jax.ShapeDtypeStruct((global_batch * len(v) // (2 * host_devices),) + v.shape[1:],
                                   v.dtype,
                                   sharding=sharding)
  return spec


# --- what the compiled executable says ---------------------------------------------------------

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2,
          "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
          "c128": 16}
_SHAPE = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9][a-z0-9]*)?)\[([0-9,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = (.+?) (" + "|".join(COLLECTIVES) +
                    r")(-start)?\(", re.M)


def _shape_bytes(text: str) -> int:
  total = 0.0
  for dtype, dims in _SHAPE.findall(text):
    size = _BYTES.get(dtype, 1 if dtype.startswith("f8") else None)
    if size is None:
      continue
    total += size * math.prod(int(d) for d in dims.split(",") if d)
  return int(total)


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """Count and result bytes (per chip) of each collective in compiled HLO text, as written: an
  async pair counts once (its -start), one inside a loop body once."""
  out = {op: {"count": 0, "bytes": 0} for op in COLLECTIVES}
  for shape, op, start in _INSTR.findall(hlo_text):
    if start and shape.startswith("("):
      # An async start's result is (operands, outputs[, context]): count the outputs only.
      parts = _top_level(shape[1:-1])
      shape = parts[1] if len(parts) > 1 else parts[0]
    out[op]["count"] += 1
    out[op]["bytes"] += _shape_bytes(shape)
  return out


_DEF = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|[a-z]+[0-9]*(?:e[0-9]m[0-9][a-z0-9]*)?"
                  r"\[[0-9,]*\]\S*) ([\w\-]+)\(([^)]*)\)(.*)$", re.M)
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# What a bf16 step should not hold (or hold little of): matmul work in f32, data movement.
SUSPECTS = ("f32_convolution", "gather", "scatter", "transpose", "copy")


def suspects(hlo_text: str, top: int = 3) -> dict[str, dict[str, Any]]:
  """Count, result bytes and the commonest JAX sources (`op_name`) of the ops in compiled HLO text
  that a bf16 step wastes time on: convolutions (the MXU's matmuls) with an f32 operand, gathers
  and scatters, transposes and copies (layout changes). Fused computations count too."""
  dtype_of = {}
  rows = []
  for name, shape, op, operands, rest in _DEF.findall(hlo_text):
    dtype_of[name] = shape.split("[", 1)[0]
    rows.append((shape, op, operands, rest))
  out = {k: {"count": 0, "bytes": 0, "sources": {}} for k in SUSPECTS}
  for shape, op, operands, rest in rows:
    if op == "convolution":
      names = [o.strip().lstrip("%") for o in operands.split(",")]
      if not any(dtype_of.get(n) == "f32" for n in names):
        continue
      op = "f32_convolution"
    elif op not in out:
      continue
    entry = out[op]
    entry["count"] += 1
    entry["bytes"] += _shape_bytes(shape)
    src = _OP_NAME.search(rest)
    src = src.group(1).removeprefix("jit(step)/") if src else "?"
    entry["sources"][src] = entry["sources"].get(src, 0) + 1
  for entry in out.values():
    entry["sources"] = dict(sorted(entry["sources"].items(), key=lambda kv: -kv[1])[:top])
  return out


def _top_level(text: str) -> list[str]:
  parts, depth, cur = [], 0, ""
  for ch in text:
    depth += ch in "({[" and 1 or (-1 if ch in ")}]" else 0)
    if ch == "," and depth == 0:
      parts.append(cur.strip())
      cur = ""
    else:
      cur += ch
  return parts + [cur.strip()] if cur.strip() else parts


def _cost(compiled) -> dict[str, float]:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return dict(ca or {})


def analyse(compiled, devices, global_batch: int) -> dict[str, Any]:
  """HBM per chip, FLOPs per chip, XLA's estimated step time and what follows, collectives.
  XLA's cost analysis counts a loop body once: the FLOPs (so the MFU) of a step with a scan or a
  while loop (e.g. RCR's auxiliary decoders) are a lower bound."""
  kind = devices[0].device_kind
  chip = CHIPS.get(kind)
  ma = compiled.memory_analysis()
  hbm = {"arguments": int(ma.argument_size_in_bytes), "temporaries": int(ma.temp_size_in_bytes),
         "outputs": int(ma.output_size_in_bytes), "aliased": int(ma.alias_size_in_bytes),
         "generated_code": int(ma.generated_code_size_in_bytes)}
  # Donated state: outputs aliased to arguments occupy no second buffer.
  hbm["total"] = (hbm["arguments"] + hbm["outputs"] - hbm["aliased"] + hbm["temporaries"]
                  + hbm["generated_code"])
  hbm["capacity"] = chip.hbm_bytes if chip else None
  cost = _cost(compiled)
  flops = float(cost.get("flops", 0.0))
  raw = float(cost.get("optimal_seconds", -1.0))
  est = raw if raw > 0 else None  # <= 0: the cost model gave no estimate for this program
  chips = len(devices)
  peak = chip.peak_bf16_flops if chip else None
  return {
      "chips": chips, "device_kind": kind, "global_batch": global_batch,
      "batch_per_chip": global_batch // chips, "hbm_per_chip_bytes": hbm,
      "fits_hbm": hbm["total"] <= chip.hbm_bytes if chip else None,
      "flops_per_chip": flops, "bytes_accessed_per_chip": float(cost.get("bytes accessed", 0.0)),
      "est_step_s": est, "optimal_seconds": raw,
      "est_pairs_per_s": global_batch / est if est else None,
      "est_mfu": flops / est / peak if est and peak else None,
      "peak_bf16_flops_per_chip": peak, "chip_source": chip.source if chip else None,
      "estimates": ESTIMATE,
      **_from_hlo(compiled),
  }


_FUSION = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = .*? fusion\(.*?\bkind=(k\w+)", re.M)


def fusions(hlo_text: str) -> dict[str, int]:
  """Fusion instructions in compiled HLO text by kind (kLoop, kInput, kOutput, kCustom): the
  TPU backend generates code per fusion, so this is the program size its compile time follows."""
  out: dict[str, int] = {}
  for kind in _FUSION.findall(hlo_text):
    out[kind] = out.get(kind, 0) + 1
  return out


def _from_hlo(compiled) -> dict[str, Any]:
  try:
    text = compiled.as_text()
  except Exception as e:  # noqa: BLE001  a libtpu newer than jaxlib can emit HLO it cannot print
    return {"collectives": {"error": f"HLO text unavailable ({one_line(e)[:160]}); install the "
                                     "libtpu jax pins: pip install -e '.[tpu]'"}, "fusions": {},
            "suspects": {}}
  return {"collectives": collectives(text), "fusions": fusions(text), "suspects": suspects(text)}


# --- entry points ---------------------------------------------------------------------------------

def compile_key(topology: str, config, batch_per_chip: int,
                compiler_options: dict[str, Any] | None = None) -> str:
  """What makes one compile's report: the topology, the batch per chip, the whole config, the
  compiler options, the jax and libtpu versions and jaxcd's own source."""
  from importlib import metadata
  libtpu = metadata.version("libtpu") if libtpu_available() else None
  text = json.dumps([topology, batch_per_chip, json.loads(config.to_json_best_effort()),
                     compiler_options or {}, jax.__version__, libtpu, _source_digest()],
                    sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
  """jaxcd's Python sources: an edited model or method compiles to another program."""
  root = os.path.dirname(os.path.abspath(__file__))
  h = hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(f for f in filenames if f.endswith(".py")):
      path = os.path.join(dirpath, name)
      h.update(os.path.relpath(path, root).encode())
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def read_log(path: str) -> dict[str, dict[str, Any]]:
  """The reports of an --aot_log file by `key` (none if it does not exist yet)."""
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      lines = f.readlines()
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f"--aot_log {path}: cannot read it ({one_line(e)})") from None
  out = {}
  for i, line in enumerate(lines, 1):
    try:
      r = json.loads(line) if line.strip() else {}
    except json.JSONDecodeError as e:
      raise ConfigError(f"--aot_log {path}: line {i} is not a JSON report ({e.msg})") from None
    if not isinstance(r, dict):
      raise ConfigError(f"--aot_log {path}: line {i} is not a JSON object")
    if "key" in r:
      out[r["key"]] = r
  return out


def check_log(path: str) -> None:
  """A bad --aot_log says so before the first compile (hours may follow), not after it."""
  read_log(path)
  try:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a"):
      pass
  except OSError as e:
    raise ConfigError(f"--aot_log {path}: cannot append to it ({e.strerror})") from None


def compile_step(topology: str, config, batch_per_chip: int,
                 compiler_options: dict[str, Any] | None = None,
                 log: str | None = None) -> dict[str, Any]:
  """Compiles the trainer's step for `topology` at `batch_per_chip` pairs per chip; its report.
  `compiler_options` (e.g. FAST_COMPILE) compile a different program than training runs: the
  report names them, and its estimates and HBM are that program's. `log`: a JSON-lines file
  where each report is appended and whence a compile of the same `compile_key` is read back
  instead of compiled again, so a search cut off after hours of probes resumes where it stopped."""
  if batch_per_chip <= 0:
    raise ConfigError(f"--batch_per_chip must be positive, got {batch_per_chip}")
  key = compile_key(topology, config, batch_per_chip, compiler_options)
  if log and key in (earlier := read_log(log)):
    return dict(earlier[key], from_log=log)
  r = dict(_compile(topology, config, batch_per_chip, compiler_options), key=key)
  if log:
    with _LOCK, open(log, "a") as f:
      f.write(json.dumps(r) + "\n")
  return r


def compile_steps(topology: str | list[str], config, batches: list[int],
                  compiler_options: dict[str, Any] | None = None, log: str | None = None,
                  jobs: int = 1, report: Callable[[dict], None] | None = None) -> list[dict]:
  """`compile_step` for each batch (and topology, one per batch if a list), up to `jobs` compiles
  at once: the TPU compile of one step uses one core, a search on a many-core host need not wait
  for each probe in turn. Each report comes to `report` as its compile ends; the list keeps the
  batches' order. With more than one job, `compile_cpu_s` is the whole process's CPU over the
  compile (the compiles share it) and the wall times are those of compiles run side by side.
  The compiles run on daemon threads, so Ctrl-C stops the search at once (the log keeps what
  finished) instead of waiting for compiles of half an hour."""
  topologies = topology if isinstance(topology, list) else [topology] * len(batches)
  if jobs < 1:
    raise ConfigError(f"--aot_jobs must be at least 1, got {jobs}")
  out: list[dict] = [{}] * len(batches)
  todo, running, ended = list(enumerate(zip(topologies, batches))), 0, queue.Queue()

  def work(i: int, t: str, b: int) -> None:
    try:
      ended.put((i, compile_step(t, config, b, compiler_options, log), None))
    except BaseException as e:  # noqa: BLE001  raised again in the caller's thread
      ended.put((i, None, e))
  while todo or running:
    while todo and running < jobs:
      i, (t, b) = todo.pop(0)
      if jobs == 1:  # in this thread, as a single compile is
        work(i, t, b)
      else:
        threading.Thread(target=work, args=(i, t, b), daemon=True).start()
      running += 1
    i, r, e = ended.get()
    running -= 1
    if e is not None:
      raise e
    out[i] = r
    if report:
      report(r)
  return out


def _compile(topology: str, config, batch_per_chip: int,
             compiler_options: dict[str, Any] | None) -> dict[str, Any]:
  with _LOCK:
    devices = topology_devices(topology)
    mesh = parallel.make_mesh(devices)
    global_batch = batch_per_chip * len(devices)
    t0 = time.perf_counter()
    ts = train_step(config, mesh, global_batch)
    lowered = ts.step.lower(ts.state, ts.batch)
    lower_s = time.perf_counter() - t0
  size = ts.batch["image_a"].shape[1] if "image_a" in ts.batch else None
  head = {"kind": "aot", "topology": topology, "model": config.model.name, "method": ts.method,
          "stage": ts.stage, "dtype": config.dtype, "size": size, "chips": len(devices),
          "global_batch": global_batch, "batch_per_chip": batch_per_chip}
  tail = {"compiler_options": dict(compiler_options or {}), "compiled_on": _host()}
  t0, cpu0 = time.perf_counter(), time.process_time()
  try:
    compiled = lowered.compile(compiler_options=compiler_options or None)
  except Exception as e:  # noqa: BLE001
    if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
      return {**head, "fits_hbm": False, "compile_error": one_line(e)[:300],
              "lower_s": lower_s, "compile_s": time.perf_counter() - t0,
              "compile_cpu_s": time.process_time() - cpu0, **tail}
    raise
  # CPU seconds (all threads): on a shared machine the wall time says more about the neighbours.
  compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
  return {**head, **analyse(compiled, devices, global_batch), "lower_s": lower_s,
          "compile_s": compile_s, "compile_cpu_s": compile_cpu_s, **tail}


def _host() -> str:
  return f"{os.cpu_count()}-core CPU, jax {jax.__version__}"


def max_batch(topology: str, config, start: int = 8, limit: int = 4096,
              report: Callable[[dict], None] | None = None,
              known: dict[int, dict] | None = None,
              compiler_options: dict[str, Any] | None = None,
              log: str | None = None, jobs: int = 1, scout: bool = False) -> dict[str, Any]:
  """The largest batch per chip whose compiled step fits the chip's HBM. Each probe compiles, so
  the probes follow the memory line through the two probes nearest the capacity (HBM grows about
  linearly with the batch: from `start` and 2 x `start`, usually two more probes settle it: the
  predicted batch fits and one more does not), falling back to doubling and bisection whenever
  the line misleads. `known`: reports already compiled for `topology` (batch per chip -> report),
  each a point of the line from the start. `jobs`: probes compiled at once, each round the line's
  batch, the one after it and points spread over the rest of the bracket in case the line errs.
  `scout`: search first with FAST_COMPILE, whose HBM is close to the training program's
  (CDCluster's: 0.02-0.04 GiB less) but whose compile skips memory-space assignment, the part
  that grows with the batch (a minute where the training program takes half an hour); then settle
  the answer with the training program's compiles from the scouts' batch, their memory as the
  line's points. The answer is the training program's either way."""
  hints: dict[int, dict] = {}
  scouted: dict[str, Any] = {}
  if scout and not compiler_options:
    fast, fast_rounds, fast_lo, _ = _search(topology, config, start, limit, report, None,
                                             FAST_COMPILE, log, jobs, {})
    hints = {b: r for b, r in fast.items() if "hbm_per_chip_bytes" in r}
    start = fast_lo or start
    scouted = dict(max_batch_scout=fast_lo, max_batch_scout_rounds=fast_rounds)
  probes, rounds, lo, hi = _search(topology, config, start, limit, report, known,
                                   compiler_options, log, jobs, hints)
  out = dict(probes[lo or min(probes)])  # none fits: the smallest probe says by how much
  out.update(max_batch_per_chip=lo, max_batch_limit=limit, max_batch_probes=list(probes),
             max_batch_rounds=rounds, max_batch_at_limit=hi is None, **scouted)
  return out


def _search(topology, config, start, limit, report, known, compiler_options, log, jobs, hints):
  """`max_batch`'s probes: (reports by batch, the rounds' batches, largest fit, smallest not)."""
  probes: dict[int, dict] = {}
  rounds: list[list[int]] = []
  lo, hi = 0, None  # the largest batch that fits; the smallest that does not

  def take(b: int, r: dict) -> None:
    nonlocal lo, hi
    probes[b] = r
    if r["fits_hbm"]:
      lo = max(lo, b)
    else:
      hi = b if hi is None else min(hi, b)

  def bound() -> int:  # the smallest batch that does not fit, or one past the limit
    return limit + 1 if hi is None else hi

  def run(picks: list[int]) -> None:
    picks = list(dict.fromkeys(b for b in picks if lo < b < bound() and b not in probes))[:jobs]
    picks = picks or [(lo + bound()) // 2]
    rounds.append(picks)
    for b, r in zip(picks, compile_steps(topology, config, picks, compiler_options, log, jobs,
                                         report)):
      take(b, r)

  def total(r: dict) -> float:
    return r["hbm_per_chip_bytes"]["total"]

  def capacity(r: dict) -> float:
    return r["hbm_per_chip_bytes"]["capacity"]

  def predicted() -> int | None:
    # The scouts' memory, moved by what the two programs differ by at the probe nearest the
    # capacity that both compiled.
    both = [b for b in probes if b in hints and "hbm_per_chip_bytes" in probes[b]]
    b0 = min(both, key=lambda b: abs(total(probes[b]) - capacity(probes[b])), default=None)
    shift = 0 if b0 is None else total(probes[b0]) - total(hints[b0])
    points = [(b, total(r) + (shift if b not in probes else 0), capacity(r))
              for b, r in {**hints, **probes}.items() if "hbm_per_chip_bytes" in r]
    if len(points) < 2 or not points[0][2]:
      return None
    (b1, t1, cap), (b2, t2, _) = sorted(points, key=lambda p: abs(p[2] - p[1]))[:2]
    if b1 == b2 or (t2 - t1) / (b2 - b1) <= 0:
      return None
    return b1 + math.floor((cap - t1) / ((t2 - t1) / (b2 - b1)))

  for b in sorted(known or {}):
    if b <= limit:
      take(b, known[b])
  last, expect = min(start, limit), None  # the last guess, and what the line said of it
  if hints:  # the scouts' answer and its neighbour settle it if they hold (either may be known)
    if last not in probes:
      run([last, last + 1])
    step = last + 1 if probes[last]["fits_hbm"] else last - 1
    if step not in probes and lo < step < bound():
      run([step])
  elif last not in probes:
    run([min(k * last, limit) for k in range(1, jobs + 1)])
  while not (hi is not None and hi - lo <= 1) and not (hi is None and lo >= limit):
    line = predicted()  # the line: batches up to it fit
    if line is None or (expect is not None and probes[last]["fits_hbm"] != expect):
      if hi is None:  # doubling, then its multiples
        guess, expect, rest = min(2 * lo, limit), None, [min(k * lo, limit)
                                                         for k in range(3, jobs + 2)]
      else:  # bisection, or with n jobs the bracket cut in n + 1
        guess, expect, rest = (lo + hi) // 2, None, _spread(lo, hi, jobs)
    elif line <= lo:
      guess, expect, rest = lo + 1, False, _spread(lo + 1, bound(), jobs - 1)
    else:
      guess, expect = min(line, bound() - 1), True
      rest = [guess + 1] + _spread(lo, guess, jobs - 2)
    last = guess
    run([guess] + rest)
  return probes, rounds, lo, hi


def _spread(a: int, z: int, n: int) -> list[int]:
  """Up to n batches spread evenly strictly between a and z."""
  return sorted({a + (z - a) * k // (n + 1) for k in range(1, n + 1)} - {a, z}) if n > 0 else []


def scaling(generation: str, config, batch_per_chip: int, chips=(4, 16, 64, 256),
            report: Callable[[dict], None] | None = None,
            compiler_options: dict[str, Any] | None = None,
            log: str | None = None, jobs: int = 1) -> list[dict[str, Any]]:
  """Weak scaling: the same batch per chip compiled for each chip count of `generation`."""
  if generation not in SCALING:
    raise ConfigError(f"--aot {generation!r} with --aot_scaling: give a generation, one of "
                      f"{', '.join(SCALING)}")
  if not chips or any(n not in SCALING[generation] for n in chips):
    raise ConfigError(f"--aot_chips: each one of {', '.join(map(str, SCALING[generation]))}, "
                      f"got {','.join(map(str, chips))}")
  return compile_steps([SCALING[generation][n] for n in chips], config,
                       [batch_per_chip] * len(chips), compiler_options, log, jobs, report)


def describe(r: dict[str, Any]) -> str:
  if "compile_error" in r:
    return (f"{r.get('model', '?')} ({r.get('method', '?')}) on {r['topology']}, batch "
            f"{r['batch_per_chip']}/chip, {r.get('dtype', '?')}: does not compile "
            f"({r['compile_error'][:120]}) after {r.get('compile_s', 0):.0f} s here")
  gib = lambda b: f"{b / 2**30:.2f} GiB" if b is not None else "?"  # noqa: E731
  h = r["hbm_per_chip_bytes"]
  est = (f"est. step {r['est_step_s'] * 1e3:.2f} ms, {r['est_pairs_per_s']:.0f} pairs/s, "
         f"MFU {100 * r['est_mfu']:.1f}%" if r["est_step_s"] else "no cost-model step time")
  coll = r["collectives"].get("error") or ", ".join(
      f"{op} {c['count']} x ({c['bytes'] / 2**20:.1f} MiB)"
      for op, c in r["collectives"].items() if c["count"])
  sus = ", ".join(f"{k} {v['count']} ({v['bytes'] / 2**20:.0f} MiB)"
                  for k, v in r.get("suspects", {}).items() if v["count"])
  mb = f"; suspects: {sus}" if sus else ""
  mb += (f"; largest batch/chip {r['max_batch_per_chip']}" if "max_batch_per_chip" in r else "")
  if r.get("from_log"):
    mb += f"; read back from {r['from_log']}"
  if r.get("compiler_options"):
    mb += f"; compiler options {r['compiler_options']} (not the training program)"
  return (f"{r['model']} ({r['method']}) on {r['topology']} ({r['chips']} x {r['device_kind']}), "
          f"batch {r['batch_per_chip']}/chip, {r['dtype']}: HBM/chip {gib(h['total'])} of "
          f"{gib(h['capacity'])} (temporaries {gib(h['temporaries'])}); "
          f"{r['flops_per_chip'] / 1e12:.3f} TFLOP/chip/step; {est} [{ESTIMATE}]; "
          f"collectives: {coll or 'none'}; compiled in {r['compile_s']:.0f} s here "
          f"({r.get('compile_cpu_s', 0):.0f} CPU s){mb}")
