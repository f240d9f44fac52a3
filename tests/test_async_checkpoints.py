"""Async checkpoint saves (`config.async_checkpoints`): what a save captures is the state at its
step, read-backs see committed checkpoints only, and a SIGKILL while a save is in flight leaves
the previous checkpoint valid and the resumed run bit-identical."""
import glob
import json
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_checkpoint, kill_when, tiny_config
from jaxcd import checkpointing, trainer, writers
from jaxcd.data import pipeline, synthetic


def _streams(src):
  return pipeline.Streams({"train": iter(pipeline.train_dataset(src, global_batch_size=4,
                                                                seed=3, num_threads=0))})


def test_async_save_keeps_the_data_state_of_its_step(tmp_path):
  # The iterator goes on while the save completes in the background: the checkpoint must hold
  # the position at the save (grain's handler reads it within `save`; checked, not assumed).
  src = synthetic.SyntheticSource("train", image_size=32, num_train=16)
  it = _streams(src)
  for _ in range(3):
    next(it)
  ck = checkpointing.Checkpointer(str(tmp_path), async_save=True)
  meta = {"best_f1": 0.5, "method": {"x": [1]}}
  ck.save(3, {"w": jnp.arange(4.0)}, it, meta)
  meta["method"]["x"].append(2)  # the caller's dicts keep changing too
  want = next(it)
  for _ in range(5):
    next(it)
  assert ck.latest_step() == 3  # waits for the save
  fresh = _streams(src)
  state, got_meta, step = ck.restore({"w": jnp.zeros(4)})
  assert step == 3 and got_meta["method"] == {"x": [1]}
  np.testing.assert_array_equal(state["w"], np.arange(4.0))
  assert ck.restore_data(3, fresh)
  got = next(fresh)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  ck.close()


def test_reads_wait_for_the_save_in_flight(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path), async_save=True)
  ck.save(1, {"w": jnp.ones(3)}, None, {"a": 1}, best=True)
  got = ck.restore_best({"w": jnp.zeros(3)})  # sees the best save just issued
  assert got is not None and got[2] == 1 and got[3] == checkpointing.BEST
  ck.close()


_SLOW_SAVE_8 = """
import sys, time, json
sys.path[:0] = ['tests']
import orbax.checkpoint as ocp
from conftest import tiny_config
from jaxcd import trainer

class Slow:  # a commit future of orbax's protocol: the background commit waits on it
  def result(self, timeout=None):
    time.sleep(120)

orig = ocp.StandardCheckpointHandler.async_save
async def slow(self, directory, *a, **k):
  futures = list(await orig(self, directory, *a, **k) or [])
  return futures + [Slow()] if '/checkpoints/8.' in str(directory) else futures
ocp.StandardCheckpointHandler.async_save = slow
trainer.train_and_evaluate(tiny_config(**json.loads(sys.argv[2])), sys.argv[1])
"""


@pytest.mark.slow
def test_sigkill_during_an_async_save_then_resume_is_bit_identical(tmp_path):
  # One latest checkpoint kept: step 4 may go only once step 8 is committed.
  extra = dict(num_steps=16, eval_every=8, checkpoint_every=4, keep_checkpoints=1)
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  trainer.train_and_evaluate(tiny_config(**extra), str(ref))
  # Step 8's save takes 2 minutes to commit; killed once training has gone on to step 10.
  cmd = [sys.executable, "-c", _SLOW_SAVE_8, str(killed), json.dumps(extra)]
  in_flight = lambda: glob.glob(str(killed / "checkpoints" / "8.orbax-checkpoint-tmp*"))  # noqa: E731

  def trained_on():
    rows = writers.read_metrics(str(killed)) if (killed / "metrics.jsonl").exists() else []
    return in_flight() and any(r["split"] == "train" and r["step"] >= 10 for r in rows)
  kill_when(cmd, trained_on)
  assert in_flight()
  assert checkpointing.latest_step(str(killed)) == 4  # the previous checkpoint, valid
  checkpointing.load_numpy(str(killed))

  trainer.train_and_evaluate(tiny_config(**extra), str(killed))
  assert_same_checkpoint(ref, killed, 16)
  assert_same_checkpoint(ref, killed, which=checkpointing.BEST)
  steps = [r["step"] for r in writers.read_metrics(str(killed)) if r["split"] == "train"]
  assert steps == list(range(1, 17))
