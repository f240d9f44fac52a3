"""python -m jaxcd.bench: microbenchmarks of whole steps, the input pipeline and kernels.

  python -m jaxcd.bench --model fc_siam_diff --batch 8 --size 256 [--dtype bfloat16] --json
  python -m jaxcd.bench --model all --batch 8 --size 64 --json        # every registered model
  python -m jaxcd.bench --model rcr --method rcr --batch 8 --size 256  # a method's own train step
  python -m jaxcd.bench --pipeline --dataset levir_like --batch 16 --json
  python -m jaxcd.bench --pipeline --dataset levir_cd --data_dir ../shared/data/LEVIR-CD_samples_BIT_CD --batch 2
  python -m jaxcd.bench --kernel hopfield --batch 8 --json
  python -m jaxcd.bench --clustering --images 64 --size 256 --json   # CDCluster pseudo-labels
  python -m jaxcd.bench --aot v5p:4x4x4 --model dsfernet --batch_per_chip 8 --dtype bfloat16 --json
  python -m jaxcd.bench --suite gpu --out runs/gpu_suite                # all a lent GPU measures

`--aot` compiles the trainer's step for a TPU topology without a TPU (`jaxcd.aot`; XLA's cost
model estimates, not measurements); `--suite gpu` runs
every part a lent GPU should measure (`run_suite`).

One function per kind (`bench_model`, `bench_pipeline`, `bench_hopfield`, `bench_clustering`), each returning the
dict that `--json` prints as a line; `main` dispatches on the flags. Times are medians of
`--steps` calls after a warm-up, each ended by `block_until_ready`. FLOPs come from XLA's cost
analysis of the compiled executables; for a program partitioned over N devices that analysis
is of one device's program, so per-pair figures divide by the per-device batch.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcd import cli, config_base, parallel
from jaxcd.aot import accepted_kwargs
from jaxcd.errors import ConfigError, one_line

# Dense (no sparsity) peak FLOP/s of one device, by compute dtype: (device_kind substring,
# {dtype: peak}, source). First match wins, so more specific names come first. GPU float32 runs
# on the TF32 tensor cores, since XLA's DEFAULT matmul/conv precision allows TF32 there.
_PEAK_FLOPS: tuple[tuple[str, dict[str, float], str], ...] = (
    ("H200 NVL", {"bfloat16": 835.5e12, "float32": 417.5e12},
     "NVIDIA H200 NVL datasheet (1671 TFLOPS bf16 with sparsity / 2)"),
    ("H200", {"bfloat16": 989.4e12, "float32": 494.7e12},
     "NVIDIA H200 SXM datasheet (1979 TFLOPS bf16 with sparsity / 2)"),
    ("H100 PCIe", {"bfloat16": 756.0e12, "float32": 378.0e12},
     "NVIDIA H100 PCIe datasheet (1513 TFLOPS bf16 with sparsity / 2)"),
    ("H100", {"bfloat16": 989.4e12, "float32": 494.7e12},
     "NVIDIA H100 SXM datasheet (1979 TFLOPS bf16 with sparsity / 2)"),
    ("A100", {"bfloat16": 312.0e12, "float32": 156.0e12},
     "NVIDIA A100 datasheet (312 TFLOPS bf16, 156 TFLOPS tf32, dense)"),
)


def peak_flops_for(device_kind: str, dtype: str) -> tuple[float | None, str | None]:
  """(peak FLOP/s of one device, its source), or (None, None) for an unknown device/dtype."""
  for name, peaks, source in _PEAK_FLOPS:
    if name.lower() in device_kind.lower():
      return peaks.get(dtype), source
  return None, None


def _flops(compiled) -> float:
  """FLOPs of one call of a compiled executable (XLA cost analysis; one device's program)."""
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):  # older JAX: one dict per computation
    ca = ca[0] if ca else {}
  return float((ca or {}).get("flops", 0.0))


def _median_seconds(call: Callable[[], Any], n: int) -> float:
  times = []
  for _ in range(n):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _mesh(num_devices: int):
  devices = jax.devices()
  if num_devices:
    if not 0 < num_devices <= len(devices):
      raise ConfigError(f"--devices={num_devices}: must be in [1, {len(devices)}]")
    devices = devices[:num_devices]
  return parallel.make_mesh(devices)


def _device_info(mesh) -> dict[str, Any]:
  d = mesh.devices.flat[0]
  return {"devices": int(mesh.devices.size), "platform": d.platform, "device_kind": d.device_kind}


# --- whole train and forward steps ----------------------------------------------------------------

def model_config(model: str, size: int = 256, dtype: str = "float32", bands: int = 3,
                 model_kwargs: dict[str, Any] | None = None):
  """The config a model is benchmarked with: the model's defaults (its official sizes), plain
  cross-entropy on 'logits' (every registered model returns them), `size` for models built per
  input size."""
  if "name" in (model_kwargs or {}):
    raise ConfigError("--model_kwargs: give the model with --model, not as 'name'")
  config = config_base.base_config()
  config.model.name = model
  if "input_size" in accepted_kwargs(model, {"input_size": size}):
    config.model.input_size = size  # e.g. dsfernet's official (C,H,W) LayerNorms: built per size
  config.model.update(model_kwargs or {})
  config.dtype = dtype
  config.data.num_bands = bands
  config.data.mean = (127.5,) * bands
  config.data.std = (127.5,) * bands
  return config


