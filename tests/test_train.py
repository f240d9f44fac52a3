"""End-to-end training: logs, checkpoints, evaluation CLI, resume after SIGKILL, NaN stop."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, kill_when, last_json, run_module, tiny_config, tiny_overrides
from jaxcd import checkpointing, writers
from jaxcd.errors import TrainingError
from jaxcd import trainer

pytestmark = pytest.mark.slow  # end-to-end runs

EVAL_KEYS = {"step", "split", "f1", "iou", "precision", "recall", "oa", "kappa"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  final = trainer.train_and_evaluate(tiny_config(), workdir)
  return workdir, final


def test_run_writes_metrics_checkpoints_and_tensorboard(trained):
  workdir, final = trained
  rows = writers.read_metrics(workdir)
  train_rows = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
  assert all(np.isfinite(r["loss"]) and r["pairs_per_s"] > 0 for r in train_rows)
  val = [r for r in rows if r["split"] == "val"]
  assert [r["step"] for r in val] == [3, 6]
  for r in val + [r for r in rows if r["split"] == "test"]:
    assert EVAL_KEYS <= set(r), set(r)
    cm = np.array(r["confusion_matrix"])
    assert cm.sum() == 8 * 64 * 64 - 0  # every pixel of the 8 pairs counted once (no ignore)
  test = [r for r in rows if r["split"] == "test"]
  assert len(test) == 1 and test[0]["checkpoint"] == "best"
  best_step = max(val, key=lambda r: r["f1"])["step"]
  assert test[0]["step"] == best_step  # the final evaluation used the best val checkpoint
  assert final["test"]["f1"] == pytest.approx(test[0]["f1"])
  assert os.listdir(os.path.join(workdir, "best")) == [str(best_step)]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))


def test_rerun_of_a_finished_run_rewrites_only_the_final_rows(trained):
  workdir, final = trained
  before = writers.read_metrics(workdir)
  again = trainer.train_and_evaluate(tiny_config(), workdir)  # resumes at the last step
  after = writers.read_metrics(workdir)
  strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]
  assert strip(after) == strip(before)  # no duplicated rows, same final evaluation
  assert again["test"]["f1"] == pytest.approx(final["test"]["f1"])


def test_evaluate_cli_matches_final_row(trained):
  workdir, final = trained
  proc = run_module("jaxcd.evaluate", "--config", "configs/fc_siam_diff.py", "--workdir", workdir,
                    "--split", "test", *tiny_overrides())
  res = last_json(proc.stdout)
  assert res["split"] == "test" and res["checkpoint"] == "best" and res["pairs"] == 8
  for k in ("f1", "iou", "kappa", "oa"):
    assert res[k] == pytest.approx(final["test"][k], abs=1e-6)


def _train_cmd(workdir, **extra):
  return [sys.executable, "-m", "jaxcd.train", "--config", "configs/fc_siam_diff.py",
          "--workdir", workdir, *tiny_overrides(**extra)]


def test_sigkill_then_resume_matches_uninterrupted_run(trained, tmp_path):
  # The uninterrupted run is the module's `trained` one (the same config, in-process).
  ref, _ = trained
  killed = str(tmp_path / "killed")
  kill_when(_train_cmd(killed), os.path.join(killed, "checkpoints", "3", "commit_success.txt"))
  _, step_at_kill = checkpointing.load_numpy(killed)
  assert step_at_kill < 6, "nothing left to resume"

  subprocess.run(_train_cmd(killed), cwd=REPO, check=True, capture_output=True)
  a, step_a = checkpointing.load_numpy(ref)
  b, step_b = checkpointing.load_numpy(killed)
  assert step_a == step_b == 6
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)  # bit-identical: data order, rng and state all resumed
  steps = [r["step"] for r in writers.read_metrics(killed) if r["split"] == "train"]
  assert steps == list(range(1, 7))  # rows of the re-done steps are not duplicated


def test_resume_after_kill_between_best_and_latest_save(trained, tmp_path):
  # Killed after best/<b> was committed but before checkpoints/<b>: the resumed run re-trains
  # to step b, improves on the restored best F1 again and must keep (not re-save) best/<b>.
  import shutil
  workdir, final = trained
  killed = str(tmp_path / "killed")
  shutil.copytree(workdir, killed)
  best = checkpointing.Checkpointer(killed).best_step()
  for s in os.listdir(os.path.join(killed, "checkpoints")):
    if int(s) >= best:
      shutil.rmtree(os.path.join(killed, "checkpoints", s))
  again = trainer.train_and_evaluate(tiny_config(), killed)
  assert os.listdir(os.path.join(killed, "best")) == [str(best)]
  assert again["test"]["f1"] == pytest.approx(final["test"]["f1"])
  a, _ = checkpointing.load_numpy(workdir, which=checkpointing.BEST)
  b, _ = checkpointing.load_numpy(killed, which=checkpointing.BEST)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_non_finite_loss_stops_and_keeps_checkpoints(trained, tmp_path):
  import shutil
  workdir = str(tmp_path / "run")
  shutil.copytree(trained[0], workdir)  # 6 steps, checkpoints at 3 and 6
  before, _ = checkpointing.load_numpy(workdir)
  # Resume with an absurd learning rate: the first resumed update overflows.
  cfg = tiny_config(num_steps=10, eval_every=4, checkpoint_every=1, **{"optim.lr": 1e30})
  with pytest.raises(TrainingError, match=r"non-finite .* at step [78].*stay valid") as e:
    trainer.train_and_evaluate(cfg, workdir)
  assert "\n" not in str(e.value) and workdir in str(e.value)
  after, step = checkpointing.load_numpy(workdir)
  assert step <= 7
  for leaf in jax.tree_util.tree_leaves(after["params"]):
    assert np.all(np.isfinite(leaf))
  if step == 6:
    for x, y in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
      np.testing.assert_array_equal(x, y)


def test_cli_bad_config_is_one_line_error(tmp_path):
  proc = run_module("jaxcd.train", "--config", "configs/fc_siam_diff.py", "--workdir",
                    str(tmp_path), "--config.model.name=no_such_net", *tiny_overrides(),
                    check=False)
  assert proc.returncode == 2
  err = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(err) == 1 and "config.model.name" in err[0] and "no_such_net" in err[0]


def test_cli_missing_data_dir_is_one_line_error(tmp_path):
  missing = str(tmp_path / "nowhere")
  proc = run_module("jaxcd.train", "--config", "configs/fc_siam_diff.py", "--workdir",
                    str(tmp_path / "w"), "--config.data.name=levir_cd",
                    f"--config.data.data_dir={missing}", check=False)
  assert proc.returncode == 2
  err = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(err) == 1 and missing in err[0]


def test_bfloat16_compute_trains_with_float32_params(tmp_path):
  workdir = str(tmp_path)
  trainer.train_and_evaluate(tiny_config(dtype="bfloat16", num_steps=3, eval_every=3,
                                            checkpoint_every=3), workdir)
  losses = [r["loss"] for r in writers.read_metrics(workdir) if r["split"] == "train"]
  assert len(losses) == 3 and all(np.isfinite(losses))
  state, _ = checkpointing.load_numpy(workdir)
  dtypes = {x.dtype for x in jax.tree_util.tree_leaves(state["params"])}
  assert dtypes == {np.dtype("float32")}  # parameters (and optimizer state) stay float32


_CACHE_PROBE = ("import jax, jax.numpy as jnp; from jaxcd import cli; print(cli.enable_compilation_cache()); "
                "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()")


@pytest.mark.parametrize("switch", ["1", "0"])
def test_commands_cache_compiled_programs_in_jaxcd_cache(tmp_path, switch):
  """The commands' persistent XLA cache goes to $JAXCD_CACHE/xla unless turned off."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(JAXCD_CACHE=str(tmp_path), JAXCD_COMPILATION_CACHE=switch, JAX_PLATFORMS="cpu",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  out = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, cwd=REPO,
                       capture_output=True, text=True, check=True).stdout.split()[0]
  entries = list((tmp_path / "xla").glob("*")) if (tmp_path / "xla").exists() else []
  if switch == "1":
    assert out == str(tmp_path / "xla") and entries
  else:
    assert out == "None" and not entries
