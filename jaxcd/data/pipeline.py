"""Input pipeline on grain: global shuffle, joint augmentation, per-process batches.

The training stream is defined globally, the same on every process:
  position g -> epoch e = g // S, slot g % S of a permutation of the source seeded by (seed, e),
where S = (len(source) // global_batch) * global_batch drops each epoch's remainder. The
augmentation of position g is seeded by (seed, g). Global batch t is positions
[t*G, (t+1)*G); process p reads only its block [t*G + p*L, t*G + (p+1)*L), L = G // P. So the
concatenation of the process batches in process order is the same whatever the process count,
and each process reads and augments only its own examples.

Batches are grain elements (batching happens in the MapDataset), so grain's thread pool and
worker processes each build whole batches and a batch does not depend on `worker_count`.
Training draws from `Streams`: named grain iterators stepped together, whose batches are joined
on the host (one transfer per step). Its state is what grain's orbax `CheckpointHandler` saves for
an iterator (one JSON file per process).
"""
import json
import math
import time
import weakref
from typing import Any, Sequence

import grain
import numpy as np

from jaxcd.data import io
from jaxcd.data.augment import Augment, Compose, RandomCrop, make_augment, output_size
from jaxcd.errors import ConfigError, DataError

Batch = dict[str, np.ndarray]
_TRAIN_KEYS = ("image_a", "image_b", "label")


def _derive_seed(seed: int, stream: int) -> int:
  """Independent 32-bit seeds for the shuffle and the augmentation from one config seed."""
  return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _local_batch_size(global_batch_size: int, process_count: int, field: str) -> int:
  if global_batch_size <= 0:
    raise ConfigError(f"{field}: must be positive, got {global_batch_size}")
  if not 0 < process_count or global_batch_size % process_count:
    raise ConfigError(f"{field}: global batch {global_batch_size} is not divisible by the "
                      f"process count {process_count}")
  return global_batch_size // process_count


def _check_process(process_index: int, process_count: int):
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")


def _source_name(source: Any) -> str:
  # Sources usually know their directory; fall back to the class name.
  for attr in ("root", "data_dir", "path"):
    if getattr(source, attr, None):
      return f"{type(source).__name__}({getattr(source, attr)})"
  return type(source).__name__


class Subset:
  """Random-access view of `source` at `indices`, each record tagged with `kind` when given
  (RCL's labeled/unlabeled streams); picklable, for grain workers."""

  def __init__(self, source: Any, indices: Sequence[int], kind: str | None = None):
    self.source, self.indices, self.kind = source, np.asarray(indices, np.int64), kind

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict[str, Any]:
    rec = dict(self.source[int(self.indices[i])])
    if self.kind:
      rec["kind"] = self.kind
    return rec


class _AugmentTrain:
  """grain RandomMap: augments one record and keeps the arrays that batches carry."""

  def __init__(self, augment: Augment):
    self.augment = augment

  def __call__(self, record: dict[str, Any], rng: np.random.Generator) -> Batch:
    out = self.augment(record, rng)
    return {k: out[k] for k in _TRAIN_KEYS}


class _EvalElement:
  """grain Map: padded position -> record with `index` (-1 for padding) and `valid`."""

  def __init__(self, source: Sequence[dict[str, Any]]):
    self.source = source

  def __call__(self, position: int) -> Batch:
    n = len(self.source)
    valid = position < n
    # Padding repeats a real pair so shapes match its batch; its label is all ignore.
    record = self.source[position % n]
    label = record["label"] if valid else np.full_like(record["label"], 255)
    return {"image_a": record["image_a"], "image_b": record["image_b"], "label": label,
            "index": np.int32(position if valid else -1), "valid": np.bool_(valid)}


