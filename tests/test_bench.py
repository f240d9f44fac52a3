"""`python -m jaxcd.bench`: the model benchmark's JSON line, run in-process on a tiny fc_siam_diff."""
import json

import jax
import numpy as np
import pytest

from jaxcd import bench
from jaxcd.errors import ConfigError
from jaxcd import state as state_lib
from jaxcd import config_base
from jaxcd.models.layers import count_params

KEYS = ("model", "batch", "size", "dtype", "params", "train_pairs_per_s", "fwd_pairs_per_s",
        "flops_per_pair", "train_flops_per_pair", "devices", "platform", "device_kind", "mfu")


def _single_pair_reference(name: str, size: int) -> tuple[int, float]:
  """(param count, forward FLOPs of ONE pair) measured without the bench: no mesh, batch 1."""
  config = config_base.base_config()
  config.model.name = name
  model = state_lib.build_model(config)
  x = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
  variables = jax.eval_shape(lambda a, b: model.init(jax.random.key(0), a, b, train=False), x, x)
  fwd = jax.jit(lambda v, a, b: model.apply(v, a, b, train=False)["logits"])
  ca = fwd.lower(variables, x, x).compile().cost_analysis()
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  return count_params(variables["params"]), float(ca["flops"])


@pytest.mark.slow
def test_model_bench_json_line(capsys, tmp_path):
  # Two devices when the suite fakes several (batch 2 must divide the mesh), else one.
  devices = min(2, jax.device_count())
  results = bench.run(["--model", "fc_siam_diff", "--batch", "2", "--size", "32", "--steps", "2",
                       "--devices", str(devices), "--peak_flops", "1e11", "--json",
                       "--profile", str(tmp_path / "trace"), "--top", "5"])
  lines = capsys.readouterr().out.strip().splitlines()
  r = json.loads(lines[-1])  # the JSON is the last line, after the human-readable one
  assert r == json.loads(json.dumps(results[0]))
  assert not lines[0].startswith("{") and "fc_siam_diff" in lines[0]
  for key in KEYS:
    assert key in r, key
  assert (r["model"], r["batch"], r["size"], r["dtype"]) == ("fc_siam_diff", 2, 32, "float32")
  params, flops_one_pair = _single_pair_reference("fc_siam_diff", 32)
  assert r["params"] == params
  assert r["devices"] == devices and r["platform"] == jax.devices()[0].platform
  assert r["flops_per_pair"] > 0
  # Per pair, whatever the batch and the mesh (XLA analyses one device's program): the batch-2
  # figure matches one unsharded pair; normalisation and softmax add a little.
  assert r["flops_per_pair"] == pytest.approx(flops_one_pair, rel=0.05)
  # A train step is a forward plus a backward pass (about twice the forward again).
  assert r["train_flops_per_pair"] > 2 * r["flops_per_pair"]
  assert r["train_pairs_per_s"] > 0 and r["fwd_pairs_per_s"] > 0
  # MFU = achieved train FLOP/s over the peak of all devices of the mesh.
  achieved = r["train_flops_per_pair"] * r["train_pairs_per_s"]
  assert r["mfu"] == pytest.approx(achieved / (1e11 * devices))
  assert 0 < r["train_compile_s"] <= r["compile_s"] and r["init_s"] > 0
  # --profile: each step's five costliest XLA ops, named as in the compiled program.
  for part in ("train", "fwd"):
    rows = r["profile"][part]
    assert len(rows) == 5 and all(o["ms"] > 0 and o["share"] > 0 for o in rows), rows
    assert [o["ms"] for o in rows] == sorted((o["ms"] for o in rows), reverse=True)
  assert any("convolution" in o["opcode"] + o["fuses"] for o in r["profile"]["fwd"])
  # Every op's time by kind: each step's top ops are in it, and convolutions lead the forward.
  for part in ("train", "fwd"):
    kinds = r["profile_kinds"][part]
    assert sum(kinds.values()) >= sum(o["share"] for o in r["profile"][part]) - 1e-9
  assert next(iter(r["profile_kinds"]["fwd"])) == "convolution", r["profile_kinds"]
  assert list((tmp_path / "trace" / "train").rglob("*.trace.json.gz"))


