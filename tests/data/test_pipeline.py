"""grain pipeline: epochs, process-count invariance, checkpointable iterators, padded eval
(padded no further than the device count), image sizes from headers, and training on images of
different sizes (cropped, or one clear error)."""
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcd.data import pipeline
from jaxcd.data.folder import folder
from jaxcd.data.pairs import Pair, PairListSource
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
  local = pipeline.eval_global_batch(n, global_batch, count) // count
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


# --- no over-padding of small evaluation splits ----------------------------------------------

@pytest.mark.parametrize("n,batch,multiple,expected", [
    (1, 32, 1, 1), (1, 32, 8, 8), (3, 32, 2, 4), (20, 32, 8, 24), (32, 32, 8, 32),
    (33, 32, 8, 32), (5, 6, 4, 6)])
def test_eval_global_batch(n, batch, multiple, expected):
  assert pipeline.eval_global_batch(n, batch, multiple) == expected


def test_one_image_with_eval_batch_32_is_padded_to_the_device_count_only():
  import jax
  (batch,) = list(pipeline.eval_dataset(ArraySource(1, size=8), global_batch_size=32))
  assert batch["valid"].shape == (jax.device_count(),) and batch["valid"][0]
  (batch,) = list(pipeline.eval_dataset(ArraySource(1, size=8), global_batch_size=32, multiple=8))
  assert batch["image_a"].shape == (8, 8, 8, 3) and batch["valid"].sum() == 1
  # Per process: 2 processes of 4 devices each see 4 rows.
  parts = [list(pipeline.eval_dataset(ArraySource(3, size=8), global_batch_size=32, multiple=8,
                                      process_index=p, process_count=2)) for p in range(2)]
  assert [len(b) for b in parts] == [1, 1] and parts[0][0]["valid"].shape == (4,)
  assert pipeline.eval_num_batches(1, 32) == 1


def test_steps_eval_batches_pad_to_the_mesh_only():
  from jaxcd import parallel, steps
  from tests.conftest import tiny_config
  mesh = parallel.make_mesh()
  config = tiny_config(**{"input.eval_batch_size": 32})
  (gb,) = list(steps.eval_batches(config, ArraySource(1, size=8), mesh))
  assert gb["label"].shape == (mesh.devices.size, 8, 8)


# --- image sizes and training on images of different sizes -------------------------------------

def _png(path: Path, x: np.ndarray) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(x).save(path)
  return path


