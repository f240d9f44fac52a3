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

Saves are asynchronous by default (`config.async_checkpoints`): `save` returns once the arrays are
copied to host and the data and meta items are captured, and orbax writes and commits in a
background thread while training goes on (the next save waits for it). Every read of a
`Checkpointer` (restores, step lists) and `close` first waits for its saves in flight, so what is
read back is always committed; the trainer closes its checkpointer also on an error.

A checkpoint damaged afterwards (a truncated data file, garbled or zeroed metadata) is not the
end of a run: every restore without an explicit step takes the newest checkpoint whose items all
read back, and reports each one skipped in one warning line (its directory and the error).
  resuming (`Checkpointer.restore`)  all four items of the step are read before any is applied;
      a bad step is renamed aside to `<step>.corrupt` (kept for inspection, invisible to orbax,
      so the resumed run saves that step again) and the previous one is used;
  best (`restore_best`, `restore_for_inference`)  best/ keeps one checkpoint, so a corrupt best
      falls back to the newest good latest one, with a warning (and the other way round for
      `--checkpoint latest` when checkpoints/ has none left);
  readers (`restore_for_inference`: evaluate, predict)  skip a bad step, changing nothing on disk.
With nothing good left the result is one `DataError` line naming every checkpoint tried. An error
in a checkpoint that reads back as saved (e.g. a config whose model does not fit it) is no
corruption: it propagates and nothing is renamed.
"""
import hashlib
import json
import logging
import os
import sys
from typing import Any, Sequence

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcd import storage
from jaxcd.errors import DataError, one_line

LATEST, BEST = "checkpoints", "best"
_ITEMS = ("state", "meta", "extra", "data")  # what a resumed run needs of one step
CORRUPT = ".corrupt"  # suffix of a checkpoint renamed aside


def _manager(directory: str, keep: int, read_only: bool = False,
             async_save: bool = False) -> ocp.CheckpointManager:
  opts = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      # Async or not, a step is committed by renaming its temporary directory, after its writes.
      enable_async_checkpointing=async_save,
      # Readers open with create=False and never save (orbax's read_only mode only adds warnings).
      create=not read_only,
      # Async saves end in a barrier of all processes keyed by the step: best/<s> and
      # checkpoints/<s> in flight together would share (and deadlock on) one key without this.
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=hashlib.sha1(str(directory).encode()).hexdigest()[:12]))
  # Explicit handlers: metadata can be read before restoring (no "could not be restored" noise).
  handlers = dict(state=ocp.StandardCheckpointHandler(), meta=ocp.JsonCheckpointHandler(),
                  data=grain.checkpoint.CheckpointHandler(),
                  # Declared up front: a manager's items are fixed at its first save, and `extra`
                  # first appears in a later one (e.g. after CDCluster's first clustering).
                  extra=ocp.StandardCheckpointHandler())
  return ocp.CheckpointManager(storage.absolute(directory), options=opts, item_handlers=handlers)


class Checkpointer:
  """Latest-N checkpoints for resuming plus the best-by-validation one."""

  def __init__(self, workdir: str, keep: int = 2, async_save: bool = False):
    self.workdir = workdir
    self.latest = _manager(storage.join(workdir, LATEST), keep, async_save=async_save)
    self.best = _manager(storage.join(workdir, BEST), 1, async_save=async_save)
    self._extra: tuple | None = None  # (which, step, extra) of the last `restore`

  def save(self, step: int, state: Any, data: Any = None, meta: dict | None = None,
           best: bool = False, extra: dict[str, np.ndarray] | None = None) -> None:
    """Saves `step` unless that step is already committed (or being committed) there. A run
    killed between two saves of one step (best/<s> written, checkpoints/<s> not) re-trains to
    step s on resume, with the same data order and keys, so the committed checkpoint already
    holds that state: keeping it never opens a window in which the only copy is half-written.
    `state` may change (or be donated) as soon as this returns, `data` too (its state is read
    here); `extra` arrays are written later and must not be modified in place."""
    mngr = self.best if best else self.latest
    if not best:
      # A committed checkpoints/<s> must never come before the best save issued before it: a
      # run resumed from <s> would not redo that save (best saves are rare: little waiting).
      self.best.wait_until_finished()
    if step in mngr.all_steps():
      return
    mngr.save(step, args=_save_args(state, data, meta or {}, extra), force=True)

  def wait(self) -> None:
    """Returns once every save of this checkpointer is committed (re-raising a failed one)."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def latest_step(self) -> int | None:
    self.wait()
    return self.latest.latest_step()

  def best_step(self) -> int | None:
    self.wait()
    return self.best.latest_step()

  def all_steps(self, which: str = LATEST) -> list[int]:
    self.wait()
    return list(self._manager(which).all_steps())

  def restore(self, abstract_state: Any, step: int | None = None, which: str = LATEST):
    """(state, meta, step) of a checkpoint, or None if there is none. By default the newest that
    reads back whole (state, meta, extra and data), renaming corrupt ones aside; the `extra` read
    with it is what `restore_extra(step)` then returns."""
    self.wait()
    mngr = self._manager(which)
    if step is None:
      got = _first_good(self.workdir, [(which, mngr)], abstract_state, _ITEMS, quarantine=True)
      if got is None:
        return None
      out, step, _ = got
    else:
      out = _load_step(mngr, step, abstract_state, _ITEMS)
    self._extra = (which, step, out.get("extra"))
    return out["state"], out["meta"], step

  def restore_best(self, abstract_state: Any):
    """(state, meta, step, which) of the best checkpoint, or of the newest good latest one if
    best/ has none or only a corrupt one (renamed aside, with a warning). None if there is none."""
    self.wait()
    got = _first_good(self.workdir, [(BEST, self.best), (LATEST, self.latest)], abstract_state,
                      ("state", "meta"), quarantine=True)
    if got is None:
      return None
    out, step, which = got
    return out["state"], out["meta"], step, which

  def restore_data(self, step: int, iterator: Any) -> bool:
    """Sets `iterator` (a grain iterator or `pipeline.Streams`) to its state saved at `step`;
    False if that checkpoint holds none. `restore` of that step has checked it reads back."""
    self.wait()
    if "data" not in _listdir(_step_dir(self.latest, step)):
      return False
    self.latest.restore(step, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(iterator)))
    return True

  def restore_extra(self, step: int | None = None, which: str = LATEST) -> dict | None:
    """The `extra` item of a checkpoint as a dict of numpy arrays (None if it has none)."""
    self.wait()
    mngr = self._manager(which)
    step = mngr.latest_step() if step is None else step
    if step is None:
      return None
    if self._extra is not None and self._extra[:2] == (which, step):
      return self._extra[2]
    return _load_step(mngr, step, None, ("extra",)).get("extra")

  def _manager(self, which: str) -> ocp.CheckpointManager:
    return self.best if which == BEST else self.latest

  def close(self) -> None:
    """Waits for the saves in flight (orbax's `close` does), then releases the managers."""
    try:
      self.latest.close()
    finally:
      self.best.close()


