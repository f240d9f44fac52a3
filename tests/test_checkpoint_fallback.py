"""A corrupt checkpoint (truncated data file, truncated or zeroed metadata) is one warning line and
a fallback to the previous good one; with none left, one `error:` line. Fast tier: a Checkpointer
on a small pytree; slow tier: `jaxcd.train` and `jaxcd.evaluate` on a tiny real run."""
import logging
import os
import shutil
import subprocess

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_checkpoint, last_json, run_module, tiny_config, \
    tiny_overrides
from jaxcd import checkpointing, trainer
from jaxcd.errors import DataError


def corrupt(step_dir, how: str) -> None:
  """Damages one checkpoint directory the ways a full disk or a bad copy does."""
  step_dir = str(step_dir)
  if how == "truncated_data":  # the largest OCDBT data file of the train state
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state"))
             for f in fs if os.path.basename(r) == "d"]
    path = max(files, key=os.path.getsize)
    os.truncate(path, os.path.getsize(path) // 2)
  elif how == "truncated_meta":
    path = os.path.join(step_dir, "meta", "metadata")
    os.truncate(path, os.path.getsize(path) // 2)
  elif how == "zeroed_metadata":
    path = os.path.join(step_dir, "state", "_METADATA")
    with open(path, "r+b") as f:
      f.write(b"\0" * os.path.getsize(path))
  elif how == "zeroed_extra_metadata":
    path = os.path.join(step_dir, "extra", "_METADATA")
    with open(path, "r+b") as f:
      f.write(b"\0" * os.path.getsize(path))
  elif how == "truncated_data_iterator":
    path = os.path.join(step_dir, "data", "process_0-of-1.json")
    os.truncate(path, 3)
  else:
    raise ValueError(how)


ISSUE_CASES = ("truncated_data", "truncated_meta", "zeroed_metadata")


def corrupt_lines(text: str) -> list[str]:
  return [line for line in text.splitlines() if "corrupt checkpoint" in line]


# --- fast: a Checkpointer on a small pytree -------------------------------------------------------

def _tree(step: int) -> dict:
  # Random 64x64 floats: large enough that OCDBT keeps them in a data file, not inline.
  return {"w": jax.random.normal(jax.random.key(step), (64, 64)), "b": jnp.arange(3) + step}


def _abstract() -> dict:
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _tree(0))


def _iterator():
  return iter(grain.MapDataset.range(100).to_iter_dataset())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """checkpoints/1 and /2 (state, meta, data iterator, extra) and best/2."""
  workdir = str(tmp_path_factory.mktemp("saved"))
  ck = checkpointing.Checkpointer(workdir, keep=3)
  it = _iterator()
  for step in (1, 2):
    next(it)  # the iterator saved at step s yields s next
    ck.save(step, _tree(step), it, {"best_f1": step}, extra={"c": np.arange(4) * step})
  ck.save(2, _tree(2), None, {"best_f1": 2}, best=True)
  ck.close()
  return workdir


@pytest.fixture
def workdir(saved, tmp_path):
  shutil.copytree(saved, tmp_path / "w")
  return str(tmp_path / "w")


@pytest.mark.parametrize("how", ISSUE_CASES + ("zeroed_extra_metadata", "truncated_data_iterator"))
def test_restore_falls_back_to_previous_step(workdir, how, caplog):
  corrupt(os.path.join(workdir, "checkpoints", "2"), how)
  ck = checkpointing.Checkpointer(workdir, keep=3)
  with caplog.at_level(logging.WARNING):
    state, meta, step = ck.restore(_abstract())
  assert step == 1 and meta == {"best_f1": 1}
  np.testing.assert_array_equal(state["w"], _tree(1)["w"])
  # Extra and data come from the same step, though only step 2's data or extra may be bad.
  np.testing.assert_array_equal(ck.restore_extra(step)["c"], np.arange(4))
  it = _iterator()
  assert ck.restore_data(step, it) and next(it) == 1
  warnings = corrupt_lines(caplog.text)
  assert len(warnings) == 1 and os.path.join("checkpoints", "2") in warnings[0], caplog.text
  # Set aside, not deleted, and out of orbax's sight: step 2 can be saved again.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2.corrupt"]
  ck.save(2, _tree(2), it, {"best_f1": 2})
  ck.close()
  ck = checkpointing.Checkpointer(workdir, keep=3)
  state, meta, step = ck.restore(_abstract())
  assert step == 2 and meta == {"best_f1": 2}
  np.testing.assert_array_equal(state["w"], _tree(2)["w"])
  assert ck.restore_extra(2) is None  # the new step 2 has none: nothing of the corrupt one is used
  np.testing.assert_array_equal(
      checkpointing.Checkpointer(workdir, keep=3).restore_extra(1)["c"], np.arange(4))


def test_every_checkpoint_corrupt_is_one_data_error(workdir):
  corrupt(os.path.join(workdir, "checkpoints", "2"), "truncated_data")
  corrupt(os.path.join(workdir, "checkpoints", "1"), "zeroed_metadata")
  with pytest.raises(DataError, match="no checkpoint .* reads back") as e:
    checkpointing.Checkpointer(workdir, keep=3).restore(_abstract())
  msg = str(e.value)
  assert "\n" not in msg and "checkpoints/2, checkpoints/1 corrupt" in msg
  assert "checkpoints/2: ValueError: OUT_OF_RANGE" in msg  # what is wrong with the newest
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1.corrupt", "2.corrupt"]
  # A second damaged copy of a step is set aside beside the first.
  ck = checkpointing.Checkpointer(workdir, keep=3)
  ck.save(1, _tree(1), None, {})
  corrupt(os.path.join(workdir, "checkpoints", "1"), "truncated_meta")
  with pytest.raises(DataError):
    ck.restore(_abstract())
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
      "1.corrupt", "1.corrupt.1", "2.corrupt"]


