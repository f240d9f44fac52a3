"""Variables of a model without running `model.init` (a minute for the larger rivals on a busy
2-core CPU): shapes from `jax.eval_shape`, values drawn here."""
import jax
import jax.numpy as jnp
import numpy as np


def abstract_variables(model, hw=(64, 64), bands: int = 3):
  x = jax.ShapeDtypeStruct((1, *hw, bands), jnp.float32)
  return jax.eval_shape(lambda a, b: model.init(jax.random.key(0), a, b, train=False), x, x)


def random_variables(model, seed: int = 0):
  """N(0, 0.1) weights; BatchNorm variances and scales 1 (so eval mode stays well scaled)."""
  rng = np.random.default_rng(seed)
  fill = lambda path, s: (np.ones(s.shape, np.float32) if path[-1].key in ("var", "scale")  # noqa: E731
                          else 0.1 * rng.standard_normal(s.shape).astype(np.float32))
  return jax.tree_util.tree_map_with_path(fill, abstract_variables(model))
