"""Run by tests/test_parallel.py in a fresh process with 8 fake CPU devices: one train step of
FC-Siam-diff on a 1-device mesh and on an 8-device data-parallel mesh, same state and batch.
Prints a JSON object of the largest differences."""
import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from conftest import tiny_config  # noqa: E402
from jaxcd import parallel  # noqa: E402
from jaxcd.data import pipeline, source_from_config  # noqa: E402
from jaxcd import losses, optim, state as state_lib, steps  # noqa: E402
from jaxcd.data.normalize import make_normalizer  # noqa: E402


def one_step(devices, config, batch_np):
  mesh = parallel.make_mesh(devices)
  model = state_lib.build_model(config)
  tx, _ = optim.make_optimizer(config.optim, config.num_steps)
  state = state_lib.create_state(model, tx, (1,) + batch_np["image_a"].shape[1:], config.seed, mesh)
  before = jax.device_get(state.params)
  sh = jax.tree_util.tree_map(lambda x: x.sharding, state)
  step = steps.make_train_step(model, tx, losses.from_config(config.loss), make_normalizer(config),
                                jax.random.key(config.seed), mesh, sh)
  state, m = step(state, parallel.to_global(batch_np, mesh))
  return before, jax.device_get(state.params), jax.device_get(state.batch_stats), jax.device_get(m)


def main():
  assert jax.device_count() == 8, jax.devices()
  # Plain SGD with lr 1: the parameter change IS the gradient, so gradients are compared too.
  config = tiny_config(**{"optim.name": "sgd", "optim.lr": 1.0, "optim.momentum": 0.0,
                          "optim.schedule": "constant"})
  src = source_from_config(config.data, "train")
  batch = next(iter(pipeline.train_dataset(src, global_batch_size=8, seed=0)))
  p0_1, p1_1, bs_1, m_1 = one_step(jax.devices()[:1], config, batch)
  p0_8, p1_8, bs_8, m_8 = one_step(jax.devices(), config, batch)
  leaves = jax.tree_util.tree_leaves

  def max_abs(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(leaves(a), leaves(b)))

  grad_1 = jax.tree_util.tree_map(lambda a, b: a - b, p0_1, p1_1)
  grad_scale = max(float(np.max(np.abs(g))) for g in leaves(grad_1))
  print(json.dumps({
      "devices": jax.device_count(),
      "init_params": max_abs(p0_1, p0_8),
      "loss_1": float(m_1["loss"]), "loss_8": float(m_8["loss"]),
      "grad_max_abs_diff": max_abs(p1_1, p1_8), "grad_scale": grad_scale,
      "batch_stats_max_abs_diff": max_abs(bs_1, bs_8),
  }))


if __name__ == "__main__":
  main()
