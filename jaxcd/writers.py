"""Run logs: WORKDIR/metrics.jsonl (one JSON object per line) and TensorBoard event files
(tensorboardX, so no TensorFlow is needed). Only the writing process (process 0) writes. For a
gs:// workdir both are written to a local staging folder and uploaded at each `flush` (the
trainer flushes at every checkpoint), at evaluation rows, at most every `UPLOAD_EVERY_S` for
training rows, and at `close`."""
import json
import math
import os
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from jaxcd import storage

UPLOAD_EVERY_S = 30.0


def _jsonable(v: Any) -> Any:
  if isinstance(v, dict):
    return {k: _jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_jsonable(x) for x in v]
  if isinstance(v, np.ndarray):
    return _jsonable(v.tolist())
  if isinstance(v, np.generic):
    return v.item()
  if hasattr(v, "__array__") and getattr(v, "shape", None) == ():
    return np.asarray(v).item()
  return v


class MetricWriter:
  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self._tb = None
    if enabled:
      storage.path(workdir).mkdir(parents=True, exist_ok=True)
      self._stage = storage.Staged(workdir)
      self._stage.download("metrics.jsonl")  # a resumed run appends to the rows it has
      self.path = os.path.join(self._stage.local, "metrics.jsonl")
      self._f = open(self.path, "a", buffering=1)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(self._stage.local, "tb"))
      self._uploaded = time.monotonic()

  def write(self, row: dict[str, Any]) -> None:
    """Appends `row` (+ wall time); its numeric scalars also go to TensorBoard as split/key."""
    if not self.enabled:
      return
    row = _jsonable(dict(row))
    row.setdefault("time", round(time.time(), 3))
    self._f.write(json.dumps(row) + "\n")
    if self._tb is not None and "step" in row:
      prefix = row.get("split", "train")
      for k, v in row.items():
        if k in ("step", "time", "pixels") or isinstance(v, bool):
          continue
        if isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(f"{prefix}/{k}", v, row["step"])
    if self._stage.remote and (row.get("split", "train") != "train"
                               or time.monotonic() - self._uploaded > UPLOAD_EVERY_S):
      self.flush()

  def truncate_after(self, step: int) -> None:
    """Drops rows logged after `step` (a resumed run re-does those steps) and the final
    evaluation rows (marked with a `checkpoint` key), which every run writes anew at its end."""
    if not self.enabled:
      return
    self._f.close()
    rows = [r for r in _read_rows(self.path)
            if r.get("step", 0) <= step and "checkpoint" not in r]
    with open(self.path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
    self._f = open(self.path, "a", buffering=1)

  def flush(self) -> None:
    """Everything written so far reaches the workdir (uploaded, for a remote one)."""
    if self.enabled:
      self._f.flush()
      if self._tb is not None:
        self._tb.flush()
      self._stage.upload()
      self._uploaded = time.monotonic()

  def close(self) -> None:
    if self.enabled:
      self._f.close()
      if self._tb is not None:
        self._tb.close()
      self._stage.upload()


def _read_rows(path) -> list[dict[str, Any]]:
  p = storage.path(path)
  if not p.exists():
    return []
  return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All rows of WORKDIR/metrics.jsonl (empty if absent); the workdir may be a gs:// URL."""
  return _read_rows(storage.join(workdir, "metrics.jsonl"))


def progress(config, total: int, initial: int = 0, desc: str = "", leave: bool = True):
  """A tqdm bar on process 0 when `config.progress` (a disabled one elsewhere)."""
  import jax
  show = config.progress and jax.process_index() == 0
  return tqdm(total=total, initial=initial, desc=desc, disable=not show, dynamic_ncols=True,
              leave=leave)
