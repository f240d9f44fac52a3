"""`python -m jaxcd.bench --aot`: the trainer's step compiled by XLA's TPU compiler for a 4-chip
topology on this CPU, on a two-layer network (a TPU compile of a real model takes minutes)."""
import json
import threading
from typing import Any

import jax
import numpy as np

import flax.linen as nn
import jax.numpy as jnp
import pytest

from jaxcd import aot, bench, config_base, parallel
from jaxcd.errors import ConfigError
from jaxcd.methods import base
from jaxcd.models.registry import REGISTRY, register

needs_libtpu = pytest.mark.skipif(not aot.libtpu_available(),
                                  reason="libtpu (XLA's TPU compiler) is not installed: "
                                         "pip install -e '.[tpu]'")


class TwoConvNet(nn.Module):
  """conv-BN-ReLU on |a - b|, then a 1x1 head: BatchNorm makes the step's batch statistics global
  all-reduces, as in every real model here."""
  num_classes: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, a, b, train: bool = False):
    x = nn.Conv(8, (3, 3), dtype=self.dtype, name="conv")(jnp.abs(a - b))
    x = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn")(x))
    return {"logits": nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="head")(x)}


if "test_aot_two_conv" not in REGISTRY:
  register("test_aot_two_conv")(TwoConvNet)

SIZE, PER_CHIP = 32, 2


def _config():
  c = config_base.base_config()
  c.model.name = "test_aot_two_conv"
  return aot.aot_config(c, size=SIZE, dtype="bfloat16")


@needs_libtpu  # one TPU compile: 19 s on a quiet moment of 2 shared cores, 75 s under load
def test_aot_compiles_the_trainers_step_for_4_chips(capsys, monkeypatch):
  calls = []
  real = base.Method.train_step

  def spy(self, run, stage, state, tx):
    step = real(self, run, stage, state, tx)
    calls.append((run.mesh, step))
    return step
  monkeypatch.setattr(base.Method, "train_step", spy)
  r = bench.run(["--aot", "v5e:2x2", "--model", "test_aot_two_conv", "--size", str(SIZE),
                 "--dtype", "bfloat16", "--batch_per_chip", str(PER_CHIP), "--json"])[0]
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(r))
  # The step compiled is the one the method hands the trainer, on a mesh of 4 TPU chips.
  (mesh, _), = calls
  assert mesh.devices.size == 4 and mesh.devices.flat[0].platform == "tpu"
  assert (r["topology"], r["chips"], r["device_kind"]) == ("v5e:2x2", 4, "TPU v5 lite")
  assert (r["global_batch"], r["batch_per_chip"], r["method"]) == (4 * PER_CHIP, PER_CHIP,
                                                                   "supervised")
  h = r["hbm_per_chip_bytes"]
  assert h["capacity"] == 16 * 2**30 and r["fits_hbm"]
  # Arguments: at least the replicated parameters (3*3*3*8 + 8 + 2*8 BN + 8*2 + 2 = 258 f32) and
  # this chip's share of the uint8 batch (2 images + a label of 32x32 per pair).
  assert h["arguments"] >= 258 * 4 + PER_CHIP * SIZE * SIZE * (3 + 3 + 1)
  # A program this small may need no temporaries (libtpu 0.0.42.1 reports 0); the total is
  # arguments + temporaries + outputs not aliased to arguments + code.
  assert h["temporaries"] >= 0 and h["outputs"] > 0
  assert h["total"] == (h["arguments"] + h["temporaries"] + h["outputs"] - h["aliased"]
                        + h["generated_code"])
  assert h["aliased"] > 0  # the state is donated, as the trainer's step donates it
  # FLOPs of one chip: at least the forward 3x3 conv of its 2 pairs (2 * 27 * 8 MACs per pixel).
  assert r["flops_per_chip"] >= PER_CHIP * SIZE * SIZE * 2 * 27 * 8
  if r["est_step_s"] is not None:
    assert r["est_pairs_per_s"] == pytest.approx(r["global_batch"] / r["est_step_s"])
    assert r["est_mfu"] == pytest.approx(r["flops_per_chip"] / r["est_step_s"] / 197e12)
  assert "cost model" in r["estimates"] and r["compile_s"] > 0 and r["compile_cpu_s"] > 0
  assert sum(r["fusions"].values()) >= 1  # the program size that the compile time follows
  # The BatchNorm+ReLU backward and the loss hold no gather, scatter or f32 matmul in bf16.
  assert set(r["suspects"]) == set(aot.SUSPECTS)
  assert all(r["suspects"][k]["count"] == 0 for k in ("f32_convolution", "gather", "scatter"))
  # Data parallelism: the gradients (and BatchNorm's batch statistics) are all-reduced.
  c = r["collectives"]
  assert c["all-reduce"]["count"] >= 1 and c["all-reduce"]["bytes"] >= 258 * 4 // 2