def test_op_kinds_of_compiled_ops():
  from jaxcd.bench import kind_shares, op_kind
  assert op_kind("fusion", "convolution") == op_kind("convolution", "") == "convolution"
  assert op_kind("fusion", "add,broadcast,convolution,maximum,reduce-window") == "convolution"
  assert op_kind("fusion", "add,maximum,reduce-window") == "pooling"
  assert op_kind("fusion", "add,dot,exponential") == "dot"
  assert op_kind("scatter", "") == "scatter/gather"
  assert op_kind("fusion", "copy,reverse,transpose") == "copy/slice/transpose"
  assert op_kind("fusion", "add,copy,transpose") == "elementwise"
  rows = [{"opcode": "fusion", "fuses": "convolution", "share": 0.5},
          {"opcode": "slice", "fuses": "", "share": 0.125},
          {"opcode": "fusion", "fuses": "add,maximum", "share": 0.25},
          {"opcode": "convolution", "fuses": "", "share": 0.0625}]
  assert list(kind_shares(rows).items()) == [("convolution", 0.5625), ("elementwise", 0.25),
                                             ("copy/slice/transpose", 0.125)]


def test_peak_lookup_prefers_the_specific_device_name():
  # "NVIDIA H100 PCIe" also contains "H100", "NVIDIA H200 NVL" also "H200": the lower-power
  # parts must not get the SXM peak (that would understate their MFU).
  sxm, sxm_src = bench.peak_flops_for("NVIDIA H100 80GB HBM3", "bfloat16")
  pcie, pcie_src = bench.peak_flops_for("NVIDIA H100 PCIe", "bfloat16")
  nvl, _ = bench.peak_flops_for("NVIDIA H200 NVL", "bfloat16")
  assert sxm and pcie and nvl and pcie < sxm and nvl < bench.peak_flops_for("NVIDIA H200", "bfloat16")[0]
  assert "PCIe" in pcie_src and "SXM" in sxm_src
  assert bench.peak_flops_for("NVIDIA H100 80GB HBM3", "float32")[0] < sxm  # TF32 < bf16
  assert bench.peak_flops_for("cpu", "float32") == (None, None)


def test_bad_flags_are_config_errors():
  with pytest.raises(ConfigError, match="--model_kwargs"):
    bench.run(["--model", "fc_siam_diff", "--model_kwargs", "{oops"])
  with pytest.raises(ConfigError, match="config.model.name"):
    bench.run(["--model", "no_such_net", "--batch", "2", "--size", "32", "--devices", "1"])
  with pytest.raises(ConfigError, match="--batch"):
    bench.bench_model("fc_siam_diff", batch=0, size=32)
  with pytest.raises(ConfigError, match="--devices"):
    bench.bench_model("fc_siam_diff", batch=2, size=32, num_devices=jax.device_count() + 1)


def test_levir_like_pipeline(capsys):
  r = bench.run(["--pipeline", "--dataset", "levir_like", "--size", "64", "--batch", "4",
                 "--num_batches", "3", "--json"])[0]
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pairs_per_s"] > 0
  assert r["pair_shape"] == [64, 64, 3] and r["batch"] == 4 and r["num_batches"] == 3


def test_hopfield_kernel_bench_both_implementations():
  r = bench.bench_hopfield(batch=1, tokens=64, dim=32, dtype="float32", steps=1)
  assert set(r["impls"]) == {"xla", "reference"}
  for m in r["impls"].values():
    # QK^T and PV alone are 2 * 2*B*N*M*D FLOPs; the projections add 3 * 2*B*N*D*D.
    assert m["flops"] >= 2 * 2 * 64 * 64 * 32 and m["ms"] > 0
    assert m["max_abs_diff_vs_f32_ref"] < 1e-5  # float32: the same maths as the reference


