"""The network's input: per-band normalisation and band order from a config's `data` block,
applied on device to uint8 (or 16-bit) batches."""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.errors import ConfigError


def make_normalizer(config) -> Callable[[jax.Array], jax.Array]:
  mean = np.asarray(config.data.mean, np.float32)
  std = np.asarray(config.data.std, np.float32)
  if mean.shape != (config.data.num_bands,) or std.shape != (config.data.num_bands,):
    raise ConfigError(f"config.data.mean/std need {config.data.num_bands} values "
                      f"(config.data.num_bands), got {mean.shape[0]} and {std.shape[0]}")
  if np.any(std <= 0):
    raise ConfigError("config.data.std must be positive")
  order = tuple(int(i) for i in config.data.get("band_order", ()) or ())
  if order and sorted(order) != list(range(len(mean))):
    raise ConfigError(f"config.data.band_order={order} must be a permutation of the "
                      f"{len(mean)} band indices 0..{len(mean) - 1}")

  def normalize(x_BxHxWxC: jax.Array) -> jax.Array:
    if x_BxHxWxC.shape[-1] != mean.shape[0]:
      raise ConfigError(f"images have {x_BxHxWxC.shape[-1]} bands but config.data.num_bands="
                        f"{mean.shape[0]}")
    if order:
      x_BxHxWxC = x_BxHxWxC[..., order]
    return (x_BxHxWxC.astype(jnp.float32) - mean) / std
  return normalize