@needs_libtpu  # fails in buffer assignment: seconds
def test_aot_reports_a_step_that_does_not_fit_with_its_program(capsys):
  """A batch past the chip's HBM is a report, not a traceback: it names the model, method and
  dtype so a search's log says which program did not fit."""
  r = bench.run(["--aot", "v5e:2x2", "--model", "test_aot_two_conv", "--size", str(SIZE),
                 "--dtype", "bfloat16", "--batch_per_chip", str(2**20), "--json"])[0]
  out = capsys.readouterr().out.strip().splitlines()
  assert json.loads(out[-1])["compile_error"].startswith("RESOURCE_EXHAUSTED")
  assert not r["fits_hbm"] and "hbm_per_chip_bytes" not in r
  assert (r["model"], r["method"], r["dtype"], r["batch_per_chip"]) == (
      "test_aot_two_conv", "supervised", "bfloat16", 2**20)
  assert f"test_aot_two_conv (supervised) on v5e:2x2, batch {2**20}/chip, bfloat16: does not " \
         "compile (RESOURCE_EXHAUSTED" in aot.describe(r)


def test_a_compile_out_of_memory_is_a_report_and_other_errors_raise(monkeypatch, tmp_path):
  """The same without libtpu: the host's CPU stands in for the slice and its compile fails as
  libtpu's does when HBM runs out; the report (and its log line) names the program."""
  monkeypatch.setattr(aot, "topology_devices", lambda topology: jax.devices()[:1])
  error = RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm.\nmore")

  def compile(self, compiler_options=None):
    raise error
  monkeypatch.setattr(jax.stages.Lowered, "compile", compile)
  log = str(tmp_path / "log.jsonl")
  r = aot.compile_step("v5e:2x2", _config(), 3, log=log)
  assert (r["model"], r["method"], r["stage"], r["dtype"], r["size"]) == (
      "test_aot_two_conv", "supervised", "train", "bfloat16", SIZE)
  assert (r["chips"], r["global_batch"], r["fits_hbm"]) == (1, 3, False)
  assert r["compile_error"] == "RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. more"
  assert aot.describe(r).startswith("test_aot_two_conv (supervised) on v5e:2x2, batch 3/chip, "
                                    "bfloat16: does not compile (RESOURCE_EXHAUSTED")
  assert aot.read_log(log)[r["key"]]["model"] == "test_aot_two_conv"
  error = RuntimeError("INTERNAL: the compiler crashed")
  with pytest.raises(RuntimeError, match="INTERNAL"):
    aot.compile_step("v5e:2x2", _config(), 4)


def test_collectives_are_read_from_hlo_text():
  hlo = """
  %all-reduce.1 = f32[8,128]{1,0} all-reduce(f32[8,128]{1,0} %p), replica_groups={{0,1,2,3}}
  %ars = (bf16[64]{0}, bf16[64]{0}) all-reduce-start(bf16[64]{0} %q), to_apply=%add
  %ard = bf16[64]{0} all-reduce-done((bf16[64]{0}, bf16[64]{0}) %ars)
  ROOT %ag = bf16[4,16]{1,0} all-gather(bf16[1,16]{1,0} %x), dimensions={0}
  %t = (f32[2]{0}, s32[3]{0}) all-to-all(f32[2]{0} %a, s32[3]{0} %b)
  """
  c = aot.collectives(hlo)
  assert c["all-reduce"] == {"count": 2, "bytes": 8 * 128 * 4 + 64 * 2}
  assert c["all-gather"] == {"count": 1, "bytes": 4 * 16 * 2}
  assert c["all-to-all"] == {"count": 1, "bytes": 2 * 4 + 3 * 4}
  assert c["reduce-scatter"] == {"count": 0, "bytes": 0}