def test_layer_grads_kernel_parts_and_agreement(capsys):
  # 32 output channels: the per-tap kernel gradient is the one the models use on CPU.
  r = bench.run(["--kernel", "layer_grads", "--batch", "1", "--size", "16", "--dim", "32",
                 "--dtype", "float32", "--steps", "1", "--json"])[0]
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kernel"] == "layer_grads"
  assert (r["batch"], r["size"], r["channels"]) == (1, 16, 32)
  assert len(r["parts"]) == 6 and all(p["ms"] > 0 for p in r["parts"].values())
  assert r["kernel_grad_rel_diff"] < 1e-5  # the same gradient as lax's, summed in another order
  assert r["max_pool_grad_rel_diff"] == 0  # value for value, ties included


def test_matmul_ceiling_rate(capsys):
  r = bench.run(["--kernel", "matmul", "--dim", "64", "--dtype", "float32", "--steps", "2",
                 "--json"])[0]
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["gflop_per_s"] > 0
  assert r["gflop_per_s"] == pytest.approx(2 * 64 ** 3 / (r["ms"] / 1e3) / 1e9)


@pytest.mark.slow
def test_clustering_bench_times_each_part(capsys):
  r = bench.run(["--clustering", "--images", "6", "--size", "32", "--batch", "4", "--k", "5",
                 "--max_samples", "3000", "--steps", "1", "--json"])[0]
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kind"] == "clustering"
  # 6 pairs of 32x32 = 6144 pixels, 3000 sampled: 500 per image, at most 3000 kept.
  assert r["samples"] == 3000 and r["host_sample_mib"] == pytest.approx(3000 * 16 * 4 / 2**20)
  assert r["host_labels_mib"] == pytest.approx(6 * 32 * 32 / 2**20)  # uint8 for k <= 255
  for key in ("feature_sample_pixels_per_s", "assign_pixels_per_s", "faiss_fit_s", "peak_rss_mib"):
    assert r[key] > 0, key
  assert r["min_cluster"] > 0  # repaired: no empty cluster


@pytest.mark.slow
def test_dsfernet_bench_builds_its_layernorms_for_the_bench_size():
  from jaxcd.models import get_model
  r = bench.bench_model("dsfernet", batch=1, size=32, steps=1)  # would raise at input_size 256
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
  net = get_model("dsfernet", input_size=32)
  variables = jax.eval_shape(lambda a, b: net.init(jax.random.key(0), a, b, train=False), x, x)
  assert r["size"] == 32 and r["params"] == count_params(variables["params"])


@pytest.mark.slow  # traces (no compile) every registered model's train step: ~1 min on 2 cores
def test_every_registered_model_has_a_bench_train_step():
  # `--model all` benchmarks each model with its defaults and plain CE on 'logits': the train
  # step of every registered model must trace with that config (jax.eval_shape: no compile).
  from jaxcd import losses, optim, parallel, steps
  from jaxcd.data.normalize import make_normalizer
  from jaxcd.models import list_models
  mesh = parallel.make_mesh(jax.devices()[:1])
  names = list_models()
  assert {"bit", "changeformer", "dsamnet", "snunet", "stanet", "vct"} <= set(names)
  for name in names:
    config = bench.model_config(name, size=64)
    net = state_lib.build_model(config)
    tx, _ = optim.make_optimizer(config.optim, config.num_steps)
    state = state_lib.create_state(net, tx, (1, 64, 64, 3), 0, mesh, abstract=True)
    shardings = jax.tree_util.tree_map(lambda x: x.sharding, state)
    step = steps.make_train_step(net, tx, losses.from_config(config.loss), make_normalizer(config),
                                 jax.random.key(0), mesh, shardings)
    batch = {"image_a": jax.ShapeDtypeStruct((2, 64, 64, 3), np.uint8),
             "image_b": jax.ShapeDtypeStruct((2, 64, 64, 3), np.uint8),
             "label": jax.ShapeDtypeStruct((2, 64, 64), np.uint8)}
    new_state, metrics = jax.eval_shape(step, state, batch)
    assert jax.tree_util.tree_structure(new_state.params) == jax.tree_util.tree_structure(
        state.params), name
    assert metrics["loss"].shape == (), name