class _DataState:
  """An iterator's state read at save time, for grain's handler: an async save must store the
  state at its step, not whatever the iterator reached when the save's items are written."""

  def __init__(self, iterator: Any):
    state = iterator.get_state()
    # grain's own iterators give a dict (its handler writes it as JSON), `Streams` bytes.
    self.state = state if isinstance(state, bytes) else json.dumps(state, indent=4).encode()

  def get_state(self) -> bytes:
    return self.state


def _save_args(state, data, meta, extra=None):
  meta = json.loads(json.dumps(meta))  # a copy: the caller's dicts keep changing
  items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
  if data is not None:
    items["data"] = grain.checkpoint.CheckpointSave(_DataState(data))
  if extra is not None:
    items["extra"] = ocp.args.StandardSave({k: np.asarray(v) for k, v in extra.items()})
  return ocp.args.Composite(**items)


class _Corrupt(Exception):
  """A checkpoint that does not read back even as saved (missing, truncated or garbled files)."""


class _Captured:
  """Takes an iterator's place in grain's handler: receives the saved state instead of applying
  it, so a step's data item is checked before anything of that step is applied."""
  state: Any = None

  def set_state(self, state: Any) -> None:
    self.state = state

  def start_prefetch(self) -> None:
    pass


def _step_dir(mngr: ocp.CheckpointManager, step: int) -> str:
  return storage.join(str(mngr.directory), str(step))


def _listdir(directory: str) -> list[str]:
  return [p.name for p in storage.path(directory).iterdir()]