def train_map_dataset(source: Sequence[dict[str, Any]], *, global_batch_size: int, seed: int,
                      augment: str | Augment = "flip_rot", crop_size: int = 0,
                      process_index: int = 0, process_count: int = 1,
                      num_epochs: int | None = None) -> grain.MapDataset:
  """The random-access dataset of this process's training batches (see the module docstring)."""
  local = _local_batch_size(global_batch_size, process_count, "input.batch_size")
  _check_process(process_index, process_count)
  n = len(source)
  if n == 0:
    raise DataError(f"{_source_name(source)}: the training split has no pairs")
  per_epoch = n // global_batch_size * global_batch_size
  if per_epoch == 0:
    raise ConfigError(f"input.batch_size: global batch {global_batch_size} is larger than the "
                      f"{n} training pairs of {_source_name(source)}")
  if num_epochs is not None and num_epochs <= 0:
    raise ConfigError(f"num_epochs: must be positive or None, got {num_epochs}")
  aug = make_augment(augment, crop_size) if isinstance(augment, str) else augment
  aug = _fit_sizes(source, aug, crop_size)

  ds = grain.MapDataset.source(source)
  # Index e*n + i of a ShuffleMapDataset is slot i of epoch e's permutation; slicing to
  # `per_epoch` turns global position e*per_epoch + j into e*n + j: each epoch is reshuffled
  # and drops its own remainder.
  ds = ds.shuffle(seed=_derive_seed(seed, 0))[:per_epoch]
  ds = ds.repeat(num_epochs)
  # random_map seeds each element's generator with (seed, index); here index = global position.
  ds = ds.random_map(_AugmentTrain(aug), seed=_derive_seed(seed, 1))
  ds = ds.batch(local, drop_remainder=True)
  # Local batch b covers global positions [b*L, (b+1)*L): process p takes b = t*P + p.
  return ds[process_index::process_count]


def train_dataset(source: Sequence[dict[str, Any]], *, global_batch_size: int, seed: int,
                  augment: str | Augment = "flip_rot", crop_size: int = 0,
                  process_index: int = 0, process_count: int = 1, num_threads: int = 2,
                  worker_count: int = 0, num_epochs: int | None = None,
                  prefetch: int = 2) -> grain.IterDataset:
  """Host-local training batches {'image_a', 'image_b': uint8 LxHxWxC, 'label': uint8 LxHxW}.

  L = global_batch_size // process_count. Infinite when num_epochs is None. `augment` is a name
  for `make_augment` or a callable `(record, rng) -> record`. `prefetch` batches are read ahead
  (at least `num_threads`, so every thread has work).
  """
  ds = train_map_dataset(source, global_batch_size=global_batch_size, seed=seed, augment=augment,
                         crop_size=crop_size, process_index=process_index,
                         process_count=process_count, num_epochs=num_epochs)
  return _to_iter(ds, num_threads, worker_count, prefetch)


def _to_iter(ds: grain.MapDataset, num_threads: int, worker_count: int,
             prefetch: int) -> grain.IterDataset:
  if num_threads < 0 or worker_count < 0:
    raise ConfigError(f"input.worker_count: threads ({num_threads}) and workers "
                      f"({worker_count}) must be >= 0")
  # grain's default buffer is 500 elements; ours are whole batches, so keep it small.
  read = grain.ReadOptions(num_threads=num_threads,
                           prefetch_buffer_size=max(prefetch, num_threads, 1))
  it_ds = ds.to_iter_dataset(read)
  if worker_count > 0:
    # grain's workers read absl flags: callers outside `app.run` first call
    # `parallel.allow_grain_workers()` (the trainer and the bench do).
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it_ds


