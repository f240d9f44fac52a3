"""`python -m jaxcd.bench --aot`: the trainer's step compiled by XLA's TPU compiler for a 4-chip
topology on this CPU, on a two-layer network (a TPU compile of a real model takes minutes)."""
import json
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import pytest

from jaxcd import aot, bench, config_base
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


@pytest.mark.slow  # one TPU compile: 19 s on a quiet moment of 2 shared cores, 75 s under load
@needs_libtpu
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
  # Data parallelism: the gradients (and BatchNorm's batch statistics) are all-reduced.
  c = r["collectives"]
  assert c["all-reduce"]["count"] >= 1 and c["all-reduce"]["bytes"] >= 258 * 4 // 2


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
