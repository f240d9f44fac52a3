"""jaxcd against PyTorch on this CPU: the same networks' train step and forward, side by side.

  python -m jaxcd.experiments.vs_torch --out runs/vs_torch [--models dsfernet,rcr,fc_siam_diff] \
      [--batch 2] [--size 256] [--steps 3] [--rounds 3] [--dsfernet_official GITDIR] \
      [--xla_flags "..."] [--settings "name=XLA_FLAGS;name=XLA_FLAGS"] [--baseline DIR]

Every round runs each model twice in turn, jaxcd then torch, each in its own subprocess on the
same threads, so a machine that slows down during the experiment slows both alike:
  - jaxcd: `python -m jaxcd.bench --model M --json` (the trainer's jitted Adam step with plain
    cross-entropy, and the forward; medians of --steps calls after a warm-up), under
    JAX_PLATFORMS=cpu and the inherited XLA_FLAGS plus --xla_flags;
  - torch: this module's `--torch_worker M`, with torch.set_num_threads(os.cpu_count()): one
    Adam step (forward, loss, backward, step; two warm-up steps, then the median of --steps) and
    a no-grad eval forward (one warm-up, the median of --steps). Models from the repository's
    tests/torch_reference/: fc_siam_diff `fc_siam_ref.SiamUnetDiff` and rcr `rcr_ref.CDModel()`
    with cross-entropy on the logits; dsfernet `dsfernet_ref.MyNet` with the loss of the official
    Train.py (class-weighted cross-entropy + 0.01 * 0.5 * the dice of the 1/8 and 1/16 outputs;
    those two terms are on small maps and cost little, jaxcd's side has the cross-entropy only).
    With --dsfernet_official GITDIR, dsfernet's torch side is instead the official code itself,
    timed by --dsfernet_script (its own timing: one warm-up, then the mean of --steps).
--settings times jaxcd's side once per named XLA_FLAGS setting in every round, all against that
round's one torch measurement (an XLA option sweep; each round starts at the next setting);
--baseline DIR adds the setting `baseline`: the jaxcd checkout in DIR (e.g. a git worktree of an
older commit), for before/after tables.
Ratios are jaxcd pairs/s / torch pairs/s (> 1: jaxcd is faster), per round and their median.
Writes OUT/vs_torch.csv (a row per model, setting and round, then a `median` row per model and
setting) and OUT/vs_torch.md, and prints the rows as a JSON last line.
"""
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from jaxcd.errors import ConfigError, one_line
from jaxcd.experiments import parse_choices, save_table

REPO = Path(__file__).resolve().parents[2]
TORCH_REFERENCE = REPO / "tests" / "torch_reference"
MODELS = ("dsfernet", "rcr", "fc_siam_diff")  # the models with a torch re-statement
SIZE_MULTIPLE = {"dsfernet": 16, "rcr": 8, "fc_siam_diff": 1}  # their downsampling
COLUMNS = ("model", "setting", "xla_flags", "round", "train_ratio", "fwd_ratio",
           "jaxcd_train_pairs_per_s", "torch_train_pairs_per_s", "jaxcd_fwd_pairs_per_s",
           "torch_fwd_pairs_per_s",
           "jaxcd_params", "torch_params", "jaxcd_compile_s", "torch_impl", "torch_threads",
           "torch", "batch", "size", "steps")
RATES = ("jaxcd_train_pairs_per_s", "torch_train_pairs_per_s", "jaxcd_fwd_pairs_per_s",
         "torch_fwd_pairs_per_s")


def parse_models(text: str) -> list[str]:
  return parse_choices(text, MODELS, "models")


def parse_settings(text: str) -> list[tuple[str, str]]:
  """'a=FLAGS;b=FLAGS' -> [(a, FLAGS), (b, FLAGS)]: ';' between settings (flags hold commas)."""
  out = []
  for item in (t.strip() for t in text.split(";")):
    name, eq, flags = item.partition("=")
    if not eq or not re.fullmatch(r"\w[\w.-]*", name.strip()):
      raise ConfigError(f"--settings: each setting is NAME=XLA_FLAGS, ';' between them, "
                        f"got {item!r}")
    out.append((name.strip(), flags.strip()))
  names = [n for n, _ in out]
  if len(set(names)) != len(names) or "baseline" in names:
    raise ConfigError(f"--settings: names must be distinct and not 'baseline', got {names}")
  return out