def test_suspects_are_read_from_hlo_text():
  hlo = """
  %p.1 = f32[8,16]{1,0} parameter(0)
  %p.2 = bf16[8,16]{1,0} parameter(1)
  %w.3 = bf16[16,4]{1,0} parameter(2)
  %convolution.4 = f32[8,4]{1,0} convolution(%p.1, %w.3), dim_labels=bf_io->bf, metadata={op_name="jit(step)/jvp(Net)/attn/dot_general"}
  %convolution.5 = f32[8,4]{1,0} convolution(%p.2, %w.3), dim_labels=bf_io->bf, metadata={op_name="jit(step)/jvp(Net)/head/dot_general"}
  %gather.6 = f32[8]{0} gather(%p.1, %i.7), offset_dims={}, metadata={op_name="jit(step)/take_along_axis/gather"}
  %transpose.8 = bf16[16,8]{1,0} transpose(%p.2), dimensions={1,0}
  %copy.9 = bf16[8,16]{0,1:T(8,128)} copy(%p.2), metadata={op_name="jit(step)/jvp(Net)/reshape"}
  %copy.10 = bf16[8,16]{0,1:T(8,128)} copy(%p.2), metadata={op_name="jit(step)/jvp(Net)/reshape"}
  """
  s = aot.suspects(hlo)
  # Only the convolution with an f32 operand is f32 matmul work; bf16 x bf16 -> f32 is not.
  assert s["f32_convolution"] == {"count": 1, "bytes": 8 * 4 * 4,
                                  "sources": {"jvp(Net)/attn/dot_general": 1}}
  assert s["gather"] == {"count": 1, "bytes": 32, "sources": {"take_along_axis/gather": 1}}
  assert s["transpose"] == {"count": 1, "bytes": 16 * 8 * 2, "sources": {"?": 1}}
  assert s["copy"] == {"count": 2, "bytes": 2 * 8 * 16 * 2, "sources": {"jvp(Net)/reshape": 2}}
  assert s["scatter"]["count"] == 0


# Each method's streams: (config, model overrides, the fields that must share 6 pairs).
RESIZED = {
    "configs/rcr.py": ({"width": 8}, {"input.batch_size": 3, "rcr.unlabeled_batch_size": 3}),
    "configs/rcl.py": ({}, {"input.batch_size": 6, "rcl.n_labeled": 3}),
    "configs/advnet.py": ({}, {"input.batch_size": 6, "gan.n_labeled": 3}),
    "configs/cdcluster.py": ({}, {"input.batch_size": 6}),
}


@pytest.mark.parametrize("path", sorted(RESIZED))
def test_aot_step_of_every_method_takes_its_streams_at_the_slices_batch(path):
  """What `--aot` lowers, on this host's devices (no libtpu): the method's own state (e.g. the
  discriminators of the adversarial methods) and a batch of the pairs asked for, shared between
  its streams as the config shares them."""
  kwargs, fields = RESIZED[path]
  config = aot.aot_config(config_base.load(path), size=SIZE, model_kwargs=kwargs)
  resized = config.copy_and_resolve_references()
  aot.check_config(resized).resize_batch(6)
  for field, want in fields.items():
    section, name = field.split(".")
    assert resized[section][name] == want, field
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), (parallel.DATA_AXIS,))
  ts = aot.train_step(config, mesh, 6)
  assert {k: v.shape[0] for k, v in ts.batch.items()} == {"image_a": 6, "image_b": 6, "label": 6}
  assert ts.batch["image_a"].shape[1:3] == (SIZE, SIZE)
  ts.step.lower(ts.state, ts.batch)  # traces the method's step on its state and this batch


def test_fusions_are_counted_by_kind_from_hlo_text():
  hlo = """
  %fusion.1 = f32[8]{0} fusion(f32[8]{0} %p), kind=kLoop, calls=%fused_computation.1
  ROOT %conv.2 = bf16[8,64,64,16]{3,0,2,1} fusion(%a, %b), kind=kOutput, calls=%conv_fusion
  %multiply_reduce_fusion.3 = (f32[], f32[16]{0}) fusion(%x, %y), kind=kLoop, calls=%f.3
  %add.4 = f32[8]{0} add(f32[8]{0} %fusion.1, f32[8]{0} %fusion.1)
  """
  assert aot.fusions(hlo) == {"kLoop": 2, "kOutput": 1}


