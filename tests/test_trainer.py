"""The one loop (`jaxcd.trainer`) with a plug-in method written here, on a one-layer network:
stages at global offsets, hooks, rows, checkpoints, the stage-start save, resume in the last
stage, final evaluation per stage; and a train step checked against a hand-computed update."""
import json
import shutil
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import tiny_config
from jaxcd import checkpointing, losses, parallel, steps, trainer, writers
from jaxcd.data.normalize import make_normalizer
from jaxcd.methods import base
from jaxcd.models.registry import REGISTRY, register
from jaxcd.state import TrainState


class PixelNet(nn.Module):
  """Logits = a 1x1 convolution of [a | b]: a network whose gradient is easy to write down."""
  num_classes: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, a, b, train: bool = False):
    x = jnp.concatenate([a, b], axis=-1)
    return {"logits": nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)}


if "test_pixel_net" not in REGISTRY:
  register("test_pixel_net")(PixelNet)


def pixel_config(**extra):
  c = tiny_config(**{"data.image_size": 32, "data.num_train": 8, "data.num_val": 4,
                     "data.num_test": 4, "input.batch_size": 4, "input.eval_batch_size": 4,
                     "optim.schedule": "poly", **extra})
  c.model = ml_collections.ConfigDict({"name": "test_pixel_net", "num_classes": 2})
  return c


class TwoStages(base.Method):
  """A method of two stages written as a test would: 3 steps in WORKDIR/first/, then 2 in
  WORKDIR/, recording the hooks the loop calls."""
  name = "two_stages"

  def __init__(self, config):
    super().__init__(config)
    self.calls: list[tuple] = []

  def stages(self, run):
    return [base.Stage("first", 3, 0, "first", eval_every=2, fields={"stage": 1}),
            base.Stage("second", 2, 3, "", eval_every=0, fields={"stage": 2})]

  def start(self, run, loop, resumed):
    self.calls.append(("start", loop.stage.name, resumed))

  def after_step(self, run, loop, step):
    self.calls.append(("after", loop.stage.offset + step))
    loop.meta.method["last"] = loop.stage.offset + step
    return False


def test_two_stages_on_the_loop(tmp_path):
  workdir = str(tmp_path)
  m = TwoStages(pixel_config())
  final = trainer.train_and_evaluate(m.config, workdir, method=m)
  assert m.calls == [("start", "first", False), ("after", 1), ("after", 2), ("after", 3),
                     ("start", "second", False), ("after", 4), ("after", 5)]
  rows = writers.read_metrics(workdir)
  assert [(r["step"], r["stage"]) for r in rows if r["split"] == "train"] == \
      [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]
  val = [(r["step"], r["stage"]) for r in rows if r["split"] == "val"]
  assert val == [(2, 1), (3, 1), (5, 2)]  # every 2 steps and at the end; 0 = at the end only
  # Each stage's schedule restarts: the second stage's first row has the first's learning rate.
  lr = {r["step"]: r["lr"] for r in rows if r["split"] == "train"}
  assert lr[1] == lr[4] == pytest.approx(m.config.optim.lr) and lr[2] < lr[1]
  # The second stage saved its start (global step 3) before its first step.
  assert sorted(int(s.name) for s in (tmp_path / "checkpoints").iterdir()) == [3, 5]
  assert sorted(int(s.name) for s in (tmp_path / "first" / "checkpoints").iterdir()) == [3]
  test = [r for r in rows if r["split"] == "test"]
  assert [(r["stage"], r["checkpoint"]) for r in test] == [(1, "best"), (2, "best")]
  assert set(final) == {"test", "first_test"}
  assert final["test"]["f1"] == pytest.approx(test[1]["f1"])
  meta = json.loads((tmp_path / "checkpoints" / "5" / "meta" / "metadata").read_text())
  assert meta["last"] == 5 and base.RunMeta.from_json(meta).method == {"last": 5}

  # A rerun resumes in the last stage with a checkpoint, at its end: nothing is trained again.
  again = TwoStages(pixel_config())
  trainer.train_and_evaluate(again.config, workdir, method=again)
  assert again.calls == [("start", "second", True)]
  assert [r["step"] for r in writers.read_metrics(workdir) if r["split"] == "train"] == \
      [1, 2, 3, 4, 5]


def test_resume_in_the_second_stage_is_bit_identical(tmp_path):
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  m = TwoStages(pixel_config())
  trainer.train_and_evaluate(m.config, str(ref), method=m)
  shutil.copytree(ref, cut)
  shutil.rmtree(cut / "checkpoints" / "5")  # as if killed after stage 2 started
  shutil.rmtree(cut / "best")
  again = TwoStages(pixel_config())
  trainer.train_and_evaluate(again.config, str(cut), method=again)
  assert again.calls[0] == ("start", "second", True) and again.calls[-1] == ("after", 5)
  a, _ = checkpointing.load_numpy(str(ref), 5)
  b, _ = checkpointing.load_numpy(str(cut), 5)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_one_sgd_step_equals_the_hand_computed_update():
  # Golden value from numpy: for logits = X W + c and mean cross-entropy over the N pixels,
  # dL/dW = X^T (softmax - onehot) / N and dL/dc = sum(softmax - onehot) / N.
  c = pixel_config()
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  batch = {"image_a": rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8),
           "image_b": rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8),
           "label": rng.integers(0, 2, (2, 4, 4), dtype=np.uint8)}
  w = rng.standard_normal((6, 2)).astype(np.float32) * 0.3
  bias = np.array([0.1, -0.2], np.float32)
  tx = optax.sgd(0.5)
  params = {"head": {"kernel": jnp.asarray(w), "bias": jnp.asarray(bias)}}
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                     opt_state=tx.init(params))
  state = jax.device_put(state, parallel.replicated(mesh))
  normalize = make_normalizer(c)
  loss_fn = lambda out, y: (losses.cross_entropy(out["logits"], y), {})  # noqa: E731
  step = steps.make_train_step(PixelNet(), tx, loss_fn, normalize, jax.random.key(0), mesh,
                               base.shardings_of(state))
  new, metrics = step(state, parallel.to_global(batch, mesh))

  x = np.concatenate([(batch["image_a"] - 127.5) / 127.5, (batch["image_b"] - 127.5) / 127.5],
                     -1).reshape(-1, 6).astype(np.float64)
  y = batch["label"].reshape(-1)
  z = x @ w + bias
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  loss = -np.mean(np.log(p[np.arange(len(y)), y]))
  d = p.copy()
  d[np.arange(len(y)), y] -= 1
  d /= len(y)
  np.testing.assert_allclose(float(metrics["loss"]), loss, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(new.params["head"]["kernel"]), w - 0.5 * x.T @ d,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(new.params["head"]["bias"]), bias - 0.5 * d.sum(0),
                             rtol=1e-5, atol=1e-6)
  assert int(new.step) == 1


def test_a_stage_without_steps_is_a_one_line_error(tmp_path):
  with pytest.raises(trainer.ConfigError, match="stage 'train' has 0 steps") as e:
    trainer.train_and_evaluate(pixel_config(num_steps=0), str(tmp_path))
  assert "\n" not in str(e.value)
  assert not Path(tmp_path, "checkpoints").exists()