def check_args(models: Sequence[str], batch: int, size: int, steps: int, rounds: int,
               dsfernet_official: str = "", dsfernet_script: str = "") -> None:
  for flag, v in (("batch", batch), ("size", size), ("steps", steps), ("rounds", rounds)):
    if v <= 0:
      raise ConfigError(f"--{flag} must be positive, got {v}")
  for m in models:
    if size % SIZE_MULTIPLE[m]:
      raise ConfigError(f"--size: {m} needs a multiple of {SIZE_MULTIPLE[m]}, got {size}")
  if dsfernet_official:
    if not os.path.isdir(dsfernet_official):
      raise ConfigError(f"--dsfernet_official: no such directory: {dsfernet_official}")
    if not os.path.isfile(_from_repo(dsfernet_script)):
      raise ConfigError(f"--dsfernet_script: no such file: {dsfernet_script}")
  if importlib.util.find_spec("torch") is None:
    raise ConfigError("torch is not installed (pip install 'jaxcd[torch]'): the torch side needs it")


def _check_baseline(baseline: str) -> None:
  if baseline and not os.path.isfile(os.path.join(baseline, "jaxcd", "bench.py")):
    raise ConfigError(f"--baseline: {baseline} holds no jaxcd checkout (no jaxcd/bench.py)")


def _from_repo(path: str) -> str:
  return str(REPO / path) if not os.path.isabs(path) else path


def _last_json(cmd: Sequence[str], env: dict[str, str], cwd: Path = REPO) -> dict[str, Any]:
  """Runs cmd from the repository root; its last stdout line that is a JSON object."""
  p = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
  if p.returncode:
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    if err:  # bad input reported by the child: the same one line here
      raise ConfigError(err[-1][len("error: "):])
    raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {one_line(p.stderr[-2000:])}")
  lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
  if not lines:
    raise RuntimeError(f"{' '.join(cmd)} printed no JSON line: {one_line(p.stdout[-500:])}")
  return json.loads(lines[-1])


