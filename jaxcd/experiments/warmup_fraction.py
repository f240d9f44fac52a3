"""Warm-up fraction experiment (CDCluster paper, Table 2): test accuracy and MAE of the whole
CDCluster training when the warm-up sees less labeled data.

  python -m jaxcd.experiments.warmup_fraction --config configs/cdcluster.py --out runs/table2 \
      [--fractions 0.01,0.02,0.05,0.1,0.2] [--sampled 0.06]

Each setting is one full run (`jaxcd.trainer.train_and_evaluate`) in OUT/<setting>/,
so an interrupted experiment resumes where it stopped. The plain fractions draw warm-up tiles
from the whole training split (config.cdcluster.min_change = 0, as the paper's 1..20% columns);
`--sampled` fractions keep only tiles with >= 3% changed pixels (the paper's "6% (sampled)").
Writes OUT/table2.csv and OUT/table2.md (accuracy, MAE, F1, kappa on the test split) and prints
the rows as a JSON last line. Paper (LEVIR-CD): accuracy 0.05/0.05/0.05/0.05/0.84 and 0.72
sampled; MAE 0.94/0.95/0.95/0.95/0.10 and 0.24.
"""
import copy
import os
from typing import Sequence

from jaxcd.errors import ConfigError
from jaxcd.experiments import save_table

COLUMNS = ("setting", "warmup_fraction", "min_change", "warmup_tiles", "accuracy", "mae", "f1",
           "kappa")


def settings(fractions: Sequence[float], sampled: Sequence[float],
             min_change: float = 0.03) -> list[tuple[str, float, float]]:
  """(name, warm-up fraction, min_change) per column of the table."""
  out = [(f"{100 * f:g}%", float(f), 0.0) for f in fractions]
  out += [(f"{100 * f:g}% (sampled)", float(f), float(min_change)) for f in sampled]
  if not out:
    raise ConfigError("--fractions/--sampled: nothing to run")
  return out


def run(config, out: str, fractions: Sequence[float], sampled: Sequence[float]) -> list[dict]:
  from jaxcd.data import source_from_config
  from jaxcd import trainer
  from jaxcd.methods import cdcluster
  rows = []
  train = source_from_config(config.data, "train")
  for name, frac, min_change in settings(fractions, sampled, config.cdcluster.min_change or 0.03):
    c = copy.deepcopy(config)
    c.cdcluster.warmup_fraction, c.cdcluster.min_change = frac, min_change
    tiles = len(cdcluster.warmup_indices(train, frac, min_change, c.seed))
    workdir = os.path.join(out, name.replace("%", "pct").replace(" ", "_").replace("(", "")
                           .replace(")", ""))
    res = trainer.train_and_evaluate(c, workdir)["test"]
    rows.append({"setting": name, "warmup_fraction": frac, "min_change": min_change,
                 "warmup_tiles": tiles, "accuracy": round(res["oa"], 4),
                 "mae": round(res["mae"], 4), "f1": round(res["f1"], 4),
                 "kappa": round(res["kappa"], 4)})
  write_table(rows, out)
  return rows


def write_table(rows: list[dict], out: str) -> tuple[str, str]:
  # Markdown in the paper's orientation: one column per setting.
  lines = ["| Metric | " + " | ".join(r["setting"] for r in rows) + " |",
           "|---|" + "---|" * len(rows)]
  for key, label in (("warmup_tiles", "Warm-up tiles"), ("accuracy", "Accuracy"), ("mae", "MAE"),
                     ("f1", "F1"), ("kappa", "Kappa")):
    lines.append(f"| {label} | " + " | ".join(str(r[key]) for r in rows) + " |")
  return save_table(out, "table2", COLUMNS, rows, lines)


def _floats(text: str) -> list[float]:
  try:
    return [float(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ConfigError(f"expected comma-separated fractions, got {text!r}") from None


def main(argv):
  del argv
  from absl import flags
  from jaxcd import cli
  f = flags.FLAGS
  rows = cli.run_guarded(lambda: run(f.config, f.out, _floats(f.fractions), _floats(f.sampled)))
  cli.print_json(rows)


if __name__ == "__main__":
  from absl import flags

  from jaxcd import cli
  cli.define_config_flag("Config file (configs/*.py).")
  flags.DEFINE_string("out", "runs/table2", "Output folder (one workdir per setting + tables).")
  flags.DEFINE_string("fractions", "0.01,0.02,0.05,0.1,0.2", "Warm-up fractions, no filter.")
  flags.DEFINE_string("sampled", "0.06", "Warm-up fractions drawn from tiles with >= 3% change.")
  cli.run_app(main)