def eval_dataset(source: Sequence[dict[str, Any]], *, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1, num_threads: int = 2,
                 multiple: int | None = None) -> grain.IterDataset:
  """Finite host-local eval batches: source order, no augmentation, padded to a full batch.

  The global batch is `eval_global_batch(len(source), global_batch_size, multiple)`: a split
  smaller than `global_batch_size` is padded only up to a multiple of `multiple` (default: the
  device count, which the batch is split over) and of the process count. Each batch also has
  `index` (int32 L, source index or -1) and `valid` (bool L). Over all processes every source
  index appears exactly once with valid=True; padded examples carry label 255 everywhere. Every
  process gets `eval_num_batches(...)` batches.
  """
  _local_batch_size(global_batch_size, process_count, "input.eval_batch_size")
  _check_process(process_index, process_count)
  n = len(source)
  if n == 0:
    raise DataError(f"{_source_name(source)}: the evaluation split has no pairs")
  if multiple is None:
    import jax
    multiple = jax.device_count()
  batch = eval_global_batch(n, global_batch_size, math.lcm(multiple, process_count))
  local = _local_batch_size(batch, process_count, "input.eval_batch_size")
  padded = eval_num_batches(n, batch) * batch
  ds = grain.MapDataset.range(padded).map(_EvalElement(source))
  ds = ds.batch(local, drop_remainder=True)[process_index::process_count]
  return _to_iter(ds, num_threads, 0, 2)