def child_env(xla_flags: str = "", repo: Path = REPO) -> dict[str, str]:
  """The inherited environment, importing the jaxcd in `repo` (not another install) on the CPU."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
  if xla_flags:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
  return env


def jaxcd_side(model: str, batch: int, size: int, steps: int, env: dict[str, str],
               repo: Path = REPO) -> dict:
  return _last_json([sys.executable, "-m", "jaxcd.bench", "--model", model, "--batch",
                     str(batch), "--size", str(size), "--steps", str(steps), "--json"], env, repo)


def torch_side(model: str, batch: int, size: int, steps: int, env: dict[str, str],
               dsfernet_official: str = "", dsfernet_script: str = "") -> dict:
  if model == "dsfernet" and dsfernet_official:
    r = _last_json([sys.executable, _from_repo(dsfernet_script), dsfernet_official, str(batch),
                    str(size), str(steps)], env)
    return {**r, "impl": r.get("impl", "official-pytorch")}
  return _last_json([sys.executable, "-m", "jaxcd.experiments.vs_torch", "--torch_worker",
                     model, "--batch", str(batch), "--size", str(size), "--steps", str(steps)],
                    env)


def compare(model: str, rnd: int, j: dict, t: dict, batch: int, size: int, steps: int,
            setting: str = "jaxcd", xla_flags: str = "") -> dict:
  row = {"model": model, "setting": setting, "xla_flags": xla_flags, "round": rnd,
         "jaxcd_train_pairs_per_s": j["train_pairs_per_s"],
         "torch_train_pairs_per_s": t["train_pairs_per_s"],
         "jaxcd_fwd_pairs_per_s": j["fwd_pairs_per_s"], "torch_fwd_pairs_per_s": t["fwd_pairs_per_s"],
         "jaxcd_params": j["params"], "torch_params": t["params"],
         "jaxcd_compile_s": j.get("compile_s"), "torch_impl": t.get("impl", "reference"),
         "torch_threads": t.get("threads"), "torch": t.get("torch"),
         "batch": batch, "size": size, "steps": steps}
  row["train_ratio"] = row["jaxcd_train_pairs_per_s"] / row["torch_train_pairs_per_s"]
  row["fwd_ratio"] = row["jaxcd_fwd_pairs_per_s"] / row["torch_fwd_pairs_per_s"]
  return row


def median_row(rows: list[dict]) -> dict:
  """Medians over the rounds of every rate and of the ratios (not a quotient of medians)."""
  med = lambda k: statistics.median(r[k] for r in rows)
  keep = {k: rows[-1][k] for k in ("model", "setting", "xla_flags", "jaxcd_params",
                                   "torch_params", "torch_impl", "torch_threads", "torch",
                                   "batch", "size", "steps")}
  return {**keep, "round": "median", "train_ratio": med("train_ratio"),
          "fwd_ratio": med("fwd_ratio"), "jaxcd_compile_s": med("jaxcd_compile_s"),
          **{k: med(k) for k in RATES}}


def _rotated(items: Sequence, k: int) -> list:
  """Round r runs the settings from the (r-1)-th on: no setting always runs first."""
  k %= max(len(items), 1)
  return list(items[k:]) + list(items[:k])


def run(out: str, models: Sequence[str], batch: int = 2, size: int = 256, steps: int = 3,
        rounds: int = 3, dsfernet_official: str = "",
        dsfernet_script: str = "../shared/bench/dsfernet_torch_step.py",
        xla_flags: str = "", settings: Sequence[tuple[str, str]] = (("jaxcd", ""),),
        baseline: str = "") -> list[dict]:
  """Runs every (round, model) group of subprocesses, then writes the tables; returns the rows."""
  from tqdm.auto import tqdm
  check_args(models, batch, size, steps, rounds, dsfernet_official, dsfernet_script)
  _check_baseline(baseline)
  sides = [(name, f"{xla_flags} {flags}".strip(), REPO) for name, flags in settings]
  if baseline:
    sides.insert(0, ("baseline", xla_flags, Path(baseline).resolve()))
  torch_env = child_env(xla_flags)
  per = {(m, name): [] for m in models for name, _, _ in sides}
  bar = tqdm(total=rounds * len(models) * (len(sides) + 1), desc="vs_torch", dynamic_ncols=True)
  for rnd in range(1, rounds + 1):
    for m in models:
      js = {}
      for name, flags, repo in _rotated(sides, rnd - 1):
        bar.set_postfix_str(f"round {rnd} {m} {name}")
        js[name] = jaxcd_side(m, batch, size, steps, child_env(flags, repo), repo)
        bar.update()
      bar.set_postfix_str(f"round {rnd} {m} torch")
      t = torch_side(m, batch, size, steps, torch_env, dsfernet_official, dsfernet_script)
      bar.update()
      for name, flags, _ in sides:
        row = compare(m, rnd, js[name], t, batch, size, steps, name, flags)
        per[m, name].append(row)
        bar.write(f"round {rnd} {m} {name}: train {row['jaxcd_train_pairs_per_s']:.3g} vs "
                  f"{row['torch_train_pairs_per_s']:.3g} pairs/s (x{row['train_ratio']:.2f}), "
                  f"forward {row['jaxcd_fwd_pairs_per_s']:.3g} vs "
                  f"{row['torch_fwd_pairs_per_s']:.3g} (x{row['fwd_ratio']:.2f})")
  bar.close()
  rows = [r for rs in per.values() for r in rs + [median_row(rs)]]
  write_tables(rows, out)
  return rows


def write_tables(rows: list[dict], out: str) -> tuple[str, str]:
  r0 = rows[0]
  per = lambda rs, k: ", ".join(f"{r[k]:.2f}" for r in rs)
  lines = [f"jaxcd / torch pairs per second on this CPU: batch {r0['batch']}, size {r0['size']}, "
           f"median of {r0['steps']} steps; > 1: jaxcd faster.", "",
           "| model | setting | train ratio per round | median train ratio | forward ratio per "
           "round | median forward ratio | jaxcd / torch pairs/s medians |",
           "|---|---|---|---|---|---|---|"]
  for med in (r for r in rows if r["round"] == "median"):
    rs = [r for r in rows if (r["model"], r["setting"]) == (med["model"], med["setting"])
          and r["round"] != "median"]
    lines.append(
        f"| {med['model']} | {med['setting']} | {per(rs, 'train_ratio')} | "
        f"{med['train_ratio']:.2f} | "
        f"{per(rs, 'fwd_ratio')} | {med['fwd_ratio']:.2f} | "
        f"train {med['jaxcd_train_pairs_per_s']:.3g} / {med['torch_train_pairs_per_s']:.3g}, "
        f"forward {med['jaxcd_fwd_pairs_per_s']:.3g} / {med['torch_fwd_pairs_per_s']:.3g} |")
  return save_table(out, "vs_torch", COLUMNS, rows, lines)


# --- the torch side: one model timed in this (sub)process ---------------------------------------

def _import_torch():
  try:
    import torch
  except ImportError:
    raise ConfigError("torch is not installed (pip install 'jaxcd[torch]'): the torch side "
                      "needs it") from None
  return torch


def _reference(name: str):
  """tests/torch_reference/NAME.py, loaded by path (the package does not ship the tests)."""
  path = TORCH_REFERENCE / f"{name}.py"
  if not path.is_file():
    raise ConfigError(f"--torch_worker: no {path} (the torch models live in the repository's "
                      f"tests/torch_reference/)")
  spec = importlib.util.spec_from_file_location(f"jaxcd_vs_torch_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def torch_model_and_loss(model: str, size: int):
  """(module, loss(outputs, labels_BxHxW)) of the torch side of `model`."""
  torch = _import_torch()
  F = torch.nn.functional
  if model == "fc_siam_diff":
    return _reference("fc_siam_ref").SiamUnetDiff(), F.cross_entropy
  if model == "rcr":
    return _reference("rcr_ref").CDModel(), F.cross_entropy
  if model == "dsfernet":
    ref = _reference("dsfernet_ref")
    weight = torch.tensor([1.048, 21.79])  # the official Train.py's class weights

    def loss(outs, y):
      out, out4, out5 = outs
      dice = 0.0
      for o, k in ((out4, 8), (out5, 16)):
        yk = F.max_pool2d(y[:, None].float(), k).long()[:, 0]
        dice = dice + ref.dice_loss(o, F.one_hot(yk, 2).permute(0, 3, 1, 2).float())
      return F.cross_entropy(out, y, weight=weight) + 0.01 * 0.5 * dice
    return ref.MyNet(input_size=size), loss
  raise ConfigError(f"--torch_worker: choose from {', '.join(MODELS)}, got {model!r}")


def torch_worker(model: str, batch: int, size: int, steps: int) -> dict:
  """Times the torch model's Adam step and eval forward; the dict of one JSON line."""
  check_args([model] if model in MODELS else [], batch, size, steps, 1)
  torch = _import_torch()
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  net, loss_fn = torch_model_and_loss(model, size)
  opt = torch.optim.Adam(net.parameters(), lr=1e-4)
  a, b = torch.randn(batch, 3, size, size), torch.randn(batch, 3, size, size)
  y = torch.randint(0, 2, (batch, size, size))

  def step():
    opt.zero_grad()
    outs = net(a, b)
    loss_fn(outs, y).backward()
    opt.step()

  def median_s(call, n):
    times = []
    for _ in range(n):
      t0 = time.perf_counter()
      call()
      times.append(time.perf_counter() - t0)
    return statistics.median(times)

  net.train()
  median_s(step, 2)  # warm-up: allocator and oneDNN primitive caches
  train_s = median_s(step, steps)
  net.eval()
  with torch.no_grad():
    median_s(lambda: net(a, b), 1)
    fwd_s = median_s(lambda: net(a, b), steps)
  return {"impl": "reference", "model": model, "torch": torch.__version__,
          "threads": torch.get_num_threads(), "params": sum(p.numel() for p in net.parameters()),
          "batch": batch, "size": size, "train_step_s": train_s, "fwd_s": fwd_s,
          "train_pairs_per_s": batch / train_s, "fwd_pairs_per_s": batch / fwd_s}


