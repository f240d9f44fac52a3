"""Every Dsfer-Net and Table I baseline config loads, its model builds (eval_shape only), and its
`model`/`loss`/`data` fields are accepted by the model, the loss and the data source."""
import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd.config_base import sibling
from jaxcd.data import _import_all as _import_sources
from jaxcd.methods import common
from jaxcd.models.layers import count_params

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NAMES = ("dsfernet", "dsfernet_levir", "dsfernet_whu", "dsfernet_cdd", "bit", "fc_ef_res")
COMMON_DATA = {"name", "data_dir", "num_bands", "band_order", "mean", "std"}  # every source takes and ignores these


def _config(name):
  return sibling(str(CONFIGS / "x.py"), name)


def _size(c) -> int:
  return c.model.get("input_size") or c.data.get("image_size") or 64


@pytest.mark.parametrize("name", NAMES)
def test_config_builds_model_and_loss(name):
  c = _config(name)
  assert c.lock() is not None  # config_flags locks it: no field added later by code
  model = common.build_model(c)  # every model field is a constructor argument
  s = _size(c)
  x = jax.ShapeDtypeStruct((2, s, s, c.data.num_bands), jnp.float32)
  v = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)
  out = jax.eval_shape(lambda v, a: model.apply(v, a, a), v, x)
  assert out["logits"].shape == (2, s, s, c.model.num_classes)
  # The trainer unpacks `loss, aux = loss_fn(outputs, labels)` (methods/common.py).
  labels = jax.ShapeDtypeStruct((2, s, s), jnp.uint8)
  loss, aux = jax.eval_shape(common.make_loss(c), out, labels)
  assert loss.shape == () and isinstance(aux, dict)
  common.make_normalizer(c)  # mean/std agree with num_bands
  common.make_optimizer(c.optim, c.num_steps)


@pytest.mark.parametrize("name", NAMES)
def test_data_fields_are_accepted_by_the_source(name):
  from jaxcd.data import _SOURCES  # the registry
  _import_sources()
  c = _config(name)
  factory = _SOURCES[c.data.name]
  params = inspect.signature(factory).parameters
  extra = set(c.data.keys()) - COMMON_DATA
  assert extra <= set(params), f"{c.data.name} does not take {sorted(extra - set(params))}"


def test_paper_configs_hold_the_papers_settings():
  for name, weights, lr in (("dsfernet_levir", (1.04809706, 21.79129276), 1e-5),
                            ("dsfernet_whu", (1.04715042, 22.20871691), 1e-5),
                            ("dsfernet_cdd", (1.13250422, 8.54692918), 1e-4)):
    c = _config(name)
    assert (c.input.batch_size, c.optim.name, c.optim.weight_decay) == (32, "adam", 1e-5)
    assert (c.optim.schedule, c.num_steps, c.eval_every) == ("linear", 30000, 500)
    assert c.optim.lr == lr and tuple(c.loss.class_weights) == weights
    assert c.model.input_size == 256 and c.model.layernorm == "chw"
    assert len(c.data.mean) == 3 and all(0 < m < 255 for m in c.data.mean)
  # 256x256 official model: the parameter count of the official MyNet.
  c = _config("dsfernet_levir")
  x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
  model = common.build_model(c)
  v = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)
  assert count_params(v["params"]) == 34_085_990


def test_embedded_dsfernet_config_is_consistent():
  c = _config("dsfernet")
  assert c.data.name == "synthetic" and c.data.image_size == c.model.input_size
  assert c.loss.name == "dsfernet" and c.optim.schedule == "linear"
  # The loss really is Dsfer-Net's: the Dice terms respond to the deep-supervision heads.
  s = c.model.input_size
  rng = np.random.default_rng(0)
  out = {"logits": jnp.asarray(rng.standard_normal((1, s, s, 2)), jnp.float32),
         "aux4": jnp.zeros((1, s // 8, s // 8, 2)), "aux5": jnp.zeros((1, s // 16, s // 16, 2))}
  labels = jnp.asarray(rng.integers(0, 2, (1, s, s)), jnp.uint8)
  loss_fn = common.make_loss(c)
  base = jnp.asarray(loss_fn(out, labels)[0])
  out2 = dict(out, aux4=out["aux4"].at[..., 1].set(5.0))
  assert float(jnp.asarray(loss_fn(out2, labels)[0])) != pytest.approx(float(base))


def test_band_order_feeds_bgr_with_statistics_in_the_fed_order():
  from jaxcd.errors import ConfigError
  c = _config("dsfernet_levir")
  rgb_mean, rgb_std = np.array(c.data.mean), np.array(c.data.std)
  c.data.band_order = (2, 1, 0)  # what the official code's cv2.imread gives the network
  c.data.mean, c.data.std = tuple(rgb_mean[::-1]), tuple(rgb_std[::-1])
  x = np.random.default_rng(0).integers(0, 256, (1, 4, 4, 3)).astype(np.uint8)
  got = np.asarray(common.make_normalizer(c)(jnp.asarray(x)))
  np.testing.assert_allclose(got, (x[..., ::-1] - rgb_mean[::-1]) / rgb_std[::-1], atol=1e-5)
  c.data.band_order = (0, 0, 1)
  with pytest.raises(ConfigError, match="band_order"):
    common.make_normalizer(c)