def bench_model(model: str, batch: int = 8, size: int = 256, dtype: str = "float32",
                steps: int = 10, bands: int = 3, model_kwargs: dict[str, Any] | None = None,
                num_devices: int = 0, peak_flops: float | None = None,
                method: str = "supervised", profile: str = "",
                top: int = 10) -> dict[str, Any]:
  """Pairs/s and FLOPs of the jitted, sharded, state-donating train step of `method` (its
  `make_step`, with its defaults; `batch` labeled pairs per step plus the method's other streams,
  e.g. RCR's 8 unlabeled ones) and of the forward pass; `batch` in the result counts them all.
  With `profile`, one more train step and forward pass run under jax.profiler into that folder,
  and the result's `profile` holds each one's `top` most expensive XLA ops."""
  import sys as sys_lib
  from jaxcd import optim, state as state_lib, steps as steps_lib
  from jaxcd.methods import get_method
  from jaxcd.data.normalize import make_normalizer
  from jaxcd.models.layers import count_params

  if batch <= 0 or size <= 0 or steps <= 0 or bands <= 0:
    raise ConfigError(f"--batch, --size, --steps and --bands must be positive, got "
                      f"{batch}, {size}, {steps}, {bands}")
  mesh = _mesh(num_devices)
  n_dev = int(mesh.devices.size)
  if batch % n_dev:
    raise ConfigError(f"--batch={batch} is not divisible by the {n_dev} devices of the mesh "
                      f"(use --devices to take fewer)")
  config = model_config(model, size, dtype, bands, model_kwargs)
  config.method = method
  config.input.batch_size = batch
  m = get_method(config)
  for block, fields in getattr(sys_lib.modules[type(m).__module__], "FIELDS", {}).items():
    config[block] = fields()
  m.check_config()
  net = m.build_model()
  tx, _ = optim.make_optimizer(config.optim, config.num_steps)
  normalize = make_normalizer(config)
  t0 = time.perf_counter()
  state = state_lib.create_state(net, tx, (1, size, size, bands), config.seed, mesh)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  params = count_params(state.params)
  shardings = jax.tree_util.tree_map(lambda x: x.sharding, state)
  train_step = m.make_step(net, tx, normalize, mesh, shardings, config.num_steps)
  predict = steps_lib.make_predict_fn(net, normalize)
  batch = m.batch_rows()
  if batch % n_dev:
    raise ConfigError(f"{method}: {batch} pairs per step are not divisible by the {n_dev} devices")

  rng = np.random.default_rng(0)
  host = {"image_a": rng.integers(0, 256, (batch, size, size, bands), dtype=np.uint8),
          "image_b": rng.integers(0, 256, (batch, size, size, bands), dtype=np.uint8),
          "label": rng.integers(0, 2, (batch, size, size), dtype=np.uint8)}
  gb = parallel.to_global(host, mesh)

  # Compile once through lower/compile: the same executables give the cost analysis and run.
  t0 = time.perf_counter()
  train_c = train_step.lower(state, gb).compile()
  train_compile_s = time.perf_counter() - t0
  fwd_c = predict.lower(state.params, state.batch_stats, gb["image_a"], gb["image_b"]).compile()
  compile_s = time.perf_counter() - t0
  per_device_pairs = batch // n_dev
  mem = train_c.memory_analysis()  # None where the backend has none
  train_flops = _flops(train_c) / per_device_pairs
  fwd_flops = _flops(fwd_c) / per_device_pairs

  box = [state]  # the state is donated: every call must get the previous call's output

  def train_call():
    box[0], m = train_c(box[0], gb)
    return box[0], m

  def fwd_call():
    return fwd_c(box[0].params, box[0].batch_stats, gb["image_a"], gb["image_b"])

  _median_seconds(train_call, 2)  # warm-up: first runs allocate buffers, fill caches
  train_s = _median_seconds(train_call, steps)
  _median_seconds(fwd_call, 1)
  fwd_s = _median_seconds(fwd_call, steps)

  profiles, kinds = {}, {}
  if profile:
    for part, call, compiled, seconds in (("train", train_call, train_c, train_s),
                                          ("fwd", fwd_call, fwd_c, fwd_s)):
      rows = profile_ops(call, compiled, os.path.join(profile, part), seconds, None)
      profiles[part], kinds[part] = rows[:top], kind_shares(rows)

  info = _device_info(mesh)
  peak, peak_source = (peak_flops, "--peak_flops") if peak_flops else peak_flops_for(
      info["device_kind"], dtype)
  train_pps, fwd_pps = batch / train_s, batch / fwd_s
  total_peak = peak * n_dev if peak else None
  return {
      "kind": "model", "model": model, "method": method, "batch": batch, "size": size,
      "bands": bands,
      "dtype": dtype, "params": params, "model_kwargs": model_kwargs or {},
      "train_pairs_per_s": train_pps, "fwd_pairs_per_s": fwd_pps,
      "train_step_ms": train_s * 1e3, "fwd_ms": fwd_s * 1e3,
      "flops_per_pair": fwd_flops, "train_flops_per_pair": train_flops,
      "train_tflops_per_s": train_flops * train_pps / 1e12,
      "fwd_tflops_per_s": fwd_flops * fwd_pps / 1e12,
      "mfu": train_flops * train_pps / total_peak if total_peak else None,
      "fwd_mfu": fwd_flops * fwd_pps / total_peak if total_peak else None,
      "peak_flops_per_device": peak, "peak_flops_source": peak_source,
      # First-step costs: initialisation (its compile included), compiling the train step, and
      # the train + forward compiles together (no persistent cache: bench always compiles).
      "init_s": init_s, "train_compile_s": train_compile_s, "compile_s": compile_s,
      "steps": steps, **info,
      # One device's train step: arguments (state, batch) and XLA's temporaries.
      "train_argument_bytes": int(mem.argument_size_in_bytes) if mem else None,
      "train_temp_bytes": int(mem.temp_size_in_bytes) if mem else None,
      # Top ops of each step, and every op's time summed by kind (bench.op_kind).
      **({"profile": profiles, "profile_kinds": kinds} if profile else {}),
  }


