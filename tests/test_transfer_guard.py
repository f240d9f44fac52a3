"""The loop's steps run under `jax.transfer_guard("disallow")`: a few steps of every training
method (CDCluster with a clustering, RCL with its second stage) pass with explicit transfers only,
and an implicit read reintroduced into the step region fails the run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from jaxcd import trainer
from methods import test_cdcluster_method, test_rcl


@pytest.fixture
def strict_device_to_host(monkeypatch):
  """On CPU a jax array lives in host memory and the device-to-host guard never fires: this makes
  an implicit read (`float(x)`, `np.asarray(x)`, printing) under a disallowing guard raise as it
  does on GPU and TPU. `jax.device_get` stays allowed, as there."""
  from jax._src import array, config
  value = array.ArrayImpl._value

  def guarded(self):
    if (config.transfer_guard_device_to_host.value == "disallow"
        and not config.guard_lib.thread_local_state().explicit_device_get):
      raise RuntimeError("Disallowed device-to-host transfer (implicit read of a jax.Array)")
    return value.fget(self)
  monkeypatch.setattr(array.ArrayImpl, "_value", property(guarded))


def test_the_stand_in_guard_catches_implicit_reads_only(strict_device_to_host):
  x = jax.jit(lambda a: a * 2)(jnp.ones(3))
  total = x.sum()
  with jax.transfer_guard("disallow"):
    with pytest.raises(RuntimeError, match="Disallowed device-to-host"):
      float(total)
    with pytest.raises(Exception, match="Disallowed host-to-device"):
      jax.jit(lambda a: a + 1)(np.ones(3))
    np.testing.assert_array_equal(jax.device_get(x), 2 * np.ones(3))
  float(total)  # outside the guard: allowed


METHODS = {
    "supervised": lambda: tiny_config(num_steps=3, eval_every=3, checkpoint_every=2),
    "cdcluster": lambda: test_cdcluster_method.tiny_config(
        num_steps=5, eval_every=5, checkpoint_every=2,
        **{"cdcluster.warmup_steps": 2, "cdcluster.cluster_every_steps": 4}),
    "rcl": lambda: test_rcl.tiny_config(**{"rcl.stage1_steps": 3, "rcl.stage2_steps": 3}),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_methods_train_under_the_transfer_guard(name, tmp_path, strict_device_to_host):
  trainer.train_and_evaluate(METHODS[name](), str(tmp_path))


def test_an_implicit_read_in_the_step_region_fails(tmp_path, strict_device_to_host, monkeypatch):
  push = trainer.LossWatch.push

  def reads_the_loss_now(self, step, metrics):
    float(metrics["loss"])
    return push(self, step, metrics)
  monkeypatch.setattr(trainer.LossWatch, "push", reads_the_loss_now)
  with pytest.raises(RuntimeError, match="Disallowed device-to-host"):
    trainer.train_and_evaluate(tiny_config(num_steps=2, eval_every=2), str(tmp_path))
