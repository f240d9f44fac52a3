"""grain pipeline: epochs, process-count invariance, checkpointable iterators, padded eval."""
import threading

import numpy as np
import pytest

from jaxcd.data import pipeline
from jaxcd.errors import ConfigError, DataError


class ArraySource:
  """A tiny random-access source following the record contract; counts the reads it serves."""

  def __init__(self, n: int, size: int = 64, bands: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    self.a = rng.integers(0, 256, (n, size, size, bands), dtype=np.uint8)
    self.b = rng.integers(0, 256, (n, size, size, bands), dtype=np.uint8)
    self.label = (rng.random((n, size, size)) < 0.3).astype(np.uint8)
    self.ids = [f"pair{i}" for i in range(n)]
    self.reads: list[int] = []
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.a)

  def __getitem__(self, i: int) -> dict:
    with self._lock:
      self.reads.append(int(i))
    return {"image_a": self.a[i], "image_b": self.b[i], "label": self.label[i], "id": self.ids[i]}

  def __getstate__(self):  # picklable for grain workers (locks are not)
    return {k: v for k, v in self.__dict__.items() if k != "_lock"}

  def __setstate__(self, state):
    self.__dict__.update(state, _lock=threading.Lock())

  def index_of(self, image_a: np.ndarray) -> int:
    hits = [i for i in range(len(self)) if np.array_equal(self.a[i], image_a)]
    assert len(hits) == 1
    return hits[0]


def take(ds, n: int) -> list[dict]:
  it = iter(ds)
  return [next(it) for _ in range(n)]


def assert_batches_equal(xs: list[dict], ys: list[dict]):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_layout():
  src = ArraySource(9)
  (batch,) = take(pipeline.train_dataset(src, global_batch_size=4, seed=0, augment="flip_rot_crop",
                                         crop_size=32), 1)
  assert set(batch) == {"image_a", "image_b", "label"}
  assert batch["image_a"].shape == (4, 32, 32, 3) and batch["image_a"].dtype == np.uint8
  assert batch["image_b"].shape == (4, 32, 32, 3) and batch["image_b"].dtype == np.uint8
  assert batch["label"].shape == (4, 32, 32) and batch["label"].dtype == np.uint8


@pytest.mark.parametrize("n", [10, 11])
def test_shuffle_is_a_permutation_per_epoch_and_reshuffles(n):
  src = ArraySource(n)
  ds = pipeline.train_dataset(src, global_batch_size=2, seed=3, augment="none", num_threads=1)
  steps = n // 2  # the remainder of each epoch is dropped
  batches = take(ds, 3 * steps)
  order = [src.index_of(a) for b in batches for a in b["image_a"]]
  epochs = [order[e * 10:(e + 1) * 10] for e in range(3)]
  for ep in epochs:
    assert len(set(ep)) == 10  # no repeats within an epoch
  assert epochs[0] != epochs[1] != epochs[2]
  assert epochs[0] != sorted(epochs[0])
  # Labels travel with their images.
  for b in batches:
    for a, lab in zip(b["image_a"], b["label"]):
      np.testing.assert_array_equal(lab, src.label[src.index_of(a)])
  # Another seed gives another order; the same seed the same one.
  other = take(pipeline.train_dataset(src, global_batch_size=2, seed=4, augment="none"), steps)
  assert [src.index_of(a) for b in other for a in b["image_a"]] != epochs[0]
  again = take(pipeline.train_dataset(src, global_batch_size=2, seed=3, augment="none"), steps)
  assert_batches_equal(again, batches[:steps])