_HLO_OP = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+?)\s+([\w\-]+)\(")
_FUSED = re.compile(r"calls=%?([\w.\-]+)")


def hlo_ops(hlo_text: str) -> dict[str, dict[str, str]]:
  """Instruction name -> its shape, opcode and, for a fusion, the opcodes it fuses (from the
  compiled module's text), to say what a profiled op name is."""
  ops, computations, current = {}, {}, None
  for line in hlo_text.splitlines():
    if line and not line.startswith(" ") and "{" in line:
      current = line.split()[0].lstrip("%") if not line.startswith("ENTRY") else "ENTRY"
      current = line.split()[1].lstrip("%") if current == "ENTRY" else current
      computations[current] = []
      continue
    m = _HLO_OP.match(line)
    if m and current is not None:
      name, shape, opcode = m.groups()
      fused = _FUSED.search(line) if opcode in ("fusion", "call") else None
      ops[name] = {"shape": shape, "opcode": opcode, "calls": fused.group(1) if fused else ""}
      computations[current].append(opcode)
  for op in ops.values():
    inner = [o for o in computations.get(op.pop("calls"), ())
             if o not in ("parameter", "constant", "bitcast", "tuple", "get-tuple-element")]
    op["fuses"] = ",".join(sorted(set(inner)))
  return ops


def op_kind(opcode: str, fuses: str) -> str:
  """The coarse kind of a compiled op, for a profile's shares by kind: what a step is made of."""
  parts = set(fuses.split(",")) | {opcode} if fuses else {opcode}
  for kind, marks in (("convolution", {"convolution"}), ("dot", {"dot"}),
                      ("scatter/gather", {"scatter", "gather"}),
                      ("pooling", {"reduce-window", "select-and-scatter"}),
                      ("sort", {"sort"}), ("reduce", {"reduce"})):
    if parts & marks:
      return kind
  data_movement = {"copy", "transpose", "slice", "dynamic-slice", "dynamic-update-slice", "pad",
                   "concatenate", "reverse", "broadcast", "reshape", "iota", "fusion"}
  return "copy/slice/transpose" if parts <= data_movement else "elementwise"


def kind_shares(rows: list[dict[str, Any]]) -> dict[str, float]:
  """Share of the step per op kind (op_kind), largest first."""
  import collections
  shares = collections.Counter()
  for o in rows:
    shares[op_kind(o["opcode"], o["fuses"])] += o["share"]
  return dict(shares.most_common())


def profile_ops(call: Callable[[], Any], compiled, folder: str, step_s: float,
                top: int | None = 10) -> list[dict[str, Any]]:
  """Runs `call` once under jax.profiler (a Perfetto trace in `folder`) and returns the `top`
  XLA ops (all with None) by total time: name, what it is, milliseconds, and share of the
  step's median time (ops that run concurrently on the cores can sum to more than 100%)."""
  import collections
  import glob
  import gzip
  os.makedirs(folder, exist_ok=True)
  with jax.profiler.trace(folder, create_perfetto_trace=True):
    jax.block_until_ready(call())
  paths = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
  if not paths:
    return []
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    events = json.load(f)["traceEvents"]
  ops = hlo_ops(compiled.as_text())
  total = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in ops:
      total[e["name"]] += e.get("dur", 0)
  rows = []
  for name, us in total.most_common(top):
    op = ops[name]
    rows.append({"op": name, "opcode": op["opcode"], "fuses": op["fuses"], "shape": op["shape"],
                 "ms": us / 1e3, "share": us / 1e6 / step_s})
  return rows


def _describe_model(r: dict[str, Any]) -> str:
  if "error" in r:
    return f"{r['model']}: skipped: {r['error']}"
  mfu = f"  MFU {100 * r['mfu']:.1f}%" if r.get("mfu") is not None else ""
  method = f" ({r['method']})" if r.get("method", "supervised") != "supervised" else ""
  return (f"{r['model']}{method} batch {r['batch']} size {r['size']} {r['dtype']} "
          f"({r['params'] / 1e6:.3f} M params, {r['devices']} x {r['device_kind']}): "
          f"train {r['train_pairs_per_s']:.2f} pairs/s ({r['train_step_ms']:.1f} ms/step), "
          f"forward {r['fwd_pairs_per_s']:.2f} pairs/s ({r['fwd_ms']:.1f} ms); "
          f"{r['flops_per_pair'] / 1e9:.2f} GFLOP/pair forward, "
          f"{r['train_flops_per_pair'] / 1e9:.2f} GFLOP/pair train, "
          f"{r['train_tflops_per_s'] * 1e3:.1f} GFLOP/s train{mfu}; compile {r['compile_s']:.1f} s"
          + "".join(_describe_profile(part, rows, r["profile_kinds"][part])
                    for part, rows in r.get("profile", {}).items()))


def _describe_profile(part: str, rows: list[dict[str, Any]], kinds: dict[str, float]) -> str:
  by_kind = ", ".join(f"{k} {100 * v:.1f}%" for k, v in kinds.items())
  lines = [f"\n  {part}: by kind {by_kind}", f"\n  {part}: top {len(rows)} ops (share of the step)"]
  for o in rows:
    what = o["opcode"] + (f"[{o['fuses']}]" if o["fuses"] else "")
    lines.append(f"\n    {100 * o['share']:5.1f}%  {o['ms']:8.1f} ms  {o['op']}  {what[:70]}  "
                 f"{o['shape'][:48]}")
  return "".join(lines)


# --- input pipeline ---------------------------------------------------------------------------

class LevirLikeSource:
  """In memory: `n` random uint8 size x size pairs, so the pipeline benchmark times augmentation
  and batching alone (no decoding, no disk). Picklable for grain workers."""

  def __init__(self, n: int = 32, size: int = 256, bands: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    self.a = rng.integers(0, 256, (n, size, size, bands), dtype=np.uint8)
    self.b = rng.integers(0, 256, (n, size, size, bands), dtype=np.uint8)
    self.label = rng.integers(0, 2, (n, size, size), dtype=np.uint8)

  def __len__(self) -> int:
    return len(self.a)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {"image_a": self.a[i], "image_b": self.b[i], "label": self.label[i],
            "id": f"levir_like_{i:04d}"}


def bench_pipeline(dataset: str, data_dir: str = "", augment: str = "flip_rot", batch: int = 16,
                   num_batches: int = 50, worker_count: int = 0, num_threads: int = 2,
                   crop_size: int = 0, size: int = 256,
                   source_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
  """Host pairs/s of the training pipeline (`pipeline.benchmark_pipeline`) on a train split."""
  from jaxcd.data import make_source, pipeline

  if dataset == "levir_like":
    source = LevirLikeSource(size=size, **(source_kwargs or {}))
  else:
    kwargs = dict(source_kwargs or {})
    if data_dir:
      kwargs["data_dir"] = data_dir
    source = make_source(dataset, "train", **kwargs)
  first = source[0]
  parallel.allow_grain_workers()
  r = pipeline.benchmark_pipeline(source, batch_size=batch, num_batches=num_batches,
                                  augment=augment, num_threads=num_threads,
                                  worker_count=worker_count, crop_size=crop_size)
  h, w, c = first["image_a"].shape
  return {"kind": "pipeline", "dataset": dataset, "data_dir": data_dir, "pairs": len(source),
          "pair_shape": [h, w, c], "augment": augment, "batch": batch,
          "num_batches": num_batches, "worker_count": worker_count, "num_threads": num_threads,
          "pairs_per_s": r["pairs_per_s"], "seconds": r["seconds"]}


def _describe_pipeline(r: dict[str, Any]) -> str:
  h, w, c = r["pair_shape"]
  return (f"pipeline {r['dataset']} ({r['pairs']} train pairs of {h}x{w}x{c}), augment "
          f"{r['augment']}, batch {r['batch']}, {r['worker_count']} workers: "
          f"{r['pairs_per_s']:.1f} pairs/s over {r['num_batches']} batches ({r['seconds']:.2f} s)")


# --- kernels ----------------------------------------------------------------------------------

def bench_hopfield(batch: int = 8, tokens: int = 1024, dim: int = 512, dtype: str = "float32",
                   impls: Sequence[str] = ("xla", "reference"), steps: int = 10,
                   num_heads: int = 1) -> dict[str, Any]:
  """`HopfieldRetrieval` (B x tokens x dim, as many keys as queries): each attention
  implementation against the einsum reference, with its max deviation from the float32 reference."""
  from jaxcd.models.hopfield import HopfieldRetrieval

  dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  kq, kk, kv, kp = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(key, (batch, tokens, dim), jnp.float32) for key in (kq, kk, kv))
  ref_mod = HopfieldRetrieval(dim, num_heads=num_heads, impl="reference", dtype=jnp.float32)
  variables = ref_mod.init(kp, q[:1], k[:1], v[:1])
  ref_out = jax.jit(ref_mod.apply)(variables, q, k, v)
  out: dict[str, Any] = {"kind": "kernel", "kernel": "hopfield", "batch": batch, "tokens": tokens,
                         "dim": dim, "num_heads": num_heads, "dtype": dtype, "impls": {}}
  for impl in impls:
    mod = HopfieldRetrieval(dim, num_heads=num_heads, impl=impl, dtype=dt)
    try:  # cuDNN's fused attention takes only some head sizes (not Dsfer-Net's one head of 512)
      compiled = jax.jit(mod.apply).lower(variables, q, k, v).compile()
    except Exception as e:  # noqa: BLE001  one implementation that does not apply, the rest timed
      out["impls"][impl] = {"error": f"{type(e).__name__}: {one_line(str(e))[:200]}"}
      continue
    call = lambda: compiled(variables, q, k, v)  # noqa: E731
    _median_seconds(call, 2)
    seconds = _median_seconds(call, steps)
    flops = _flops(compiled)
    err = float(jnp.max(jnp.abs(call().astype(jnp.float32) - ref_out)))
    out["impls"][impl] = {"ms": seconds * 1e3, "flops": flops,
                          "tflops_per_s": flops / seconds / 1e12, "max_abs_diff_vs_f32_ref": err}
  info = jax.devices()[0]
  out.update(platform=info.platform, device_kind=info.device_kind, devices=1)
  return out


def _describe_kernel(r: dict[str, Any]) -> str:
  parts = [f"{impl}: {m['error']}" if "error" in m else
           f"{impl} {m['ms']:.2f} ms ({m['tflops_per_s'] * 1e3:.1f} GFLOP/s, max |diff| "
           f"{m['max_abs_diff_vs_f32_ref']:.2e})" for impl, m in r["impls"].items()]
  return (f"hopfield B={r['batch']} N=M={r['tokens']} D={r['dim']} heads={r['num_heads']} "
          f"{r['dtype']} on {r['device_kind']}: " + "; ".join(parts))


def bench_layer_grads(batch: int = 2, size: int = 256, channels: int = 64,
                      dtype: str = "float32", steps: int = 3) -> dict[str, Any]:
  """The gradients jaxcd writes itself for XLA:CPU, against lax's own, on one 3x3 convolution
  (channels -> channels, SAME) and one 2x2 max pool over batch x size x size x channels maps:
  ms of each part and the largest relative difference of ours from lax's."""
  from flax import linen as nn
  from jaxcd.models import conv, layers

  dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (batch, size, size, channels), dt)
  w = (jax.random.normal(kw, (3, 3, channels, channels), jnp.float32) / channels).astype(dt)
  g = jax.random.normal(kg, x.shape, dt)
  dn = ("NHWC", "HWIO", "NHWC")
  lax_conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
  pool_g = g[:, ::2, ::2]
  parts = {  # functions of (x, w, g, pool_g): arguments, so that XLA cannot fold them
      "conv forward": lambda x, w, g, pg: lax_conv(x, w),
      "conv input gradient (lax)": lambda x, w, g, pg: jax.vjp(lambda x_: lax_conv(x_, w), x)[1](g)[0],
      "conv kernel gradient (lax)": lambda x, w, g, pg: jax.vjp(lambda w_: lax_conv(x, w_), w)[1](g)[0],
      "conv kernel gradient (per-tap matmuls)": lambda x, w, g, pg: conv.kernel_grad_by_taps(
          x, g, w.shape, (1, 1), ((1, 1), (1, 1)), (1, 1)).astype(dt),
      "max-pool gradient (lax)": lambda x, w, g, pg: jax.vjp(
          lambda x_: nn.max_pool(x_, (2, 2), strides=(2, 2)), x)[1](pg)[0],
      "max-pool gradient (layers.max_pool2)": lambda x, w, g, pg: jax.vjp(
          layers.max_pool2, x)[1](pg)[0],
  }
  out: dict[str, Any] = {"kind": "kernel", "kernel": "layer_grads", "batch": batch, "size": size,
                         "channels": channels, "dtype": dtype, "parts": {}}
  values = {}
  args = (x, w, g, pool_g)
  for name, fn in parts.items():
    compiled = jax.jit(fn).lower(*args).compile()
    call = lambda: compiled(*args)  # noqa: E731
    values[name] = jax.block_until_ready(call())
    out["parts"][name] = {"ms": _median_seconds(call, steps) * 1e3}
  rel = lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))
                           / jnp.max(jnp.abs(b.astype(jnp.float32))))
  out["kernel_grad_rel_diff"] = rel(values["conv kernel gradient (per-tap matmuls)"],
                                    values["conv kernel gradient (lax)"])
  out["max_pool_grad_rel_diff"] = rel(values["max-pool gradient (layers.max_pool2)"],
                                      values["max-pool gradient (lax)"])
  info = jax.devices()[0]
  out.update(platform=info.platform, device_kind=info.device_kind, devices=1)
  return out