def main(argv):
  del argv
  from absl import flags
  from jaxcd import cli
  f = flags.FLAGS
  if f.torch_worker:
    cli.print_json(cli.run_guarded(lambda: torch_worker(f.torch_worker, f.batch, f.size, f.steps)))
    return
  rows = cli.run_guarded(lambda: run(f.out, parse_models(f.models), f.batch, f.size, f.steps,
                                     f.rounds, f.dsfernet_official, f.dsfernet_script,
                                     f.xla_flags, parse_settings(f.settings), f.baseline))
  cli.print_json(rows)


if __name__ == "__main__":
  from absl import flags

  from jaxcd import cli
  flags.DEFINE_string("out", "runs/vs_torch", "Output folder of vs_torch.csv and vs_torch.md.")
  flags.DEFINE_string("models", ",".join(MODELS), "Comma-separated, from " + ", ".join(MODELS))
  flags.DEFINE_integer("batch", 2, "Pairs per step, both sides.")
  flags.DEFINE_integer("size", 256, "Image side, both sides.")
  flags.DEFINE_integer("steps", 3, "Timed calls per measurement (median).")
  flags.DEFINE_integer("rounds", 3, "Alternating jaxcd/torch rounds per model.")
  flags.DEFINE_string("dsfernet_official", "", "A git dir of the official Dsfer-Net: time it "
                      "instead of tests/torch_reference/dsfernet_ref.py.")
  flags.DEFINE_string("dsfernet_script", "../shared/bench/dsfernet_torch_step.py",
                      "Timer of the official Dsfer-Net (relative to the repository root).")
  flags.DEFINE_string("xla_flags", "", "Appended to XLA_FLAGS of jaxcd's side.")
  flags.DEFINE_string("settings", "jaxcd=", "NAME=XLA_FLAGS;...: jaxcd's side once per setting "
                      "in every round (on top of --xla_flags), all against one torch side.")
  flags.DEFINE_string("baseline", "", "Another jaxcd checkout (e.g. a worktree of an older "
                      "commit), timed in the same rounds as setting `baseline`.")
  flags.DEFINE_string("torch_worker", "", "Internal: time this model's torch side, print JSON.")
  cli.run_app(main)