def test_aot_flag_errors_are_one_line_config_errors(monkeypatch):
  with pytest.raises(ConfigError, match="--model or --config"):
    bench.run(["--aot", "v5e:2x2"])
  with pytest.raises(ConfigError, match="--config"):
    bench.run(["--aot", "v5e:2x2", "--config", "no/such/config.py"])
  if not aot.libtpu_available():
    with pytest.raises(ConfigError, match="libtpu"):
      aot.topology_devices("v5e:2x2")
  else:
    with pytest.raises(ConfigError, match="v9z:7x7"):
      aot.topology_devices("v9z:7x7")
  with pytest.raises(ConfigError, match="generation"):
    aot.scaling("v5e:2x2", _config(), 2)
  with pytest.raises(ConfigError, match="--aot_chips: each one of 4, 16, 64, 256, got 4,5"):
    aot.scaling("v5p", _config(), 2, chips=(4, 5))
  with pytest.raises(ConfigError, match="--aot_chips: expected comma-separated integers"):
    bench.run(["--aot", "v5p", "--aot_scaling", "--aot_chips", "4,x", "--model", "fc_siam_diff"])


def _probe(topology, b, total, cap):
  """A search probe's report: `total` bytes of HBM of `cap`, or None where the compile fails."""
  if total is None:
    return {"kind": "aot", "topology": topology, "batch_per_chip": b, "fits_hbm": False,
            "compile_error": "RESOURCE_EXHAUSTED"}
  return {"kind": "aot", "topology": topology, "batch_per_chip": b, "fits_hbm": total <= cap,
          "hbm_per_chip_bytes": {"total": total, "capacity": cap}}


def _line_compile(topology, config, b, compiler_options):
  """A whole report, as `aot._compile` gives it, on the memory line 5000 + 390 b of 100,000."""
  total = 5000 + 390 * b
  return {"kind": "aot", "topology": topology, "model": config.model.name, "method": "m",
          "chips": 4, "device_kind": "TPU v5", "batch_per_chip": b, "dtype": config.dtype,
          "fits_hbm": total <= 100_000, "flops_per_chip": 1e12, "est_step_s": None,
          "hbm_per_chip_bytes": {"total": total, "capacity": 100_000, "temporaries": 0},
          "collectives": {}, "compile_s": 1.0, "suspects": {},
          "compiler_options": dict(compiler_options or {})}


@pytest.mark.parametrize("name, hbm", [
    ("linear", lambda b: 5000 + 390 * b),
    ("quadratic", lambda b: 5000 + 390 * b + 3 * b * b),
    ("a jump", lambda b: 5000 + 390 * b + (20000 if b > 150 else 0)),
    ("no compile past 99", lambda b: 5000 + 390 * b if b < 100 else None),
    ("start too large", lambda b: 50000 + 9000 * b),
    ("all fit", lambda b: 500 + 10 * b),
])
def test_max_batch_finds_the_largest_batch_that_fits(monkeypatch, name, hbm):
  """The search over compiles (each probe stands in for one): the answer brute force gives, for
  memory lines straight or not, and a compile that fails outright past some batch."""
  cap, limit, probes = 100_000, 1024, []

  def compile_step(topology, config, b, compiler_options=None, log=None):
    probes.append(b)
    return _probe(topology, b, hbm(b), cap)
  monkeypatch.setattr(aot, "compile_step", compile_step)
  want = max((b for b in range(1, limit + 1) if hbm(b) is not None and hbm(b) <= cap), default=0)
  sequential = None
  for jobs in (1, 2, 3):
    probes.clear()
    r = aot.max_batch("v5p:2x2x1", None, start=8, limit=limit, jobs=jobs)
    assert r["max_batch_per_chip"] == want, jobs
    assert r["max_batch_at_limit"] == (want == limit)
    rounds = r["max_batch_rounds"]
    assert len(set(probes)) == len(probes)  # no probe compiled twice
    assert len(rounds) <= 16  # bisection's order
    assert all(1 <= len(batches) <= jobs for batches in rounds)
    assert sorted(b for batches in rounds for b in batches) == sorted(probes)
    if jobs == 1:
      assert r["max_batch_probes"] == probes
      sequential = len(rounds)
    else:
      assert len(rounds) <= sequential, (jobs, rounds)  # probes at once save rounds, not add
  if name == "linear":  # the line from 8 and 16 predicts 243; 244 confirms it
    assert rounds[:2] == [[8, 16, 24], [243, 244, 133]] and len(rounds) == 2