def test_readers_skip_corrupt_checkpoints_and_change_nothing(workdir, caplog):
  corrupt(os.path.join(workdir, "checkpoints", "2"), "truncated_data")
  corrupt(os.path.join(workdir, "best", "2"), "zeroed_metadata")
  with caplog.at_level(logging.WARNING):
    state, meta, step, which = checkpointing.restore_for_inference(workdir, _abstract(),
                                                                   checkpointing.LATEST)
  assert (step, which, meta) == (1, checkpointing.LATEST, {"best_f1": 1})
  assert len(corrupt_lines(caplog.text)) == 1
  caplog.clear()
  with caplog.at_level(logging.WARNING):  # best/ is corrupt: the newest good latest one
    _, _, step, which = checkpointing.restore_for_inference(workdir, _abstract())
  assert (step, which) == (1, checkpointing.LATEST)
  assert len(corrupt_lines(caplog.text)) == 2
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
  assert os.listdir(os.path.join(workdir, "best")) == ["2"]
  corrupt(os.path.join(workdir, "checkpoints", "1"), "truncated_meta")
  with pytest.raises(DataError, match=r"best/2, checkpoints/2, checkpoints/1 corrupt \(left in"):
    checkpointing.restore_for_inference(workdir, _abstract())


def test_corrupt_best_falls_back_to_latest_in_training(workdir):
  corrupt(os.path.join(workdir, "best", "2"), "truncated_data")
  state, meta, step, which = checkpointing.Checkpointer(workdir).restore_best(_abstract())
  assert (step, which, meta) == (2, checkpointing.LATEST, {"best_f1": 2})
  assert os.listdir(os.path.join(workdir, "best")) == ["2.corrupt"]


def test_a_sound_checkpoint_that_does_not_fit_is_not_corrupt(workdir):
  wrong = {**_abstract(), "w": jax.ShapeDtypeStruct((64, 64), jnp.float32), "z": _abstract()["b"]}
  with pytest.raises(ValueError) as e:
    checkpointing.Checkpointer(workdir, keep=3).restore(wrong)
  assert not isinstance(e.value, DataError)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]