def _host_target(mngr: ocp.CheckpointManager, step: int, item: str) -> Any:
  """Zeros with an item's saved shapes and dtypes: it restores as numpy on any topology."""
  md = mngr.item_metadata(step)[item]
  md = getattr(md, "tree", md)
  return jax.tree_util.tree_map(lambda m: np.zeros(m.shape, m.dtype), md)


_READ_DIRS: set[str] = set()  # checkpoint directories restored from in this process


def _is_echo(exc: BaseException | None) -> bool:
  """An error of a read of our checkpoints left behind by a failed restore (see below)."""
  if exc is None:
    return False
  if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
    return True
  return any(d in str(exc) or d in str(exc.__cause__) for d in _READ_DIRS)


class _EchoFilter(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not _is_echo(record.exc_info[1] if record.exc_info else None)


def _unraisable_hook(previous):
  def hook(u):
    if not _is_echo(u.exc_value):
      previous(u)
  hook.jaxcd = True
  return hook


def _silence_echoes(mngr: ocp.CheckpointManager) -> None:
  """A restore that fails on one array leaves its sibling reads running after orbax's event loop
  has closed: each later prints a traceback (as an unraisable exception or asyncio's `Task
  exception was never retrieved`) for an error already reported in one line. Only those go."""
  if not _READ_DIRS:
    logging.getLogger("asyncio").addFilter(_EchoFilter())
  _READ_DIRS.add(str(mngr.directory))
  if not getattr(sys.unraisablehook, "jaxcd", False):
    sys.unraisablehook = _unraisable_hook(sys.unraisablehook)


def _read(mngr: ocp.CheckpointManager, step: int, abstract_state: Any,
          items: Sequence[str]) -> dict:
  """The `items` of one step (`extra` and `data` where it has them): `state` into
  `abstract_state` (None: as saved, numpy), `extra` as numpy, `data` only checked."""
  _silence_echoes(mngr)
  present = _listdir(_step_dir(mngr, step))
  args = {}
  if "state" in items:
    target = _host_target(mngr, step, "state") if abstract_state is None else abstract_state
    args["state"] = ocp.args.StandardRestore(target)
  if "meta" in items:
    args["meta"] = ocp.args.JsonRestore()
  if "extra" in items and "extra" in present:
    args["extra"] = ocp.args.StandardRestore(_host_target(mngr, step, "extra"))
  if "data" in items and "data" in present:
    args["data"] = grain.checkpoint.CheckpointRestore(_Captured())
  if not args:
    return {}
  out = dict(mngr.restore(step, args=ocp.args.Composite(**args)).items())
  if "data" in out:
    json.loads(out.pop("data").state)  # grain's iterators and `Streams` both save JSON
  if "extra" in out:
    out["extra"] = {k: np.asarray(v) for k, v in out["extra"].items()}
  return out


def _load(mngr: ocp.CheckpointManager, step: int, abstract_state: Any,
          items: Sequence[str]) -> dict:
  """`_read`, raising `_Corrupt` if the step does not read back as saved either; an error
  restoring a sound checkpoint into `abstract_state` (e.g. another model) propagates."""
  try:
    return _read(mngr, step, abstract_state, items)
  except Exception as e:  # noqa: BLE001 - orbax, tensorstore and json raise many kinds
    if abstract_state is None:
      raise _Corrupt(_describe(e)) from e
    try:
      _read(mngr, step, None, items)
    except Exception as e2:  # noqa: BLE001
      raise _Corrupt(_describe(e2)) from e2
    raise


def _load_step(mngr: ocp.CheckpointManager, step: int, abstract_state: Any,
               items: Sequence[str]) -> dict:
  """`_load` of a step asked for by number: no fallback, a corrupt one is a `DataError`."""
  try:
    return _load(mngr, step, abstract_state, items)
  except _Corrupt as e:
    raise DataError(f"corrupt checkpoint {_step_dir(mngr, step)}: {e}") from None


def _describe(e: Exception) -> str:
  msg = one_line(e)
  return f"{type(e).__name__}: {msg[:300] + ' ...' if len(msg) > 300 else msg}"


def _newest_good(mngr: ocp.CheckpointManager, abstract_state: Any, items: Sequence[str],
                 quarantine: bool, problems: list[tuple[str, str]]):
  """(items, step) of the newest step that reads back, or None. Each bad one gets one warning
  line and an entry (path, error) in `problems`; with `quarantine` it is renamed aside first."""
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      return _load(mngr, step, abstract_state, items), step
    except _Corrupt as e:
      path = _step_dir(mngr, step)
      if quarantine:
        done = f"renamed to {_set_aside(mngr, path).rsplit('/', 1)[-1]}"
      else:
        done = "skipped"
      logging.warning("corrupt checkpoint %s (%s): %s", path, e, done)
      problems.append((path, str(e)))
  return None


def _set_aside(mngr: ocp.CheckpointManager, path: str) -> str:
  """Renames a corrupt step to `<step>.corrupt[.n]`: kept for inspection, but out of orbax's sight,
  so it no longer counts as committed and a later save of that step is not skipped."""
  aside, n = path + CORRUPT, 1
  while storage.path(aside).exists():
    aside, n = f"{path}{CORRUPT}.{n}", n + 1
  if jax.process_index() == 0:
    storage.path(path).rename(aside)  # on an object store a copy, then a delete
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(f"jaxcd_set_aside_{path.rsplit('/', 1)[-1]}")
  mngr.reload()
  return aside


def _first_good(workdir: str, managers: Sequence[tuple[str, ocp.CheckpointManager]],
                abstract_state: Any, items: Sequence[str], quarantine: bool):
  """(items, step, which) of the newest good step of the first manager that has one; None if
  none has any step; a `DataError` naming each bad one if steps exist but none reads back."""
  problems: list[tuple[str, str]] = []
  for which, mngr in managers:
    got = _newest_good(mngr, abstract_state, items, quarantine, problems)
    if got is not None:
      return (*got, which)
  if problems:
    names = ", ".join(_relative(p, workdir) for p, _ in problems)
    done = ("renamed aside to <step>.corrupt, so a rerun starts afresh" if quarantine
            else "left in place")
    raise DataError(f"no checkpoint in {workdir} reads back: {names} corrupt ({done}); "
                    f"{_relative(problems[0][0], workdir)}: {problems[0][1]}")
  return None


def _relative(p: str, workdir: str) -> str:
  return os.path.relpath(p, storage.absolute(workdir)) if not storage.is_remote(p) else \
      p[len(str(workdir).rstrip("/")) + 1:]


def latest_step(workdir: str) -> int | None:
  """The newest committed step of WORKDIR/checkpoints, read without creating anything."""
  directory = storage.join(workdir, LATEST)
  if not storage.path(directory).is_dir():
    return None
  mngr = _manager(directory, 1, read_only=True)
  try:
    return mngr.latest_step()
  finally:
    mngr.close()


def restore_for_inference(workdir: str, abstract_state: Any, prefer: str = BEST):
  """(state, meta, step, which) of the preferred checkpoint (best or latest), falling back to the
  other kind; corrupt ones are skipped with a warning and left in place."""
  if storage.is_remote(workdir):
    storage.check_remote(str(workdir))
  if not storage.path(workdir).is_dir():
    raise DataError(f"workdir {workdir} does not exist: train first (python -m jaxcd.train --config C --workdir {workdir})")
  managers = [(which, _manager(storage.join(workdir, which), 1, read_only=True))
              for which in (prefer, LATEST if prefer == BEST else BEST)
              if storage.path(storage.join(workdir, which)).is_dir()]
  try:
    got = _first_good(workdir, managers, abstract_state, ("state", "meta"), quarantine=False)
  finally:
    for _, mngr in managers:
      mngr.close()
  if got is None:
    raise DataError(f"no checkpoint in {workdir} (looked in {BEST}/ and {LATEST}/)")
  out, step, which = got
  return out["state"], out["meta"], step, which


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) to restore into."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def load_numpy(workdir: str, step: int | None = None, which: str = LATEST) -> tuple[dict, int]:
  """The `state` item of a checkpoint as a dict of numpy arrays (any topology), and its step.
  For inspection, tests and export; training restores with `Checkpointer.restore`."""
  directory = storage.absolute(storage.join(workdir, which))
  mngr = _manager(directory, 1, read_only=True)
  step = mngr.latest_step() if step is None else step
  mngr.close()
  if step is None:
    raise DataError(f"no checkpoint in {directory}")
  path = storage.join(directory, str(step), "state")
  ckptr = ocp.PyTreeCheckpointer()
  md = ckptr.metadata(path)
  tree = md.item_metadata.tree if hasattr(md, "item_metadata") else md
  restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args)), step
