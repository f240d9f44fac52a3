"""The Dsfer-Net configs beyond what every config is checked for (tests/test_configs.py): the
embedded config trains with Dsfer-Net's own loss, and band_order feeds BGR."""
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd.config_base import sibling
from jaxcd import losses
from jaxcd.data.normalize import make_normalizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _config(name):
  return sibling(str(CONFIGS / "x.py"), name)


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
  loss_fn = losses.from_config(c.loss)
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
  got = np.asarray(make_normalizer(c)(jnp.asarray(x)))
  np.testing.assert_allclose(got, (x[..., ::-1] - rgb_mean[::-1]) / rgb_std[::-1], atol=1e-5)
  c.data.band_order = (0, 0, 1)
  with pytest.raises(ConfigError, match="band_order"):
    make_normalizer(c)
