"""Meshes, shardings and global batches: data parallelism with `jax.jit` + `NamedSharding`.

Each process feeds its slice of the global batch; `to_global` assembles the per-process numpy
arrays into one `jax.Array` sharded over the `data` axis of the mesh (all devices of all
processes). Parameters and optimizer state are replicated.
"""
import logging
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcd.errors import ConfigError

DATA_AXIS = "data"


def initialize_distributed(enabled: bool) -> None:
  """`jax.distributed.initialize()` when enabled (launch/ scripts set it).

  With no arguments JAX reads the cluster from the environment (SLURM, TPU VM metadata, or
  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID for a local multi-process run).
  """
  if not enabled or jax.distributed.is_initialized():
    return
  kwargs: dict[str, Any] = {}
  if "JAX_COORDINATOR_ADDRESS" in os.environ:
    kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                  num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def allow_grain_workers() -> None:
  """grain's worker processes read absl flags; outside an absl `app.run` (tests, notebooks,
  argparse programs) they are unparsed and grain raises, so fall back to the flag defaults."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_mesh(devices=None) -> Mesh:
  """A 1-D `data` mesh over all devices (or the given ones). Auto axes: XLA propagates the
  batch sharding, and BatchNorm statistics over the batch axis become global all-reduces."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def local_data_devices(mesh: Mesh) -> int:
  """This process's devices on the batch axis: the blocks its host batch is laid out in."""
  return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def split_streams(x: jax.Array, sizes: Sequence[int], groups: int) -> list[jax.Array]:
  """Each stream's rows of a global batch laid out by `pipeline.Streams(groups=...)`, `groups`
  being the devices on the batch axis: every device's block holds its share of every stream, so
  the split is local to each device. (Splitting [all of stream 1; all of stream 2] on the sharded
  axis makes XLA move half the rows between chips, collective-permutes in every step.)"""
  rest = x.shape[1:]
  blocks = x.reshape((groups, x.shape[0] // groups) + rest)
  edges = np.cumsum([n // groups for n in sizes])[:-1]
  return [part.reshape((-1,) + rest) for part in jnp.split(blocks, edges, axis=1)]


def check_batch_size(global_batch: int, field: str = "input.batch_size") -> None:
  n = jax.device_count()
  if global_batch % n:
    raise ConfigError(f"config.{field}={global_batch} is not divisible by the {n} devices")


def to_global(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global arrays sharded on the data axis (string fields dropped)."""
  sharding = data_sharded(mesh)
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.dtype.kind in "US O":
      continue
    # The batch's one explicit transfer: with several processes jax counts it as implicit.
    with jax.transfer_guard_host_to_device("allow"):
      out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a data-sharded global array, in order, as numpy."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:
    start = s.index[0].start or 0
    if start not in seen:
      seen.add(start)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows, axis=0)