@pytest.mark.parametrize("fast_off", [-300, 0, 300, 2500])
@pytest.mark.parametrize("name, hbm", [
    ("linear", lambda b: 5000 + 390 * b),
    ("quadratic", lambda b: 5000 + 390 * b + 3 * b * b),
    ("no compile past 99", lambda b: 5000 + 390 * b if b < 100 else None),
    ("start too large", lambda b: 50000 + 9000 * b),
])
def test_max_batch_scouts_with_the_fast_program_and_answers_for_the_training_one(
    monkeypatch, name, hbm, fast_off):
  """--max_batch_scout: FAST_COMPILE's probes (memory a little off the training program's, or
  several pairs off) find the bracket; the answer is the training program's, from few of its
  compiles: where the fast program is near, two (the scouts' batch fits, the next does not)."""
  cap, limit, calls = 100_000, 1024, []

  def compile_step(topology, config, b, compiler_options=None, log=None):
    fast = compiler_options == aot.FAST_COMPILE
    calls.append((b, fast))
    return _probe(topology, b, hbm(b) if hbm(b) is None or not fast else hbm(b) + fast_off, cap)
  monkeypatch.setattr(aot, "compile_step", compile_step)
  want = max((b for b in range(1, limit + 1) if hbm(b) is not None and hbm(b) <= cap), default=0)
  for jobs in (1, 2):
    calls.clear()
    r = aot.max_batch("v5p:2x2x1", None, start=8, limit=limit, jobs=jobs, scout=True)
    slow = [b for b, fast in calls if not fast]
    assert r["max_batch_per_chip"] == want and len(set(slow)) == len(slow)
    assert r["max_batch_probes"] == slow and [b for b, f in calls if f][0] == 8
    if name == "linear" and fast_off == 0:  # the fast program's answer is the same
      assert slow == [243, 244] and r["max_batch_scout"] == 243
      assert len(r["max_batch_rounds"]) == 3 - jobs
    if abs(fast_off) < 390:  # a pair off at most: a third compile at most
      assert len(slow) <= 3 if jobs == 1 else len(r["max_batch_rounds"]) <= 2, slow
    assert len(slow) <= 10
  calls.clear()
  aot.max_batch("v5p:2x2x1", None, start=8, limit=limit, scout=True,
                compiler_options=aot.FAST_COMPILE)  # already the fast program: one search
  assert all(fast for _, fast in calls)


def test_max_batch_confirms_the_scouts_answer_by_its_neighbour_when_the_answer_is_known(
    monkeypatch):
  """The training program's compile at the scouts' batch already at hand (a log, or `known`):
  the next batch settles it, not the line, which the compiles failing outright past the answer
  (no memory to draw it by: CDCluster's on v5e past 384) leave pointing far past it."""
  cap, limit, calls = 100_000, 1024, []
  hbm = lambda b: 5000 + 300 * b if b <= 200 else None  # noqa: E731

  def compile_step(topology, config, b, compiler_options=None, log=None):
    calls.append((b, compiler_options == aot.FAST_COMPILE))
    return _probe(topology, b, hbm(b), cap)
  monkeypatch.setattr(aot, "compile_step", compile_step)
  known = {200: _probe("v5p:2x2x1", 200, hbm(200), cap)}
  r = aot.max_batch("v5p:2x2x1", None, start=8, limit=limit, known=known, scout=True)
  assert r["max_batch_scout"] == 200 and r["max_batch_per_chip"] == 200
  assert [b for b, fast in calls if not fast] == [201]


def test_aot_flags_reach_the_compiles(monkeypatch, capsys):
  """--aot_fast_compile's options, --aot_chips' topologies and --max_batch's first probe (the
  scaling's own first compile, not compiled again) as `bench` hands them to `aot`."""
  calls = []

  def compile_step(topology, config, b, compiler_options=None, log=None):
    calls.append((topology, b, compiler_options))
    n = {"v5p:2x2x1": 4, "v5p:4x4x4": 64}[topology]
    return {"kind": "aot", "topology": topology, "model": "m", "method": "supervised",
            "chips": n, "device_kind": "TPU v5", "batch_per_chip": b, "dtype": "bfloat16",
            "fits_hbm": b <= 10, "flops_per_chip": 1e12, "est_step_s": None,
            "hbm_per_chip_bytes": {"total": 1000 * b, "capacity": 10_000, "temporaries": 0},
            "collectives": {}, "compile_s": 1.0, "suspects": {}}
  monkeypatch.setattr(aot, "compile_step", compile_step)
  rs = bench.run(["--aot", "v5p", "--aot_scaling", "--aot_chips", "4,64", "--max_batch",
                  "--aot_fast_compile", "--model", "test_aot_two_conv", "--size", str(SIZE),
                  "--batch_per_chip", "8"])
  assert [c[:2] for c in calls] == [("v5p:2x2x1", 8), ("v5p:4x4x4", 8), ("v5p:2x2x1", 16),
                                    ("v5p:2x2x1", 10), ("v5p:2x2x1", 11)]
  assert all(c[2] == aot.FAST_COMPILE for c in calls)
  assert rs[-1]["max_batch_per_chip"] == 10 and len(rs) == 3
  assert "largest batch/chip 10" in capsys.readouterr().out


