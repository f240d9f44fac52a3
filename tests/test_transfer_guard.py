"""The loop's steps run under `jax.transfer_guard("disallow")`, with explicit transfers only.
CDCluster (with a clustering) and RCL (both stages) train their tiny runs of tests/methods under
`conftest.strict_device_to_host`; here the stand-in itself, a supervised run, and an implicit
read reintroduced into the step region failing the run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import strict_device_to_host, tiny_config
from jaxcd import trainer


def test_the_stand_in_guard_catches_implicit_reads_only():
  x = jax.jit(lambda a: a * 2)(jnp.ones(3))
  total = x.sum()
  with strict_device_to_host(), jax.transfer_guard("disallow"):
    with pytest.raises(RuntimeError, match="Disallowed device-to-host"):
      float(total)
    with pytest.raises(Exception, match="Disallowed host-to-device"):
      jax.jit(lambda a: a + 1)(np.ones(3))
    np.testing.assert_array_equal(jax.device_get(x), 2 * np.ones(3))
  float(total)  # outside the guard: allowed


@pytest.mark.slow
def test_supervised_run_trains_under_the_guard_and_an_implicit_read_fails(tmp_path, monkeypatch):
  cfg = tiny_config(num_steps=3, eval_every=3, checkpoint_every=2)
  with strict_device_to_host():
    trainer.train_and_evaluate(cfg, str(tmp_path / "ok"))
  push = trainer.LossWatch.push

  def reads_the_loss_now(self, step, metrics):
    float(metrics["loss"])
    return push(self, step, metrics)
  monkeypatch.setattr(trainer.LossWatch, "push", reads_the_loss_now)
  with strict_device_to_host(), pytest.raises(RuntimeError, match="Disallowed device-to-host"):
    trainer.train_and_evaluate(cfg, str(tmp_path / "bad"))