def _folder(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
  """A folder dataset whose B is 255 - A and whose label is A's red > 127, so any joint
  transform keeps the three aligned exactly when those relations still hold."""
  rng = np.random.default_rng(0)
  for name, (h, w) in sizes.items():
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    _png(root / "A" / f"{name}.png", a)
    _png(root / "B" / f"{name}.png", 255 - a)
    _png(root / "label" / f"{name}.png", (a[..., 0] > 127).astype(np.uint8) * 255)
  return root


def test_record_sizes_from_headers_windows_and_views(tmp_path):
  src = folder("all", data_dir=str(_folder(tmp_path / "d", {"p": (40, 30), "q": (20, 50)})))
  assert [hw for _, hw in pipeline.record_sizes(src)] == [(40, 30), (20, 50)]
  sub = pipeline.Subset(src, [1, 1, 0])
  assert [hw for _, hw in pipeline.record_sizes(sub)] == [(20, 50), (20, 50), (40, 30)]
  assert pipeline.size_groups(sub) == [((20, 50), [0, 1]), ((40, 30), [2])]
  # Tiles have their window's size: no file is opened.
  tiles = PairListSource([Pair("t", Path("/nope/a.png"), Path("/nope/b.png"), None,
                               (0, 0, 16, 24))], name="x", split="all", layout="x", root=tmp_path)
  assert pipeline.record_sizes(tiles) == [("/nope/a.png (tile t)", (16, 24))]
  assert pipeline.record_sizes(ArraySource(2)) is None
  assert pipeline.size_groups(ArraySource(2, size=8)) == [((8, 8), [0, 1])]


def test_mixed_sizes_without_crop_size_fail_before_training_with_one_line(tmp_path):
  root = _folder(tmp_path / "d", {"a": (64, 64), "b": (64, 64), "c": (96, 80)})
  src = folder("all", data_dir=str(root))
  for augment in ("flip_rot", "none", "flip_rot_scale_crop", "flip_rot_crop"):
    with pytest.raises(ConfigError) as e:
      pipeline.train_dataset(src, global_batch_size=2, seed=0, augment=augment)
    assert str(e.value) == (
        f"training images differ in size ({root / 'A' / 'a.png'} is 64x64, "
        f"{root / 'A' / 'c.png'} is 80x96); set config.input.crop_size "
        f"(e.g. --config.input.crop_size=64)")
  with pytest.raises(ConfigError, match="differ in size"):
    pipeline.train_dataset(pipeline.Subset(src, [0, 2]), global_batch_size=2, seed=0)


@pytest.mark.parametrize("augment", ["flip_rot", "none", "flip_rot_crop", "strong"])
def test_mixed_sizes_are_cropped_to_crop_size_jointly(tmp_path, augment):
  root = _folder(tmp_path / "d", {"a": (64, 64), "b": (70, 50), "c": (96, 80)})
  src = folder("all", data_dir=str(root))
  ds = pipeline.train_dataset(src, global_batch_size=3, seed=1, augment=augment, crop_size=48)
  for batch in take(ds, 4):
    assert batch["image_a"].shape == (3, 48, 48, 3) and batch["label"].shape == (3, 48, 48)
    if augment != "strong":  # strong recolours A and B independently
      np.testing.assert_array_equal(batch["image_b"], 255 - batch["image_a"])
      np.testing.assert_array_equal(batch["label"], batch["image_a"][..., 0] > 127)


def test_same_size_non_square_images_keep_their_shape_without_a_crop(tmp_path):
  src = folder("all", data_dir=str(_folder(tmp_path / "d", {f"p{i}": (40, 64) for i in range(4)})))
  for augment in ("flip_rot", "flip_rot_scale_crop"):
    for batch in take(pipeline.train_dataset(src, global_batch_size=2, seed=3, augment=augment),
                      8):
      assert batch["image_a"].shape == (2, 40, 64, 3)
  # With a crop after it the rotation is free again (square crops batch whatever the turn).
  crops = take(pipeline.train_dataset(src, global_batch_size=2, seed=3, augment="flip_rot_crop",
                                      crop_size=32), 8)
  assert {b["image_a"].shape for b in crops} == {(2, 32, 32, 3)}


@pytest.mark.slow  # starts a training process
def test_train_cli_on_mixed_sizes_is_one_error_line(tmp_path):
  import subprocess
  import sys
  for split in ("train", "val"):
    _folder(tmp_path / "d" / split, {"a": (64, 64), "b": (64, 64), "c": (96, 80)})
  cfg = tmp_path / "cfg.py"
  cfg.write_text("from jaxcd.config_base import base_config, on_dataset\n\n\n"
                 "def get_config():\n  c = base_config()\n"
                 f"  on_dataset(c, 'folder', {str(tmp_path / 'd')!r})\n"
                 "  c.input.batch_size = 2\n  c.progress = False\n  return c\n")
  r = subprocess.run([sys.executable, "-m", "jaxcd.train", "--config", str(cfg), "--workdir",
                      str(tmp_path / "run")], capture_output=True, text=True, timeout=600,
                     cwd=Path(__file__).resolve().parents[2])
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
  a, c = (tmp_path / "d" / "train" / "A" / f"{s}.png" for s in ("a", "c"))
  assert lines == [f"error: training images differ in size ({a} is 64x64, {c} is 80x96); set "
                   f"config.input.crop_size (e.g. --config.input.crop_size=64)"], r.stderr[-2000:]
  assert "Traceback" not in r.stderr