def _describe_layer_grads(r: dict[str, Any]) -> str:
  parts = "; ".join(f"{k} {v['ms']:.1f} ms" for k, v in r["parts"].items())
  return (f"layer_grads B={r['batch']} {r['size']}x{r['size']}x{r['channels']} {r['dtype']} on "
          f"{r['device_kind']}: {parts}; kernel gradient rel. diff {r['kernel_grad_rel_diff']:.1e}, "
          f"max-pool gradient rel. diff {r['max_pool_grad_rel_diff']:.1e}")


def bench_matmul(dim: int = 4096, dtype: str = "float32", steps: int = 5) -> dict[str, Any]:
  """One dim x dim x dim matmul: the rate the device's best-tuned kernel attains, the ceiling
  that a model's GFLOP/s (train_tflops_per_s) is read against."""
  dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  ka, kb = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(k, (dim, dim), dt) for k in (ka, kb))
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  call = lambda: compiled(a, b)  # noqa: E731
  jax.block_until_ready(call())
  seconds = _median_seconds(call, steps)
  info = jax.devices()[0]
  return {"kind": "kernel", "kernel": "matmul", "dim": dim, "dtype": dtype, "ms": seconds * 1e3,
          "gflop_per_s": 2 * dim ** 3 / seconds / 1e9, "platform": info.platform,
          "device_kind": info.device_kind, "devices": 1}