def test_aot_jobs_compile_probes_side_by_side(tmp_path, monkeypatch, capsys):
  """--aot_jobs 2: both probes of a round compile at once (each waits for the other at a barrier,
  which compiles one after the other would never pass), every report reaches the log, and the
  search settles in the rounds the line allows."""
  meet = threading.Barrier(2, timeout=30)

  def fake_compile(topology, config, b, compiler_options):
    meet.wait()
    return _line_compile(topology, config, b, compiler_options)
  monkeypatch.setattr(aot, "_compile", fake_compile)
  log = str(tmp_path / "probes.jsonl")
  cmd = ["--aot", "v5p:2x2x1", "--model", "test_aot_two_conv", "--size", str(SIZE), "--dtype",
         "bfloat16", "--max_batch", "--aot_log", log, "--aot_jobs", "2"]
  r = bench.run(cmd)[0]  # scouting first (the default): the fast program, then the training one
  assert r["max_batch_per_chip"] == 243 and r["max_batch_scout"] == 243
  assert r["max_batch_scout_rounds"] == [[8, 16], [243, 244]]
  assert r["max_batch_rounds"] == [[243, 244]]
  assert sorted((x["batch_per_chip"], bool(x["compiler_options"]))
                for x in aot.read_log(log).values()) == [
      (8, True), (16, True), (243, False), (243, True), (244, False), (244, True)]
  assert capsys.readouterr().err.count("compiled: ") == 6
  scaled = aot.scaling("v5p", _config(), 8, chips=(4, 64), jobs=2)  # the same, over slices
  assert [x["topology"] for x in scaled] == ["v5p:2x2x1", "v5p:4x4x4"]
  with pytest.raises(ConfigError, match="--aot_jobs must be at least 1, got 0"):
    bench.run(cmd[:-1] + ["0"])


def test_aot_log_resumes_a_search_that_was_cut_off(tmp_path, monkeypatch, capsys):
  """--aot_log: a --max_batch search killed during its third compile compiles, when run again,
  only what it had not finished; a different program (another dtype, edited sources) is compiled
  afresh; a bad log file fails before any compile."""
  compiled, cut_at = [], [243]

  def fake_compile(topology, config, b, compiler_options):
    compiled.append(b)
    if b in cut_at:
      raise KeyboardInterrupt  # the search killed while this compile runs
    return _line_compile(topology, config, b, compiler_options)
  monkeypatch.setattr(aot, "_compile", fake_compile)
  log = str(tmp_path / "runs" / "probes.jsonl")  # its folder made
  cmd = ["--aot", "v5p:2x2x1", "--model", "test_aot_two_conv", "--size", str(SIZE),
         "--dtype", "bfloat16", "--no-max_batch_scout", "--max_batch", "--aot_log", log]
  with pytest.raises(KeyboardInterrupt):
    bench.run(cmd)
  assert compiled == [8, 16, 243]
  with open(log) as f:
    assert [json.loads(line)["batch_per_chip"] for line in f] == [8, 16]
  compiled.clear(), cut_at.clear()
  r = bench.run(cmd)[0]
  assert compiled == [243, 244] and r["max_batch_per_chip"] == 243
  assert capsys.readouterr().err.count(f"read back from {log}") == 2
  compiled.clear()
  bench.run(cmd[:-3] + ["--aot_log", log])  # the same program, one compile: read back
  assert compiled == []
  bench.run([("float32" if a == "bfloat16" else a) for a in cmd])
  assert compiled[:2] == [8, 16]
  compiled.clear()
  monkeypatch.setattr(aot, "_source_digest", lambda: "jaxcd edited")
  bench.run(cmd)  # another program: jaxcd's sources changed
  assert compiled[:2] == [8, 16]

  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"key": "k"}) + "\n{not json\n")
  compiled.clear()
  with pytest.raises(ConfigError, match=f"--aot_log {bad}: line 2 is not a JSON report"):
    bench.run(cmd[:-1] + [str(bad)])
  with pytest.raises(ConfigError, match=f"--aot_log {tmp_path}: cannot"):
    bench.run(cmd[:-1] + [str(tmp_path)])
  assert compiled == []