def test_a_corrupt_step_asked_for_by_number_is_a_data_error(workdir):
  corrupt(os.path.join(workdir, "checkpoints", "1"), "truncated_meta")
  ck = checkpointing.Checkpointer(workdir, keep=3)
  with pytest.raises(DataError, match=r"corrupt checkpoint .*checkpoints/1: JSONDecodeError"):
    ck.restore(_abstract(), step=1)
  assert ck.restore(_abstract(), step=2)[2] == 2


# --- slow: the command lines on a tiny real run ---------------------------------------------------

def _train(workdir, **extra) -> subprocess.CompletedProcess:
  return run_module("jaxcd.train", "--config", "configs/fc_siam_diff.py", "--workdir",
                    str(workdir), *tiny_overrides(**extra), check=False)


def _evaluate(workdir, checkpoint: str) -> subprocess.CompletedProcess:
  return run_module("jaxcd.evaluate", "--config", "configs/fc_siam_diff.py", "--workdir",
                    str(workdir), "--checkpoint", checkpoint, *tiny_overrides(), check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 6-step run: checkpoints/3, checkpoints/6 and best/."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  trainer.train_and_evaluate(tiny_config(), str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  return workdir


@pytest.fixture
def copy(trained, tmp_path):
  shutil.copytree(trained, tmp_path / "run")
  return tmp_path / "run"


@pytest.mark.slow
def test_train_cli_resumes_from_the_previous_checkpoint(trained, copy):
  corrupt(copy / "checkpoints" / "6", "truncated_data")
  proc = _train(copy)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  warnings = corrupt_lines(proc.stderr)
  assert len(warnings) == 1 and f"{copy}/checkpoints/6 " in warnings[0], proc.stderr[-3000:]
  assert "OUT_OF_RANGE" in warnings[0] and warnings[0].endswith("renamed to 6.corrupt")
  assert "at step 3" in next(l for l in proc.stderr.splitlines() if "resumed train" in l)
  assert sorted(os.listdir(copy / "checkpoints")) == ["3", "6", "6.corrupt"]
  assert_same_checkpoint(trained, copy, 6)  # re-trained 4..6: bit-identical to the first run


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated_meta", "zeroed_metadata"])
def test_training_resumes_past_corrupt_metadata(trained, copy, how, caplog):
  corrupt(copy / "checkpoints" / "6", how)
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(tiny_config(), str(copy))
  warnings = corrupt_lines(caplog.text)
  assert len(warnings) == 1 and "JSONDecodeError" in warnings[0], caplog.text
  assert any("resumed train" in r.getMessage() and r.getMessage().endswith("at step 3")
             for r in caplog.records)
  assert_same_checkpoint(trained, copy, 6)


@pytest.mark.slow
def test_evaluate_cli_falls_back_and_leaves_the_checkpoints(trained, copy):
  corrupt(copy / "checkpoints" / "6", "truncated_data")
  proc = _evaluate(copy, "latest")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert last_json(proc.stdout)["step"] == 3
  assert len(corrupt_lines(proc.stderr)) == 1 and "Traceback" not in proc.stderr
  # A corrupt best/ (it keeps one) falls back to the newest good latest checkpoint.
  best = os.listdir(copy / "best")
  corrupt(copy / "best" / best[0], "zeroed_metadata")
  proc = _evaluate(copy, "best")
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = last_json(proc.stdout)
  assert (res["step"], res["checkpoint"]) == (3, checkpointing.LATEST)
  assert len(corrupt_lines(proc.stderr)) == 2 and "Traceback" not in proc.stderr
  assert sorted(os.listdir(copy / "checkpoints")) == ["3", "6"]
  assert os.listdir(copy / "best") == best


@pytest.mark.slow
def test_no_good_checkpoint_is_one_error_line(copy):
  for d in ("checkpoints/3", "checkpoints/6", f"best/{os.listdir(copy / 'best')[0]}"):
    corrupt(copy / d, "truncated_data")
  for proc in (_evaluate(copy, "latest"), _train(copy)):
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "reads back" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
  assert sorted(os.listdir(copy / "checkpoints")) == ["3.corrupt", "6.corrupt"]  # set aside