KERNELS = {"hopfield": bench_hopfield, "layer_grads": bench_layer_grads, "matmul": bench_matmul}


# --- CDCluster's pseudo-label pass ------------------------------------------------------------

def _peak_rss_mib() -> float:
  import resource
  kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return kib / 1024


def bench_clustering(batch: int = 16, size: int = 256, images: int = 64, k: int = 20,
                     features: int = 16, max_samples: int = 200_000, kmeans_iters: int = 20,
                     dtype: str = "float32", bands: int = 3, steps: int = 3,
                     faiss_threads: int = 0) -> dict[str, Any]:
  """One CDCluster clustering round on `images` random pairs, timed part by part.

  The feature pass + on-device pixel sampling (`clustering.sample_features`), the host FAISS
  k-means + small-cluster repair on `max_samples` x `features` (`clustering.fit_clusters`), and
  the feature pass + on-device nearest-centroid assignment to uint8 labels (`clustering.assign`).
  Device passes: medians of `steps` runs after a compile run; pixels/s = images*size^2/s.
  """
  from jaxcd import clustering
  from jaxcd.data import pipeline
  from jaxcd.data.normalize import make_normalizer
  from jaxcd.state import build_model

  if min(batch, size, images, k, features, max_samples, steps) <= 0:
    raise ConfigError("--batch, --size, --images, --k, --features, --max_samples and --steps "
                      "must be positive")
  config = config_base.base_config()
  config.model.name = "cdcluster"
  config.model.update(num_clusters=k, features=features)
  config.dtype = dtype
  config.data.num_bands = bands
  config.data.mean, config.data.std = (127.5,) * bands, (127.5,) * bands
  model = build_model(config)
  normalize = make_normalizer(config)
  x0 = jnp.zeros((1, size, size, bands), jnp.float32)
  variables = jax.jit(lambda key: model.init({"params": key}, x0, x0, train=False))(
      jax.random.key(0))
  feature_fn = clustering.make_feature_fn(model, normalize)
  source = LevirLikeSource(n=images, size=size, bands=bands)
  batches = [{k_: jnp.asarray(v) if k_ in ("image_a", "image_b") else v for k_, v in b.items()}
             for b in pipeline.eval_dataset(source, global_batch_size=batch)]
  pixels = images * size * size
  ppi = clustering.pixels_per_image_for(max_samples, images, size, size)
  rng = jax.random.key(1)

  def sample():
    return clustering.sample_features(feature_fn, variables, batches, max_samples=max_samples,
                                      pixels_per_image=ppi, rng=rng)
  x = sample()  # compile
  sample_s = _median_seconds(sample, steps)
  prep = clustering.Preprocess.fit(x, l2=True)
  xp = prep.apply(x)
  fit = clustering.fit_clusters(xp, k, 0, niter=kmeans_iters, num_threads=faiss_threads or None)

  def assign():
    return clustering.assign(feature_fn, variables, prep, fit.centroids, batches, images)
  labels = assign()  # compile
  assign_s = _median_seconds(assign, steps)
  info = jax.devices()[0]
  return {
      "kind": "clustering", "batch": batch, "size": size, "images": images, "k": k,
      "features": features, "dtype": dtype, "max_samples": max_samples, "samples": len(x),
      "feature_sample_pixels_per_s": pixels / sample_s, "feature_sample_s": sample_s,
      "assign_pixels_per_s": pixels / assign_s, "assign_s": assign_s,
      "faiss_fit_s": fit.seconds, "kmeans_iters": kmeans_iters, "num_splits": fit.num_splits,
      "min_cluster": int(fit.counts.min()),
      "host_sample_mib": x.nbytes / 2**20, "host_labels_mib": labels.nbytes / 2**20,
      "peak_rss_mib": _peak_rss_mib(),
      "platform": info.platform, "device_kind": info.device_kind, "devices": 1,
  }


def _describe_clustering(r: dict[str, Any]) -> str:
  return (f"cdcluster pseudo-labels, {r['images']} pairs {r['size']}x{r['size']} {r['dtype']} on "
          f"{r['device_kind']}: feature pass + sampling {r['feature_sample_pixels_per_s'] / 1e6:.2f}"
          f" Mpixel/s, feature pass + assignment {r['assign_pixels_per_s'] / 1e6:.2f} Mpixel/s; "
          f"FAISS k-means k={r['k']} on {r['samples']} x {r['features']} in {r['faiss_fit_s']:.2f}"
          f" s; host: sample {r['host_sample_mib']:.1f} MiB, labels {r['host_labels_mib']:.1f} "
          f"MiB, peak RSS {r['peak_rss_mib']:.0f} MiB")


