"""Every registered model on the embedded synthetic scenes under one budget: the same steps,
batch and 64x64 tiles for all, each with its own config's loss and optimiser; test F1 / IoU.

  python -m jaxcd.experiments.same_steps --out runs/same_steps [--models all] \
      [--steps 200] [--batch 8]

Model -> config: configs/<model>.py; `rcr` runs configs/rcl.py as its supervised baseline
(rcl.mode=sup_only on every labeled pair), `cdcluster` its own method (warm-up for the first
half, one clustering, the unsupervised rest). Each model overrides only `num_steps`,
`input.batch_size` and the evaluation / checkpoint cadence (one validation, at the end), so the
comparison is of models and their recipes at a fixed, small budget, not of converged models.
Each model is one run in OUT/<model>/ (an interrupted experiment resumes; a run finished under
the same budget keeps its row). Writes OUT/same_steps.csv and OUT/same_steps.md and prints the rows as a JSON
last line; `seconds` is the wall time of that call (compilation and evaluation included).
"""
import csv
import os
import time
from typing import Sequence

from jaxcd.errors import ConfigError
from jaxcd.experiments import parse_choices, save_table

COLUMNS = ("model", "config", "f1", "iou", "precision", "recall", "steps", "batch", "seconds",
           "workdir")
CONFIG_OF = {"rcr": "rcl"}  # models whose embedded config is not configs/<model>.py


def parse_models(text: str) -> list[str]:
  """'all' or a comma-separated list of registered model names."""
  from jaxcd.models import _import_all, _REGISTRY
  _import_all()
  known = sorted(_REGISTRY)
  if text.strip() == "all":
    return known
  return parse_choices(text, known, "models", other="'all' or ")


def config_for(model: str, configs_dir: str, steps: int, batch: int):
  """The model's embedded-data config with the shared budget applied."""
  from jaxcd.config_base import load, step_budget
  name = CONFIG_OF.get(model, model)
  path = os.path.join(configs_dir, f"{name}.py")
  if not os.path.exists(path):
    raise ConfigError(f"--configs_dir: no {name}.py in {configs_dir!r} (model {model})")
  c = load(path)
  with c.unlocked():
    step_budget(c, steps, batch)
    c.eval_splits = ("test",)
    if c.method == "rcl":
      c.rcl.mode = "sup_only"
      c.rcl.label_fraction = 1.0
      c.rcl.stage1_steps = steps
      c.rcl.steps_by_fraction = ""
      c.optim.warmup_steps = min(c.optim.warmup_steps, steps // 10)
    if c.method == "cdcluster":
      c.cdcluster.warmup_steps = steps // 2
      c.cdcluster.cluster_every_steps = steps
  if c.model.name != model:
    raise ConfigError(f"{path}: config.model.name is {c.model.name!r}, expected {model!r}")
  return c, os.path.relpath(path)


def final_test_row(workdir: str) -> dict | None:
  from jaxcd import writers
  rows = [r for r in writers.read_metrics(workdir)
          if r.get("split") == "test" and r.get("checkpoint") == "best"]
  return rows[-1] if rows else None


def run(out: str, models: Sequence[str], steps: int, batch: int, configs_dir: str = "configs",
        train_fn=None) -> list[dict]:
  """Trains each model not yet finished, then writes the tables; returns the rows."""
  if train_fn is None:
    from jaxcd import trainer
    train_fn = trainer.train_and_evaluate
  if steps <= 0 or batch <= 0:
    raise ConfigError(f"--steps and --batch must be positive, got {steps}, {batch}")
  done = {r["model"]: r for r in read_rows(out)}
  rows = []
  for model in models:
    c, path = config_for(model, configs_dir, steps, batch)
    wd = os.path.join(out, model)
    prev = done.get(model)
    if prev and (prev["steps"], prev["batch"]) == (steps, batch) and final_test_row(wd):
      rows.append(prev)  # finished under this budget: keep its row (and its wall time)
      continue
    t0 = time.perf_counter()
    train_fn(c, wd)
    seconds = time.perf_counter() - t0
    r = final_test_row(wd) or {}
    rows.append({"model": model, "config": path, "steps": steps, "batch": batch,
                 "seconds": round(seconds, 1), "workdir": wd,
                 **{k: round(r[k], 4) for k in ("f1", "iou", "precision", "recall") if k in r}})
    write_tables(rows, out)  # after every model: a partial table survives an interruption
  return rows


def read_rows(out: str) -> list[dict]:
  """The rows of an earlier OUT/same_steps.csv (none if absent), numbers parsed."""
  path = os.path.join(out, "same_steps.csv")
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  for r in rows:
    for k in ("f1", "iou", "precision", "recall", "seconds"):
      r[k] = float(r[k]) if r.get(k) else None
    r["steps"], r["batch"] = int(r["steps"]), int(r["batch"])
  return rows


def write_tables(rows: list[dict], out: str) -> tuple[str, str]:
  fmt = lambda v: "-" if v is None else f"{v:.3f}"
  secs = lambda v: "-" if v is None else f"{v:.0f}"
  lines = ["| model | test F1 | test IoU | wall s | config |", "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['model']} | {fmt(r.get('f1'))} | {fmt(r.get('iou'))} | "
                 f"{secs(r.get('seconds'))} | {r['config']} |")
  return save_table(out, "same_steps", COLUMNS, rows, lines)


def main(argv):
  del argv
  from absl import flags
  from jaxcd import cli
  f = flags.FLAGS
  rows = cli.run_guarded(lambda: run(f.out, parse_models(f.models), f.steps, f.batch,
                                     f.configs_dir))
  cli.print_json(rows)


if __name__ == "__main__":
  from absl import flags

  from jaxcd import cli, config_base
  flags.DEFINE_string("out", "runs/same_steps", "Output folder (one workdir per model + tables).")
  flags.DEFINE_string("models", "all", "'all' or comma-separated registered model names.")
  flags.DEFINE_integer("steps", config_base.BUDGET_STEPS, "Training steps of every model.")
  flags.DEFINE_integer("batch", config_base.BUDGET_BATCH, "Training batch of every model.")
  flags.DEFINE_string("configs_dir", "configs", "Folder of the embedded-data configs.")
  cli.run_app(main)
