"""Label-fraction experiment (RCL paper, Tables II/III/IV/VI): the supervised-only baseline and
RCL trained on the same labeled fractions, test IoU beside the paper's.

  python -m jaxcd.experiments.label_fractions --config configs/rcl_sztaki.py \
      --fractions 10,20,40,100 --out runs/rcl_table2 [--methods sup_only,rcl] [--config.F=V ...]
  python -m jaxcd.experiments.label_fractions --config configs/rcr.py --fractions 10 \
      --methods sup_only,rcr --out runs/rcr_fractions          # RCR beside Sup. only

Fractions are percentages of the training split. Each (method, fraction) is one full run
(`jaxcd.trainer.train_and_evaluate`: `rcl.mode` = sup_only | rcl, or `method` = rcr, which
needs a config with an `rcr` block, configs/rcr*.py) in OUT/<method>_<f>pct/,
so an interrupted experiment resumes where it stopped (a finished run only re-evaluates). The
same labeled pairs serve both methods (the split depends on the fraction and config.seed only).
`--config.field=value` overrides apply to every run (e.g. shorter stages on a CPU). Writes
OUT/label_fractions.csv (one row per method, fraction), OUT/label_fractions.md (the paper's
layout: methods x fractions, test IoU % of the change class, ours and the paper's) and
OUT/label_fractions.png (IoU against the labeled share, a colour per method: ours solid, the
paper's dashed), and prints the rows as a JSON last line. Rows: "Sup. only" (plain CE), "RCL
pre" (RCL's stage 1, the paper's "Ours. pre") and "RCL" (stage 2; none at 100% unless the
unlabeled pairs come from another dataset), "RCR" (`jaxcd.methods.rcr`, from configs/rcr.py or a
config built on it) and the adversarial rivals "AdvNet", "s4GAN", "SemiCDNet"
(`--methods advnet,s4gan,semicdnet`, from configs/advnet.py or a config built on it; Sup. only
then trains `gan.n_labeled` labeled pairs per step for `num_steps`, as they do).
The paper's numbers come from `config.rcl.paper_table`.
"""
import copy
import os
from typing import Sequence

from jaxcd.errors import ConfigError
from jaxcd.experiments import save_table

METHODS = ("sup_only", "rcl", "rcr")
DEFAULT_METHODS = ("sup_only", "rcl")
# The adversarial rivals (jaxcd/methods/adversarial.py): need a config with their blocks
# (configs/advnet.py) and unlabeled pairs (no row at 100%).
GAN_METHODS = ("advnet", "s4gan", "semicdnet")
ROWS = (("sup_only", 1, "Sup. only"), ("rcl", 1, "RCL pre"), ("rcl", 2, "RCL"), ("rcr", 1, "RCR"),
        ("advnet", 1, "AdvNet"), ("s4gan", 1, "s4GAN"), ("semicdnet", 1, "SemiCDNet"))
COLUMNS = ("method", "fraction", "iou", "f1", "oa", "kappa", "paper_iou", "paper_oa", "stage",
           "step", "workdir")

# Test IoU (and OA where given) of the change class in %, per labeled percentage.
PAPER = {
    "II": {  # SZTAKI
        "Sup. only": {"iou": {10: 9.85, 20: 28.11, 40: 30.43, 100: 39.78}},
        "RCL pre": {"iou": {10: 12.37, 20: 29.56, 40: 32.72, 100: 41.25}},
        "RCL": {"iou": {10: 12.68, 20: 32.57, 40: 34.38}},
    },
    "III": {  # WHU-CD
        "Sup. only": {"iou": {5: 65.73, 10: 72.93, 20: 77.38, 40: 81.95},
                      "oa": {5: 92.08, 10: 93.92, 20: 95.06, 40: 96.19}},
        "RCL pre": {"iou": {5: 70.05, 10: 71.37, 20: 78.6, 40: 83.63},
                    "oa": {5: 93.60, 10: 95.07, 20: 95.27, 40: 96.61}},
        "RCL": {"iou": {5: 79.32, 10: 82.98, 20: 84.16, 40: 85.28},
                "oa": {5: 95.67, 10: 96.48, 20: 96.73, 40: 96.98}},
        "RCR": {"iou": {5: 76.65, 10: 79.10, 20: 83.87, 40: 84.66},
                "oa": {5: 95.2, 10: 95.70, 20: 96.68, 40: 96.84}},
    },
    "IV": {  # LEVIR-CD
        "Sup. only": {"iou": {5: 61.0, 10: 66.8, 20: 72.3, 40: 74.9},
                      "oa": {5: 97.60, 10: 98.13, 20: 98.44, 40: 98.60}},
        "RCL": {"iou": {5: 74.79, 10: 76.7, 20: 77.01, 40: 77.10},
                "oa": {5: 98.78, 10: 98.83, 20: 98.87, 40: 98.89}},
        "RCR": {"iou": {5: 72.5, 10: 75.5, 20: 76.2, 40: 77.2},
                "oa": {5: 98.47, 10: 98.63, 20: 98.68, 40: 98.72}},
        "AdvNet": {"iou": {5: 66.1, 10: 72.3, 20: 74.6, 40: 75.0},
                   "oa": {5: 98.08, 10: 98.45, 20: 98.58, 40: 98.60}},
        "s4GAN": {"iou": {5: 64.0, 10: 67.0, 20: 73.4, 40: 75.4},
                  "oa": {5: 97.89, 10: 98.11, 20: 98.51, 40: 98.62}},
        "SemiCDNet": {"iou": {5: 67.6, 10: 71.5, 20: 74.3, 40: 75.5},
                      "oa": {5: 98.17, 10: 98.42, 20: 98.58, 40: 98.63}},
    },
    "VI": {  # SZTAKI labeled, WHU-CD unlabeled ("Ours + ext (WHU)")
        "Sup. only": {"iou": {10: 9.85, 20: 28.11, 40: 30.43, 100: 39.78}},
        "RCL": {"iou": {10: 16.66, 20: 34.42, 40: 38.75, 100: 44.54}},
    },
}