# --- the GPU suite: --suite gpu --------------------------------------------------------------
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
  hopfield   Dsfer-Net's Hopfield retrieval kernel: cuDNN attention against XLA's and the einsum,
             with its one head of 512 and with 4 heads of 128 (head sizes cuDNN's fused kernel takes);
  pipeline   the host input pipeline with 0 and several grain worker processes;
  tests      the fast test tier (`pytest -m "not slow"`) on the device, in a subprocess (TIER_ENV):
             its time, counts and failures.
A part that fails records its one-line error and the suite goes on; parts past the time budget
are recorded as skipped. With --quick: small sizes, few steps, no fast tier (a test runs it).
"""
# The methods' own models first: a suite cut short by its budget still has them.
FIRST = ("dsfernet", "rcr", "cdcluster", "fc_siam_diff")


def _suite_settings(quick: bool) -> dict[str, Any]:
  if quick:
    return dict(size=32, probe_batch=1, max_batch=2, steps=1, dtypes=("float32",),
                test_pairs=4, test_size=32, eval_batch=2, hopfield=dict(batch=1, tokens=64, dim=32),
                hopfield_heads=(1, 2),
                impls=("xla", "reference"), pipeline_batches=2, workers=(0, 1), budget_s=600.0,
                tests=False, models=("fc_siam_diff",))
  return dict(size=256, probe_batch=8, max_batch=256, steps=5, dtypes=("bfloat16", "float32"),
              test_pairs=2048, test_size=256, eval_batch=64,
              hopfield=dict(batch=8, tokens=4096, dim=512), impls=("xla", "cudnn", "reference"),
              hopfield_heads=(1, 4),  # Dsfer-Net's one head of 512; 4 of 128, which cuDNN takes
              pipeline_batches=50, workers=(0, 4), budget_s=450.0, tests=True, models=None)


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
        probe = bench_model(name, batch=s["probe_batch"], size=s["size"], dtype=dtype,
                                  steps=1, num_devices=1)
        batch = fill_batch(probe, capacity, fill, s["probe_batch"], s["max_batch"])
        if batch == s["probe_batch"] and s["steps"] <= 1:
          return {**probe, "probe_batch": s["probe_batch"]}
        r = bench_model(name, batch=batch, size=s["size"], dtype=dtype, steps=s["steps"],
                              num_devices=1)
        return {**r, "probe_batch": s["probe_batch"], "device_bytes": capacity}
      out.append(_guarded("model", one) | {"model": name, "dtype": dtype})
  return out


def suite_test_pass(pairs: int, size: int, eval_batch: int, dtype: str = "bfloat16") -> dict[str, Any]:
  """Dsfer-Net's evaluation of `pairs` random size x size pairs from host memory, as the trainer
  evaluates a test split (`ModelInference.evaluate`: batches, transfers, confusion matrices)."""
  from jaxcd import config_base, parallel, state as state_lib
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


# The fast tier on an accelerator: its workers share the one device beside the suite's own process
# (which holds XLA's preallocation), so they allocate as they go; and the tests pin float32
# numerics, which a GPU's default matmul precision (TF32) would not meet.
TIER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "JAX_DEFAULT_MATMUL_PRECISION": "highest"}


def fast_tier(timeout_s: float, workers: int = 4, paths: Sequence[str] = ("tests",),
              cwd: str | None = None) -> dict[str, Any]:
  """`pytest -m "not slow"` in a subprocess: its wall time, its closing line and the tests that
  failed; cut off at `timeout_s` (its whole process group), the outcomes it had printed by then."""
  t0 = time.perf_counter()
  cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-m", "not slow",
         "-n", str(workers), *paths]
  p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                       env={**os.environ, **TIER_ENV}, start_new_session=True)
  try:
    out, _ = p.communicate(timeout=max(timeout_s, 1))
    lines = out.strip().splitlines()
    summary, rc = (lines or [""])[-1], p.returncode
  except subprocess.TimeoutExpired:
    os.killpg(p.pid, 9)  # xdist's workers too
    out, _ = p.communicate()
    done = "".join(l for l in out.splitlines() if re.fullmatch(r"[.FEsxX]+( +\[ *\d+%\])?", l))
    counts = {k: done.count(c) for k, c in (("passed", "."), ("failed", "F"), ("errors", "E"),
                                             ("skipped", "s"))}
    finished = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no test finished"
    summary = f"timed out after {timeout_s:.0f} s: {finished} by then"
    rc = None
  failed = [l for l in out.splitlines() if l.startswith(("FAILED ", "ERROR "))]
  return {"kind": "tests", "command": " ".join(cmd[1:]), "env": TIER_ENV, "returncode": rc,
          "summary": summary, "failed": failed[:30], "seconds": time.perf_counter() - t0}


def run_suite(out: str, quick: bool = False, emit: bool = False) -> list[dict[str, Any]]:
  """Runs every part within the budget; writes OUT/suite.json and OUT/suite.md; returns the rows."""
  if not out:
    raise ConfigError("--suite: give --out DIR for its suite.json and suite.md")
  os.makedirs(out, exist_ok=True)
  s = _suite_settings(quick)
  start = time.monotonic()
  deadline = start + s["budget_s"]
  rows: list[dict[str, Any]] = []

  def add(r):
    rows.extend(r if isinstance(r, list) else [r])
    for x in (r if isinstance(r, list) else [r]):
      if emit:
        cli.print_json(x)
    _write_suite(out, rows, quick, time.monotonic() - start)

  # The models get what the later parts leave: about 60% of the budget.
  add(models_part(s, start + 0.6 * s["budget_s"]))
  add(_guarded("test_pass", lambda: suite_test_pass(s["test_pairs"], s["test_size"], s["eval_batch"])))
  for h in s["hopfield_heads"]:
    add(_guarded("kernel", lambda: bench_hopfield(dtype="bfloat16", impls=s["impls"],
                                                  steps=max(s["steps"], 1), num_heads=h,
                                                  **s["hopfield"])))
  for w in s["workers"]:
    add(_guarded("pipeline", lambda: bench_pipeline(
        "levir_like", batch=8, num_batches=s["pipeline_batches"], worker_count=w,
        size=s["size"])))
  if s["tests"]:
    add(fast_tier(max(deadline - time.monotonic(), 30)))  # cut off at the budget: < 8 min in all
  else:
    add({"kind": "tests", "skipped": "--quick: the fast tier is not run"})
  return rows


def _write_suite(out: str, rows: list[dict[str, Any]], quick: bool, seconds: float) -> None:
  d = jax.devices()[0]
  head = {"device_kind": d.device_kind, "platform": d.platform, "jax": jax.__version__,
          "quick": quick, "seconds": round(seconds, 1)}
  with open(os.path.join(out, "suite.json"), "w") as f:
    json.dump({**head, "rows": rows}, f, indent=1, default=str)
  with open(os.path.join(out, "suite.md"), "w") as f:
    f.write(suite_markdown(head, rows))


def _pct(x) -> str:
  return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


def suite_markdown(head: dict[str, Any], rows: list[dict[str, Any]]) -> str:
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
      lines.append(f"- {_describe_kernel(r)}")
    elif kind == "pipeline":
      lines.append(f"- {_describe_pipeline(r)}")
    elif kind == "tests":
      lines.append(f"- fast tier: `{r['command']}`: {r['summary']} in {r['seconds']:.0f} s")
      lines.extend(f"  - {f}" for f in r.get("failed", []))
  return "\n".join(lines) + "\n"


# --- command line -----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m jaxcd.bench", description=__doc__.split("\n")[0])
  kind = p.add_mutually_exclusive_group()  # one is required, except with --aot --config
  kind.add_argument("--model", help="a registered model, or 'all'")
  kind.add_argument("--suite", choices=("gpu",),
                    help="everything a lent accelerator should measure (run_suite)")
  kind.add_argument("--pipeline", action="store_true", help="time the host input pipeline")
  kind.add_argument("--kernel", choices=sorted(KERNELS), help="time a jitted kernel")
  kind.add_argument("--clustering", action="store_true",
                    help="time CDCluster's pseudo-label pass (features, FAISS fit, assignment)")
  p.add_argument("--batch", type=int, default=None,
                 help="global batch (default 8 for models and kernels, 16 for the pipeline)")
  p.add_argument("--size", type=int, default=None,
                 help="image side (models, levir_like: default 256; --aot: the config's)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                 help="compute dtype (default float32; kernels: both)")
  p.add_argument("--steps", type=int, default=None,
                 help="timed calls, median reported (default 10; clustering: 3 passes)")
  p.add_argument("--bands", type=int, default=3)
  p.add_argument("--model_kwargs", default="{}", help="JSON of extra config.model fields")
  p.add_argument("--method", default="supervised",
                 help="models: the training method whose train step is timed (e.g. rcr)")
  p.add_argument("--devices", type=int, default=0, help="mesh size (0 = all devices)")
  p.add_argument("--peak_flops", type=float, default=None,
                 help="peak FLOP/s of one device, for MFU where the table has none (e.g. CPU)")
  p.add_argument("--dataset", default="levir_like",
                 help="pipeline source: a registered dataset, or levir_like (random, in memory)")
  p.add_argument("--data_dir", default="")
  p.add_argument("--source_kwargs", default="{}", help="JSON of extra source arguments")
  p.add_argument("--augment", default="flip_rot")
  p.add_argument("--crop_size", type=int, default=0)
  p.add_argument("--num_batches", type=int, default=50)
  p.add_argument("--worker_count", type=int, default=0)
  p.add_argument("--num_threads", type=int, default=2)
  p.add_argument("--tokens", type=int, default=1024, help="kernel: tokens (queries = keys)")
  p.add_argument("--dim", type=int, default=512,
                 help="kernel: feature width (hopfield), channels (layer_grads)")
  p.add_argument("--impls", default="xla,reference",
                 help="hopfield: comma-separated implementations (xla, cudnn, reference)")
  p.add_argument("--images", type=int, default=64, help="clustering: pairs per pass")
  p.add_argument("--k", type=int, default=20, help="clustering: clusters")
  p.add_argument("--max_samples", type=int, default=200_000,
                 help="clustering: pixel features sent to k-means")
  p.add_argument("--aot", metavar="TOPOLOGY", default="",
                 help="compile the trainer's step for a TPU topology (e.g. v5p:4x4x4, v5e:2x2; "
                      "with --aot_scaling a generation, v5p or v5e) without running it")
  p.add_argument("--config", default="",
                 help="--aot: the training config file (configs/*.py); --model overrides its model")
  p.add_argument("--batch_per_chip", type=int, default=8, help="--aot: pairs per chip")
  p.add_argument("--max_batch", action="store_true",
                 help="--aot: also find the largest batch per chip that fits HBM (bisection)")
  p.add_argument("--max_batch_limit", type=int, default=1024,
                 help="--max_batch: the largest batch per chip tried")
  p.add_argument("--max_batch_scout", action=argparse.BooleanOptionalAction, default=True,
                 help="--max_batch: search with --aot_fast_compile's program first (nearly the "
                      "same HBM, compiled in a fraction of the time at large batches), then "
                      "settle the answer with the training program's compiles")
  p.add_argument("--aot_scaling", action="store_true",
                 help="--aot GEN: weak scaling over --aot_chips (with --max_batch, then the "
                      "largest batch at the fewest chips)")
  p.add_argument("--aot_fast_compile", action="store_true",
                 help="--aot: compile with XLA's least execution-time optimisation (3.6x less "
                      "compile CPU): a different program than training runs, so its HBM and "
                      "step estimate are that program's; the report names the options")
  p.add_argument("--aot_log", default="", metavar="FILE",
                 help="--aot: append every compile's report to FILE (JSON lines) and read back "
                      "those of the same program instead of compiling them again: a --max_batch "
                      "search that was cut off resumes where it stopped")
  p.add_argument("--aot_jobs", type=int, default=1, metavar="N",
                 help="--aot: compiles at once (each takes one core and up to ~10 GB of host "
                      "memory at large batches): --max_batch probes N batches a round")
  p.add_argument("--aot_chips", default="4,16,64,256",
                 help="--aot_scaling: the chip counts, comma-separated")
  p.add_argument("--out", default="", help="--suite: folder for its JSON and markdown")
  p.add_argument("--quick", action="store_true",
                 help="--suite: a reduced run (small sizes, a few steps) that any CPU finishes")
  p.add_argument("--profile", default="", metavar="DIR",
                 help="--model: trace one train step and forward pass into DIR and list the "
                      "most expensive XLA ops of each")
  p.add_argument("--top", type=int, default=10, help="--profile: ops listed per step")
  p.add_argument("--json", action="store_true", help="also print each result as a JSON line")
  return p


def _json_arg(text: str, flag: str) -> dict[str, Any]:
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f"{flag}: not valid JSON ({e.msg}): {text!r}") from None
  if not isinstance(value, dict):
    raise ConfigError(f"{flag}: expected a JSON object, got {text!r}")
  return value


def _int_list(text: str, flag: str) -> list[int]:
  try:
    return [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise ConfigError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def _models(args) -> list[tuple[dict[str, Any], str]]:
  from jaxcd.models import list_models
  kwargs = _json_arg(args.model_kwargs, "--model_kwargs")
  batch = args.batch or 8
  common = dict(batch=batch, size=args.size or 256, dtype=args.dtype or "float32",
                steps=args.steps or 10, bands=args.bands, num_devices=args.devices,
                peak_flops=args.peak_flops, method=args.method)
  if args.model != "all":
    common.update(profile=args.profile, top=args.top)
    r = bench_model(args.model, model_kwargs=kwargs, **common)
    return [(r, _describe_model(r))]
  results = []
  for name in list_models():
    mk = accepted_kwargs(name, kwargs)
    try:
      r = bench_model(name, model_kwargs=mk, **common)
    except Exception as e:  # noqa: BLE001  a sweep reports a model it cannot run and goes on
      r = {"kind": "model", "model": name, "batch": batch, "size": args.size or 256,
           "dtype": common["dtype"], "model_kwargs": mk,
           "error": f"{type(e).__name__}: {one_line(e)}"}
    results.append((r, _describe_model(r)))
  return results


def _aot(args) -> list[tuple[dict[str, Any], str]]:
  from jaxcd import aot
  if not (args.model or args.config):
    raise ConfigError("--aot: give --model or --config")
  if args.model == "all":
    raise ConfigError("--aot: one --model at a time (compiles take minutes)")
  base = None
  if args.config:
    if not os.path.isfile(args.config):
      raise ConfigError(f"--config: no such config file: {args.config}")
    base = config_base.load(args.config)
  size = args.size or (None if base else 256)  # a config keeps its own size unless given
  config = aot.aot_config(base, model=args.model, size=size, dtype=args.dtype,
                          model_kwargs=_json_arg(args.model_kwargs, "--model_kwargs"))
  progress = lambda r: print(f"  compiled: {aot.describe(r)}", file=sys.stderr, flush=True)
  options = aot.FAST_COMPILE if args.aot_fast_compile else None
  log = args.aot_log or None
  if args.aot_jobs < 1:
    raise ConfigError(f"--aot_jobs must be at least 1, got {args.aot_jobs}")
  if log:
    aot.check_log(log)
  if args.aot_scaling:
    chips = _int_list(args.aot_chips, "--aot_chips")
    rs = aot.scaling(args.aot, config, args.batch_per_chip, chips, progress, options, log,
                     args.aot_jobs)
    if args.max_batch:  # the first topology's compile is the search's first probe
      rs.append(aot.max_batch(aot.SCALING[args.aot][chips[0]], config, args.batch_per_chip,
                              args.max_batch_limit, progress, {args.batch_per_chip: rs[0]},
                              options, log, args.aot_jobs, args.max_batch_scout))
  elif args.max_batch:
    rs = [aot.max_batch(args.aot, config, start=args.batch_per_chip,
                        limit=args.max_batch_limit, report=progress, compiler_options=options,
                        log=log, jobs=args.aot_jobs, scout=args.max_batch_scout)]
  else:
    rs = [aot.compile_step(args.aot, config, args.batch_per_chip, options, log)]
  return [(r, aot.describe(r)) for r in rs]


def run(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Parses the flags, runs the chosen benchmark(s), prints them; returns the result dicts."""
  parser = _parser()
  args = parser.parse_args(argv)
  if not (args.aot or args.model or args.suite or args.pipeline or args.kernel
          or args.clustering):
    parser.error("one of --model --suite --pipeline --kernel --clustering --aot is required")
  if args.aot:
    pairs = _aot(args)
  elif args.suite:
    return run_suite(args.out, quick=args.quick, emit=args.json)
  elif args.model:
    pairs = _models(args)
  elif args.pipeline:
    r = bench_pipeline(args.dataset, data_dir=args.data_dir, augment=args.augment,
                       batch=args.batch or 16, num_batches=args.num_batches,
                       worker_count=args.worker_count, num_threads=args.num_threads,
                       crop_size=args.crop_size, size=args.size or 256,
                       source_kwargs=_json_arg(args.source_kwargs, "--source_kwargs"))
    pairs = [(r, _describe_pipeline(r))]
  elif args.clustering:
    r = bench_clustering(batch=args.batch or 16, size=args.size or 256, images=args.images,
                         k=args.k,
                         max_samples=args.max_samples, dtype=args.dtype or "float32",
                         bands=args.bands, steps=args.steps or 3)
    pairs = [(r, _describe_clustering(r))]
  else:
    impls = [s for s in args.impls.split(",") if s]
    dtypes = [args.dtype] if args.dtype else ["float32", "bfloat16"]
    pairs = []
    for dt in dtypes:
      if args.kernel == "layer_grads":
        r = bench_layer_grads(batch=args.batch or 2, size=args.size or 256, channels=args.dim,
                              dtype=dt, steps=args.steps or 3)
        pairs.append((r, _describe_layer_grads(r)))
        continue
      if args.kernel == "matmul":
        r = bench_matmul(dim=args.dim, dtype=dt, steps=args.steps or 5)
        pairs.append((r, f"matmul {r['dim']}^3 {r['dtype']} on {r['device_kind']}: "
                         f"{r['ms']:.1f} ms, {r['gflop_per_s']:.1f} GFLOP/s"))
        continue
      r = KERNELS[args.kernel](batch=args.batch or 8, tokens=args.tokens, dim=args.dim,
                               dtype=dt, impls=impls, steps=args.steps or 10)
      pairs.append((r, _describe_kernel(r)))
  results = []
  for r, line in pairs:
    print(line, flush=True)
    if args.json:
      cli.print_json(r)
    results.append(r)
  return results


def main(argv: Sequence[str] | None = None) -> None:
  cli.run_guarded(lambda: run(argv))


if __name__ == "__main__":
  main(sys.argv[1:])