def eval_global_batch(num_examples: int, global_batch_size: int, multiple: int = 1) -> int:
  """`global_batch_size`, or for fewer examples their count rounded up to `multiple`: one image
  of a large scene is never padded up to a batch of copies (a 1024x1024 pair padded to 32 asked
  for 30 GB)."""
  if num_examples >= global_batch_size:
    return global_batch_size
  return min(global_batch_size, -(-num_examples // multiple) * multiple)


def eval_num_batches(num_examples: int, global_batch_size: int) -> int:
  """Batches per process of `eval_dataset` (for progress bars); the same for the configured
  batch and the smaller one `eval_global_batch` picks."""
  return -(-num_examples // global_batch_size)


# --- image sizes from headers ---------------------------------------------------------------------

_SIZES: "weakref.WeakKeyDictionary[Any, list]" = weakref.WeakKeyDictionary()


def record_sizes(source: Any) -> list[tuple[str, tuple[int, int]]] | None:
  """(name, (H, W)) of every record without decoding pixels, or None where the source cannot
  tell. Knows `PairListSource` (a tile has its window's size, a whole pair its A header's) and
  views of a source: `.source` + `.indices` (`Subset`, RCL's pool), or `.source` index-aligned
  (pseudo-labelled copies)."""
  pairs = getattr(source, "pairs", None)
  if pairs is not None:
    if source not in _SIZES:
      _SIZES[source] = [(str(p.a) if p.window is None else f"{p.a} (tile {p.id})",
                         tuple(p.window[2:]) if p.window else io.image_size(p.a)) for p in pairs]
    return _SIZES[source]
  inner = getattr(source, "source", None)
  if inner is None:
    return None
  sizes = record_sizes(inner)
  if sizes is None:
    return None
  indices = getattr(source, "indices", None)
  if indices is not None:
    return [sizes[int(i)] for i in indices]
  return sizes if len(sizes) == len(source) else None


def size_groups(source: Any) -> list[tuple[tuple[int, int], list[int]]]:
  """Record indices by image size ((H, W), indices), in order of first appearance. A source that
  cannot tell its sizes is one group of its first record's size."""
  n = len(source)
  sizes = record_sizes(source)
  if sizes is None:
    return [(tuple(source[0]["label"].shape) if n else (0, 0), list(range(n)))]
  groups: dict[tuple[int, int], list[int]] = {}
  for i, (_, hw) in enumerate(sizes):
    groups.setdefault(hw, []).append(i)
  return list(groups.items())


def _fit_sizes(source: Any, aug: Augment, crop_size: int) -> Augment:
  """`aug`, cropped to `crop_size` when the training images differ in size and it keeps their
  sizes; a one-line error before training when they differ and there is no crop size."""
  sizes = record_sizes(source)
  if not sizes or len({hw for _, hw in sizes}) == 1 or output_size(aug) != 0:
    return aug  # one size, an augmentation ending in a fixed-size crop, or unknown to us
  if crop_size:
    return Compose((aug, RandomCrop(crop_size)))
  x, (xh, xw) = sizes[0]
  y, (yh, yw) = next(s for s in sizes if s[1] != (xh, xw))
  side = min(min(hw) for _, hw in sizes)
  side = side // 32 * 32 or side
  raise ConfigError(f"training images differ in size ({x} is {xw}x{xh}, {y} is {yw}x{yh}); "
                    f"set config.input.crop_size (e.g. --config.input.crop_size={side})")


def state_to_json(state: dict[str, Any]) -> str:
  """Serialises a grain iterator state (a dict of ints, strings and lists) for a checkpoint."""
  return json.dumps(state, sort_keys=True)


def state_from_json(text: str) -> dict[str, Any]:
  """Inverse of `state_to_json`; integer dict keys (grain's `future_states`) become ints again."""
  return json.loads(text, object_pairs_hook=lambda pairs: {
      int(k) if k.isdigit() else k: v for k, v in pairs})


class Streams:
  """Named training streams stepped together: `next` gives one host batch holding every
  stream's batch (e.g. RCL's labeled pairs and unlabeled ones). Each stream is a
  `train_dataset`, so each stream's global batch is process-count invariant.

  Laid out in `groups` blocks (this process's devices on the batch axis), each block every
  stream's share in order: each device then holds its own labeled and unlabeled rows, and
  `parallel.split_streams` separates them without moving data between devices.

  `get_state`/`set_state` speak bytes (JSON of every stream's grain state), the protocol grain's
  orbax `CheckpointHandler` uses for iterators that are not its own, so checkpoints store it with
  grain's handler, one file per process."""

  def __init__(self, iterators: dict[str, Any], groups: int = 1):
    if not iterators:
      raise ValueError("Streams needs at least one stream")
    self.iterators, self.groups = dict(iterators), int(groups)

  def __iter__(self) -> "Streams":
    return self

  def __next__(self) -> Batch:
    batches = [next(it) for it in self.iterators.values()]
    if len(batches) == 1:
      return batches[0]
    for name, b in zip(self.iterators, batches):
      rows = len(next(iter(b.values())))
      if rows % self.groups:
        raise ConfigError(f"the {name!r} stream's {rows} pairs per process do not split evenly "
                          f"between this process's {self.groups} devices")
    blocks = [{k: np.split(np.asarray(v), self.groups) for k, v in b.items()} for b in batches]
    return {k: np.concatenate([b[k][g] for g in range(self.groups) for b in blocks])
            for k in batches[0]}

  def get_state(self) -> bytes:
    return state_to_json({name: it.get_state() for name, it in self.iterators.items()}).encode()

  def set_state(self, state: bytes | str) -> None:
    states = state_from_json(state.decode() if isinstance(state, bytes) else state)
    if set(states) != set(self.iterators):
      raise DataError(f"checkpointed data streams {sorted(states)} do not match "
                      f"{sorted(self.iterators)}")
    for name, it in self.iterators.items():
      it.set_state(states[name])

  def start_prefetch(self) -> None:
    for it in self.iterators.values():
      if hasattr(it, "start_prefetch"):
        it.start_prefetch()


def benchmark_pipeline(source: Sequence[dict[str, Any]], *, batch_size: int, num_batches: int,
                       augment: str | Augment = "flip_rot", num_threads: int = 2,
                       worker_count: int = 0, crop_size: int = 0) -> dict[str, float]:
  """Host-side throughput of `train_dataset` in pairs/s, after one warm-up batch."""
  ds = train_dataset(source, global_batch_size=batch_size, seed=0, augment=augment,
                     crop_size=crop_size, num_threads=num_threads, worker_count=worker_count)
  it = iter(ds)
  try:
    next(it)  # starts threads / worker processes
    start = time.perf_counter()
    for _ in range(num_batches):
      next(it)
    seconds = time.perf_counter() - start
  finally:
    if hasattr(it, "close"):
      it.close()
  return {"pairs_per_s": batch_size * num_batches / seconds, "batches": num_batches,
          "seconds": seconds}