def parse_fractions(text: str) -> list[float]:
  """'10,20,40,100' -> [10.0, 20.0, 40.0, 100.0] (percent), each in (0, 100]."""
  try:
    out = [float(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ConfigError(f"--fractions: expected comma-separated percentages, got {text!r}") from None
  if not out:
    raise ConfigError("--fractions: nothing to run")
  bad = [f for f in out if not 0 < f <= 100]
  if bad:
    raise ConfigError(f"--fractions: percentages must be in (0, 100], got {bad[0]:g}")
  return out


def parse_methods(text: str) -> list[str]:
  out = [m.strip() for m in text.split(",") if m.strip()]
  bad = [m for m in out if m not in METHODS + GAN_METHODS]
  if bad or not out:
    raise ConfigError(f"--methods: choose from {', '.join(METHODS + GAN_METHODS)}, got {text!r}")
  return out


def workdir_for(out: str, method: str, percent: float) -> str:
  return os.path.join(out, f"{method}_{percent:g}pct")


def final_test_rows(workdir: str) -> dict[int, dict]:
  """The final test row (best checkpoint) of each stage of a finished run."""
  from jaxcd import writers
  return {r.get("stage", 1): r for r in writers.read_metrics(workdir)
          if r.get("split") == "test" and r.get("checkpoint") == "best"}


def run(config, out: str, fractions: Sequence[float], methods: Sequence[str] = DEFAULT_METHODS,
        train_fn=None) -> list[dict]:
  """Trains every (method, fraction) not yet finished, then writes the tables; returns rows."""
  if train_fn is None:
    from jaxcd import trainer
    train_fn = trainer.train_and_evaluate
  if config.method not in ("rcl", "rcr") + GAN_METHODS:
    raise ConfigError(f"config.method must be 'rcl', 'rcr' or one of {', '.join(GAN_METHODS)} "
                      f"for this experiment, got {config.method!r}")
  if "rcr" in methods and "rcr" not in config:
    raise ConfigError("--methods rcr needs a config with an rcr block (configs/rcr*.py)")
  if "test" not in config.eval_splits:
    raise ConfigError("config.eval_splits must include 'test'")
  gan = "gan" in config
  if not gan and set(methods) & set(GAN_METHODS):
    raise ConfigError("--methods: the adversarial methods need their config blocks: use "
                      "configs/advnet.py (or a config built on it)")
  for f in fractions:
    for method in methods:
      c = copy.deepcopy(config)
      if method in GAN_METHODS:
        if f >= 100:
          continue  # nothing unlabeled
        c.method = method
        c.gan.label_fraction = f / 100
      elif method == "rcr":
        c.method = "rcr"
        c.rcr.label_fraction = f / 100
        c.rcl.label_fraction = f / 100  # the split of every method (seeded by fraction and seed)
      else:
        c.method = "rcl"
        c.rcl.mode = method
        c.rcl.label_fraction = f / 100
        if gan and method == "sup_only":
          # Beside the adversarial rows: the same labeled pairs per step and the same steps.
          c.input.batch_size = c.gan.n_labeled
          if c.num_steps > 0:
            c.rcl.stage1_steps = c.num_steps
      train_fn(c, workdir_for(out, method, f))
  rows = collect(out, fractions, methods, config.rcl.get("paper_table", ""))
  write_tables(rows, out, fractions)
  plot(rows, out)
  return rows


def collect(out: str, fractions: Sequence[float], methods: Sequence[str],
            paper_table: str = "") -> list[dict]:
  paper = PAPER.get(paper_table, {})
  rows = []
  for method, stage, name in ROWS:
    if method not in methods:
      continue
    for f in fractions:
      wd = workdir_for(out, method, f)
      r = final_test_rows(wd).get(stage)
      ref = paper.get(name, {})
      key = int(f) if float(f).is_integer() else f
      if r is None and ref.get("iou", {}).get(key) is None:
        continue  # e.g. RCL stage 2 at 100%: neither we nor the paper have it
      rows.append({
          "method": name, "fraction": f,
          "iou": None if r is None else round(100 * r["iou"], 2),
          "f1": None if r is None else round(100 * r["f1"], 2),
          "oa": None if r is None else round(100 * r["oa"], 2),
          "kappa": None if r is None else round(r["kappa"], 4),
          "paper_iou": ref.get("iou", {}).get(key), "paper_oa": ref.get("oa", {}).get(key),
          "stage": stage, "step": None if r is None else r["step"], "workdir": wd})
  return rows


def write_tables(rows: list[dict], out: str, fractions: Sequence[float]) -> tuple[str, str]:
  fmt = lambda v: "-" if v is None else f"{v:.2f}"
  lines = ["Test IoU of the change class (%), ours (paper)", "",
           "| Method | " + " | ".join(f"{f:g}%" for f in fractions) + " |",
           "|---|" + "---|" * len(fractions)]
  for name in dict.fromkeys(r["method"] for r in rows):
    cells = []
    for f in fractions:
      r = next((r for r in rows if r["method"] == name and r["fraction"] == f), None)
      cells.append("-" if r is None else f"{fmt(r['iou'])} ({fmt(r['paper_iou'])})")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return save_table(out, "label_fractions", COLUMNS, rows, lines)


def series(rows: list[dict]) -> dict[str, dict[str, list]]:
  """Per method: the labeled percentages with our IoU and with the paper's (None-free lists)."""
  out = {}
  for name in dict.fromkeys(r["method"] for r in rows):
    own = [(r["fraction"], r["iou"]) for r in rows if r["method"] == name and r["iou"] is not None]
    ref = [(r["fraction"], r["paper_iou"]) for r in rows
           if r["method"] == name and r["paper_iou"] is not None]
    out[name] = {"ours": sorted(own), "paper": sorted(ref)}
  return out


def plot(rows: list[dict], out: str, title: str = "") -> str:
  """OUT/label_fractions.png: test IoU against the labeled share; ours solid, paper dashed."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(out, exist_ok=True)
  png_path = os.path.join(out, "label_fractions.png")
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, (name, s) in enumerate(series(rows).items()):
    color = f"C{i}"
    if s["ours"]:
      ax.plot(*zip(*s["ours"]), color=color, marker="o", lw=2, label=f"{name} (ours)")
    if s["paper"]:
      ax.plot(*zip(*s["paper"]), color=color, marker="x", ls="--", lw=1, label=f"{name} (paper)")
  fractions = sorted({r["fraction"] for r in rows})
  ax.set_xscale("log")
  ax.set_xticks(fractions, [f"{f:g}%" for f in fractions])
  ax.minorticks_off()
  ax.set_xlabel("labeled share of the training split")
  ax.set_ylabel("test IoU of the change class (%)")
  ax.set_title(title or "Label-fraction experiment")
  ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(png_path, dpi=120)
  plt.close(fig)
  return png_path


def main(argv):
  del argv
  from absl import flags
  from jaxcd import cli
  f = flags.FLAGS
  rows = cli.run_guarded(lambda: run(f.config, f.out, parse_fractions(f.fractions),
                                     parse_methods(f.methods)))
  cli.print_json(rows)


if __name__ == "__main__":
  from absl import flags

  from jaxcd import cli
  cli.define_config_flag("Config file (configs/rcl*.py).")
  flags.DEFINE_string("out", "runs/label_fractions",
                      "Output folder (one workdir per run + tables).")
  flags.DEFINE_string("fractions", "10,20,40,100", "Labeled percentages of the training split.")
  flags.DEFINE_string("methods", ",".join(DEFAULT_METHODS),
                      "Methods to run: sup_only, rcl, rcr, advnet, s4gan, semicdnet.")
  cli.run_app(main)