def test_num_epochs_ends_the_stream():
  src = ArraySource(7)
  batches = list(pipeline.train_dataset(src, global_batch_size=3, seed=0, num_epochs=2))
  assert len(batches) == 2 * (7 // 3)


@pytest.mark.parametrize("augment", ["strong", "flip_rot_scale_crop"])
def test_global_batch_is_independent_of_process_count(augment):
  src = ArraySource(13)
  kw = dict(global_batch_size=4, seed=5, augment=augment, crop_size=48)
  steps = 7  # crosses two epoch boundaries (3 steps per epoch)
  single = take(pipeline.train_dataset(src, **kw), steps)
  per_process = [take(pipeline.train_dataset(src, process_index=p, process_count=2, **kw), steps)
                 for p in range(2)]
  for p in range(2):
    assert per_process[p][0]["image_a"].shape[0] == 2
  concat = [{k: np.concatenate([per_process[0][t][k], per_process[1][t][k]]) for k in single[t]}
            for t in range(steps)]
  assert_batches_equal(concat, single)
  # Augmentation is on: the batch is not just the source's pixels.
  assert not any(np.array_equal(single[0]["image_a"][0], src.a[i][:48, :48]) for i in range(13))


def test_each_process_reads_only_its_own_examples():
  src = ArraySource(16)
  for count in (1, 2, 4):
    for p in range(count):
      ds = pipeline.train_map_dataset(src, global_batch_size=8, seed=0, process_index=p,
                                      process_count=count)
      src.reads.clear()
      batch = ds[1]
      assert batch["image_a"].shape[0] == 8 // count
      assert len(src.reads) == 8 // count
      # Process p's reads are the p-th block of the single-process batch.
      full = pipeline.train_map_dataset(src, global_batch_size=8, seed=0)
      src.reads.clear()
      full[1]
      block = src.reads[p * (8 // count):(p + 1) * (8 // count)]
      src.reads.clear()
      ds[1]
      assert src.reads == block


@pytest.mark.parametrize("worker_count", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_iterator_state_round_trip(worker_count):
  src = ArraySource(10)
  kw = dict(global_batch_size=4, seed=1, augment="strong", crop_size=40, worker_count=worker_count)
  it = iter(pipeline.train_dataset(src, **kw))
  for _ in range(3):
    next(it)
  saved = pipeline.state_to_json(it.get_state())
  assert pipeline.state_from_json(saved) == it.get_state()  # plain JSON, for the checkpoint
  expected = [next(it) for _ in range(4)]
  it2 = iter(pipeline.train_dataset(src, **kw))
  it2.set_state(pipeline.state_from_json(saved))
  resumed = [next(it2) for _ in range(4)]
  assert_batches_equal(resumed, expected)
  # A fresh iterator does not start where the saved one stopped.
  fresh = next(iter(pipeline.train_dataset(src, **dict(kw, worker_count=0))))
  assert not np.array_equal(fresh["image_a"], expected[0]["image_a"])
  for i in (it, it2):
    if hasattr(i, "close"):
      i.close()


@pytest.mark.slow  # starts worker processes
def test_worker_processes_give_the_same_batches():
  src = ArraySource(10)
  kw = dict(global_batch_size=2, seed=2, augment="flip_rot_crop", crop_size=32)
  base = take(pipeline.train_dataset(src, **kw), 6)
  it = iter(pipeline.train_dataset(src, worker_count=2, **kw))
  assert_batches_equal([next(it) for _ in range(6)], base)
  it.close()


@pytest.mark.parametrize("n,global_batch,count", [(7, 4, 2), (8, 4, 2), (3, 8, 4), (5, 3, 1)])
def test_eval_sees_every_example_once(n, global_batch, count):
  src = ArraySource(n, size=16)
  local = global_batch // count
  per_process = [list(pipeline.eval_dataset(src, global_batch_size=global_batch, process_index=p,
                                            process_count=count)) for p in range(count)]
  num = pipeline.eval_num_batches(n, global_batch)
  seen = []
  for batches in per_process:
    assert len(batches) == num  # every process runs the same number of steps
    for b in batches:
      assert b["valid"].shape == (local,) and b["valid"].dtype == bool
      assert b["index"].dtype == np.int32 and b["image_a"].shape == (local, 16, 16, 3)
      np.testing.assert_array_equal(b["valid"], b["index"] >= 0)
      for i, ok, a, lab in zip(b["index"], b["valid"], b["image_a"], b["label"]):
        if ok:
          np.testing.assert_array_equal(a, src.a[i])
          np.testing.assert_array_equal(lab, src.label[i])
          seen.append(int(i))
        else:
          assert (lab == 255).all()  # padding is ignored even without the mask
  assert sorted(seen) == list(range(n))
  # Global batches in process order follow the source order.
  order = [int(i) for t in range(num) for p in range(count) for i in per_process[p][t]["index"]
           if i >= 0]
  assert order == list(range(n))


def test_batch_size_errors_name_the_field():
  src = ArraySource(8, size=8)
  with pytest.raises(ConfigError, match=r"input\.batch_size.*not divisible"):
    pipeline.train_dataset(src, global_batch_size=5, seed=0, process_count=2)
  with pytest.raises(ConfigError, match=r"input\.batch_size.*larger than the 8"):
    pipeline.train_dataset(src, global_batch_size=16, seed=0)
  with pytest.raises(ConfigError, match=r"input\.eval_batch_size"):
    pipeline.eval_dataset(src, global_batch_size=3, process_count=2)
  with pytest.raises(DataError, match="no pairs"):
    pipeline.eval_dataset(ArraySource(0), global_batch_size=2)
  with pytest.raises(ConfigError, match=r"input\.augment"):
    pipeline.train_dataset(src, global_batch_size=2, seed=0, augment="cutmix")


def test_state_json_restores_integer_keys():
  state = {"next_index": 3, "future_states": {2: {"next_index": 5}}, "ids": ["7"]}
  assert pipeline.state_from_json(pipeline.state_to_json(state)) == state


def test_benchmark_reports_throughput():
  src = ArraySource(8, size=32)
  stats = pipeline.benchmark_pipeline(src, batch_size=4, num_batches=3, augment="strong",
                                      num_threads=1, worker_count=0)
  assert stats["batches"] == 3 and stats["seconds"] > 0
  assert stats["pairs_per_s"] == pytest.approx(12 / stats["seconds"])
