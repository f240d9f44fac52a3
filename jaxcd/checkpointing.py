"""All orbax code: checkpoints of the train state, the data iterator and method state.

Layout of a workdir:
  checkpoints/<step>/  latest `keep` checkpoints, for resuming a killed run
  best/<step>/         the checkpoint with the best validation F1 (kept alone)
Each checkpoint has three items: `state` (a pytree of arrays), `data` (the training data
iterator, saved and restored by grain's own orbax handler: one JSON file per process) and `meta`
(JSON: best F1, method state such as CDCluster's change map), plus an optional fourth, `extra`: a
dict of host (numpy) arrays of method state too large for JSON, e.g. CDCluster's centroids and
pseudo-labels (`save(..., extra=...)`, read back with `restore_extra`). Writes are atomic
(orbax writes to a temporary directory and renames), so a run killed at any moment leaves the
previous checkpoints valid.
"""
import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcd.errors import DataError

LATEST, BEST = "checkpoints", "best"


def _manager(directory: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  opts = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      # Synchronous saves: a save returns once the checkpoint is committed, so the SIGKILL
      # guarantee is simple; saves are rare compared with steps.
      enable_async_checkpointing=False,
      # Readers open with create=False and never save (orbax's read_only mode only adds warnings).
      create=not read_only)
  # Explicit handlers: metadata can be read before restoring (no "could not be restored" noise).
  handlers = dict(state=ocp.StandardCheckpointHandler(), meta=ocp.JsonCheckpointHandler(),
                  data=grain.checkpoint.CheckpointHandler(),
                  # Declared up front: a manager's items are fixed at its first save, and `extra`
                  # first appears in a later one (e.g. after CDCluster's first clustering).
                  extra=ocp.StandardCheckpointHandler())
  return ocp.CheckpointManager(os.path.abspath(directory), options=opts, item_handlers=handlers)


class Checkpointer:
  """Latest-N checkpoints for resuming plus the best-by-validation one."""

  def __init__(self, workdir: str, keep: int = 2):
    self.workdir = workdir
    self.latest = _manager(os.path.join(workdir, LATEST), keep)
    self.best = _manager(os.path.join(workdir, BEST), 1)

  def save(self, step: int, state: Any, data: Any = None, meta: dict | None = None,
           best: bool = False, extra: dict[str, np.ndarray] | None = None) -> None:
    """Saves `step` unless that step is already committed there. A run killed between two saves
    of one step (best/<s> written, checkpoints/<s> not) re-trains to step s on resume, with the
    same data order and keys, so the committed checkpoint already holds that state: keeping it
    never opens a window in which the only copy is half-written."""
    mngr = self.best if best else self.latest
    if step in mngr.all_steps():
      return
    mngr.save(step, args=_save_args(state, data, meta or {}, extra), force=True)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def best_step(self) -> int | None:
    return self.best.latest_step()

  def restore(self, abstract_state: Any, step: int | None = None, which: str = LATEST):
    """(state, meta, step) of a checkpoint (the newest by default), or None if there is none."""
    mngr = self.best if which == BEST else self.latest
    step = mngr.latest_step() if step is None else step
    if step is None:
      return None
    return _restore(mngr, step, abstract_state)

  def restore_data(self, step: int, iterator: Any) -> bool:
    """Sets `iterator` (a grain iterator or `pipeline.Streams`) to its state saved at `step`;
    False if that checkpoint holds none."""
    if "data" not in os.listdir(os.path.join(str(self.latest.directory), str(step))):
      return False
    self.latest.restore(step, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(iterator)))
    return True

  def restore_extra(self, step: int | None = None, which: str = LATEST) -> dict | None:
    """The `extra` item of a checkpoint as a dict of numpy arrays (None if it has none)."""
    mngr = self.best if which == BEST else self.latest
    step = mngr.latest_step() if step is None else step
    return None if step is None else _restore_extra(mngr, step)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _save_args(state, data, meta, extra=None):
  items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
  if data is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data)
  if extra is not None:
    items["extra"] = ocp.args.StandardSave({k: np.asarray(v) for k, v in extra.items()})
  return ocp.args.Composite(**items)


def _restore_extra(mngr: ocp.CheckpointManager, step: int) -> dict | None:
  if "extra" not in os.listdir(os.path.join(str(mngr.directory), str(step))):
    return None
  md = mngr.item_metadata(step)["extra"]
  md = getattr(md, "tree", md)
  # Restore as numpy with the saved shapes and dtypes, on any topology.
  target = {k: np.zeros(v.shape, v.dtype) for k, v in md.items()}
  out = mngr.restore(step, args=ocp.args.Composite(extra=ocp.args.StandardRestore(target)))
  return {k: np.asarray(v) for k, v in out["extra"].items()}


def _restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any):
  items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
  out = mngr.restore(step, args=ocp.args.Composite(**items))
  return out["state"], out["meta"], step


def latest_step(workdir: str) -> int | None:
  """The newest committed step of WORKDIR/checkpoints, read without creating anything."""
  directory = os.path.join(workdir, LATEST)
  if not os.path.isdir(directory):
    return None
  mngr = _manager(directory, 1, read_only=True)
  try:
    return mngr.latest_step()
  finally:
    mngr.close()


def restore_for_inference(workdir: str, abstract_state: Any, prefer: str = BEST):
  """(state, meta, step, which) from the best checkpoint, falling back to the latest one."""
  if not os.path.isdir(workdir):
    raise DataError(f"workdir {workdir} does not exist: train first (python -m jaxcd.train --config C --workdir {workdir})")
  for which in (prefer, LATEST if prefer == BEST else BEST):
    path = os.path.join(workdir, which)
    if not os.path.isdir(path):
      continue
    mngr = _manager(path, 1, read_only=True)
    step = mngr.latest_step()
    if step is not None:
      state, meta, step = _restore(mngr, step, abstract_state)
      mngr.close()
      return state, meta, step, which
    mngr.close()
  raise DataError(f"no checkpoint in {workdir} (looked in {BEST}/ and {LATEST}/)")


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) to restore into."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def load_numpy(workdir: str, step: int | None = None, which: str = LATEST) -> tuple[dict, int]:
  """The `state` item of a checkpoint as a dict of numpy arrays (any topology), and its step.
  For inspection, tests and export; training restores with `Checkpointer.restore`."""
  directory = os.path.abspath(os.path.join(workdir, which))
  mngr = _manager(directory, 1, read_only=True)
  step = mngr.latest_step() if step is None else step
  mngr.close()
  if step is None:
    raise DataError(f"no checkpoint in {directory}")
  path = os.path.join(directory, str(step), "state")
  ckptr = ocp.PyTreeCheckpointer()
  md = ckptr.metadata(path)
  tree = md.item_metadata.tree if hasattr(md, "item_metadata") else md
  restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args)), step
