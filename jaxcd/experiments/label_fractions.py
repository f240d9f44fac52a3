"""Label-fraction experiment (RCL paper, Tables II/III/IV/VI): the supervised-only baseline and
RCL trained on the same labeled fractions, test IoU beside the paper's.

  python -m jaxcd.experiments.label_fractions --config configs/rcl_sztaki.py \
      --fractions 10,20,40,100 --out runs/rcl_table2 [--methods sup_only,rcl] [--config.F=V ...]
  python -m jaxcd.experiments.label_fractions --config configs/rcr.py --fractions 10 \
      --methods sup_only,rcr --out runs/rcr_fractions          # RCR beside Sup. only
  python -m jaxcd.experiments.label_fractions --config configs/rivals_sztaki_cpu.py \
      --fractions 10,20,40 --methods sup_only,rcl,rcr,advnet,s4gan,semicdnet --seeds 0,1 \
      --out runs/rivals_sztaki                                  # all six rows, two seeds

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
The paper's numbers come from `config.rcl.paper_table`. With `--seeds 0,1` every run is repeated
per seed (OUT/<method>_<f>pct_seed<s>/) and each cell is the mean over the seeds with half their
range; below the table, at each fraction, the methods whose every seed beats (or loses to) every
seed of Sup. only.
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
COLUMNS = ("method", "fraction", "seed", "seeds", "iou", "iou_min", "iou_max", "f1", "oa", "kappa",
           "paper_iou", "paper_oa", "stage", "step", "workdir")

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


def parse_seeds(text: str) -> list[int] | None:
  """'' -> None (one run per cell with config.seed); '0,1' -> [0, 1]."""
  if not text.strip():
    return None
  try:
    out = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None
  if not out or len(set(out)) != len(out):
    raise ConfigError(f"--seeds: expected distinct integers, got {text!r}")
  return out


def workdir_for(out: str, method: str, percent: float, seed: int | None = None) -> str:
  suffix = "" if seed is None else f"_seed{seed}"
  return os.path.join(out, f"{method}_{percent:g}pct{suffix}")


def final_test_rows(workdir: str) -> dict[int, dict]:
  """The final test row (best checkpoint) of each stage of a finished run."""
  from jaxcd import writers
  return {r.get("stage", 1): r for r in writers.read_metrics(workdir)
          if r.get("split") == "test" and r.get("checkpoint") == "best"}


def run(config, out: str, fractions: Sequence[float], methods: Sequence[str] = DEFAULT_METHODS,
        train_fn=None, seeds: Sequence[int] | None = None) -> list[dict]:
  """Trains every (method, fraction[, seed]) not yet finished, then writes the tables; returns
  the rows (with `seeds`: one per seed, then the mean and spread rows)."""
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
  if gan:
    # The rivals' labeled and unlabeled pairs per step, as the config's own method reads them.
    if config.method == "rcr":
      n_l, n_u = config.input.batch_size, config.rcr.unlabeled_batch_size
    else:
      n_l, n_u = config.gan.n_labeled, config.input.batch_size - config.gan.n_labeled
  for f, seed, method in ((f, s, m) for f in fractions for s in (seeds or [None])
                          for m in methods):
    c = copy.deepcopy(config)
    if seed is not None:
      c.seed = seed  # draws the labeled pairs, the initialisation and the batches
    if method in GAN_METHODS:
      if f >= 100:
        continue  # nothing unlabeled
      c.method = method
      c.gan.label_fraction = f / 100
      c.gan.n_labeled, c.input.batch_size = n_l, n_l + n_u
    elif method == "rcr":
      c.method = "rcr"
      c.rcr.label_fraction = f / 100
      c.rcl.label_fraction = f / 100  # the split of every method (seeded by fraction and seed)
      if gan:
        c.input.batch_size, c.rcr.unlabeled_batch_size = n_l, n_u
    else:
      c.method = "rcl"
      c.rcl.mode = method
      c.rcl.label_fraction = f / 100
      if gan:
        # Beside the rivals: their labeled pairs per step (RCL's stage 2 splits them,
        # rcl.n_labeled labeled + the rest unlabeled); Sup. only for their steps.
        c.input.batch_size = n_l
        if method == "sup_only" and c.num_steps > 0:
          c.rcl.stage1_steps = c.num_steps
    train_fn(c, workdir_for(out, method, f, seed))
  rows = collect(out, fractions, methods, config.rcl.get("paper_table", ""), seeds)
  write_tables(rows, out, fractions)
  plot(rows, out)
  return rows


def collect(out: str, fractions: Sequence[float], methods: Sequence[str],
            paper_table: str = "", seeds: Sequence[int] | None = None) -> list[dict]:
  """A row per (method, fraction[, seed]) run; with `seeds`, a "mean" row per (method,
  fraction) after its seeds' rows, with the seeds' lowest and highest IoU as the spread."""
  paper = PAPER.get(paper_table, {})
  rows = []
  for method, stage, name in ROWS:
    if method not in methods:
      continue
    for f in fractions:
      ref = paper.get(name, {})
      key = int(f) if float(f).is_integer() else f
      base = {"method": name, "fraction": f, "stage": stage,
              "paper_iou": ref.get("iou", {}).get(key), "paper_oa": ref.get("oa", {}).get(key)}
      cell = []
      for seed in seeds or [None]:
        wd = workdir_for(out, method, f, seed)
        r = final_test_rows(wd).get(stage)
        if r is not None:
          cell.append({**base, "seed": seed, "iou": round(100 * r["iou"], 2),
                       "f1": round(100 * r["f1"], 2), "oa": round(100 * r["oa"], 2),
                       "kappa": round(r["kappa"], 4), "step": r["step"], "workdir": wd})
      if not cell and base["paper_iou"] is None:
        continue  # e.g. RCL stage 2 at 100%: neither we nor the paper have it
      if seeds is None:
        rows += cell or [{**base, "seed": None, "iou": None, "f1": None, "oa": None,
                          "kappa": None, "step": None, "workdir": workdir_for(out, method, f)}]
        continue
      rows += cell
      mean = lambda k: None if not cell else round(sum(r[k] for r in cell) / len(cell), 2)  # noqa: E731
      rows.append({**base, "seed": "mean", "seeds": len(cell), "iou": mean("iou"),
                   "f1": mean("f1"), "oa": mean("oa"), "kappa": mean("kappa"),
                   "iou_min": min((r["iou"] for r in cell), default=None),
                   "iou_max": max((r["iou"] for r in cell), default=None),
                   "step": None, "workdir": out})
  return rows


def summary_rows(rows: list[dict]) -> list[dict]:
  """The rows a table cell shows: the mean rows where there are seeds, else every row."""
  means = [r for r in rows if r.get("seed") == "mean"]
  return means or rows


def beyond_spread(rows: list[dict], fractions: Sequence[float],
                  baseline: str = "Sup. only") -> dict[float, dict[str, list[str]]]:
  """Per fraction, the methods whose every seed beats (or loses to) every seed of `baseline`:
  their ranges of test IoU over the seeds do not overlap."""
  means = [r for r in rows if r.get("seed") == "mean" and r["iou"] is not None]
  out = {}
  for f in fractions:
    base = next((r for r in means if r["method"] == baseline and r["fraction"] == f), None)
    out[f] = {"above": [], "below": []}
    for r in means:
      if base is None or r["fraction"] != f or r["method"] == baseline or r["seeds"] < 2:
        continue
      if r["iou_min"] > base["iou_max"]:
        out[f]["above"].append(r["method"])
      elif r["iou_max"] < base["iou_min"]:
        out[f]["below"].append(r["method"])
  return out


def write_tables(rows: list[dict], out: str, fractions: Sequence[float]) -> tuple[str, str]:
  fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
  cells_of = summary_rows(rows)
  seeded = cells_of is not rows
  lines = ["Test IoU of the change class (%), ours (paper)" + (
      "; ours = mean over the seeds ± half their range" if seeded else ""), "",
           "| Method | " + " | ".join(f"{f:g}%" for f in fractions) + " |",
           "|---|" + "---|" * len(fractions)]
  for name in dict.fromkeys(r["method"] for r in cells_of):
    cells = []
    for f in fractions:
      r = next((r for r in cells_of if r["method"] == name and r["fraction"] == f), None)
      if r is None:
        cells.append("-")
        continue
      spread = (f" ± {(r['iou_max'] - r['iou_min']) / 2:.2f}"
                if seeded and r["iou"] is not None else "")
      cells.append(f"{fmt(r['iou'])}{spread} ({fmt(r['paper_iou'])})")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if seeded:
    lines += ["", "Beyond the spread (every seed above / below every seed of Sup. only):"]
    for f, d in beyond_spread(rows, fractions).items():
      lines.append(f"- {f:g}%: above: {', '.join(d['above']) or 'none'}; "
                   f"below: {', '.join(d['below']) or 'none'}")
  return save_table(out, "label_fractions", COLUMNS, rows, lines)


def series(rows: list[dict]) -> dict[str, dict[str, list]]:
  """Per method: the labeled percentages with our IoU and with the paper's (None-free lists)."""
  rows = summary_rows(rows)
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
  if ax.get_legend_handles_labels()[0]:  # rows without an IoU yet draw no lines
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
                                     parse_methods(f.methods), seeds=parse_seeds(f.seeds)))
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
  flags.DEFINE_string("seeds", "", "Seeds, e.g. 0,1: a run per seed (config.seed), the tables "
                      "give the mean and spread; empty: one run with config.seed.")
  cli.run_app(main)
