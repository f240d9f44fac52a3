"""Parity of jaxcd's models with their PyTorch references, as one markdown table.

  python tests/parity_table.py [--models dsfernet,rcr,...] [--out FILE.md]

For each model, the row runs the parity set-up of the model's test module (its `parity_run()`,
which the parity test asserts on: one home per set-up) at the official sizes: the reference
built with a fixed seed and randomized BatchNorm statistics in eval mode, its state dict
converted with jaxcd.weights, both run on the same random pair. It prints the largest absolute
difference of the model's output (the logits, or the distance map where that is the official
output), the largest |value| of the reference's, their ratio over max(1, largest), and the check
the test makes, with its value here. A reference that cannot be built (no torch, an error) says
so in its row. XLA_FLAGS are the caller's (the tests run with
--xla_backend_optimization_level=0, tests/conftest.py). Minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import inspect
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: `tests` and `jaxcd` from this checkout
  sys.path.insert(0, str(REPO))

# How each test compares (max_diff is max |jaxcd - torch|, largest is max |torch|), and the
# markdown that states it; `{tol}` is the module's PARITY_TOLERANCE.
MEASURES = {
    "l2": (lambda got, want: float(np.linalg.norm(got - want) / np.linalg.norm(want)),
           "‖jaxcd − torch‖₂ / ‖torch‖₂ < {tol:.0e}"),
    "max_over_1": (lambda got, want: float(np.abs(got - want).max() / max(1.0, np.abs(want).max())),
                   "max_diff ≤ {tol:.0e} · max(1, largest)"),
    "max_over_1_strict": (lambda got, want: float(np.abs(got - want).max()
                                                  / max(1.0, np.abs(want).max())),
                          "max_diff / max(1, largest) < {tol:.0e}"),
    "max_over_largest": (lambda got, want: float(np.abs(got - want).max() / np.abs(want).max()),
                         "max_diff ≤ {tol:.0e} · largest"),
}


@dataclasses.dataclass(frozen=True)
class Case:
  module: str  # the test module: its parity_run() and PARITY_TOLERANCE
  test: str  # the test that asserts the tolerance
  output: str  # the output compared
  measure: str  # a key of MEASURES: how that test compares
  kwargs: dict = dataclasses.field(default_factory=dict)  # parity_run's arguments, official sizes
  note: str = ""  # what differs from the official set-up, or from the test's


CASES = {
    "dsfernet": Case("tests.test_convert", "test_converted_dsfernet_matches_torch_in_eval_mode",
                     "logits", "l2",
                     note="input_size 64 (official 256): the (C, H, W) LayerNorms are built for "
                          "the input size, hence 32,857,190 parameters (34,085,990 at 256); all "
                          "other sizes official. The test runs the same."),
    "rcr": Case("tests.test_convert_rcr", "test_official_model_matches_torch_in_eval_and_train_mode",
                "logits", "l2",
                note="width 64, deep stem: the official network (46.85 M). The test runs width 16 "
                     "(eval and train mode) with the same tolerance."),
    "snunet": Case("tests.models.test_snunet", "test_parity_with_the_torch_reference[32]", "logits",
                   "max_over_1", {"width": 32}, note="width 32, the official SNUNet-CD/32."),
    "dsamnet": Case("tests.models.test_dsamnet", "test_parity_with_the_torch_reference", "distance",
                    "max_over_1"),
    "stanet": Case("tests.models.test_stanet", "test_parity_with_the_torch_reference", "distance",
                   "max_over_1_strict",
                   note="PAM; attention weights sharpened (stanet_ref.sharpen_attention) so the "
                        "attention matters."),
    "changeformer": Case("tests.models.test_changeformer", "test_parity_of_the_official_structure",
                         "logits", "max_over_largest", {"batch": 2},
                         note="embed_dim 256, the official sizes; LayerNorm affines randomized "
                              "too. The test runs batch 1."),
    "vct": Case("tests.models.test_vct", "test_parity_with_the_torch_reference_and_its_cross_entropy",
                "logits", "max_over_largest",
                note="top_k 100 of the 16x16 feature pixels of a 64x64 input (official: 1000 of "
                     "the 64x64 of a 256x256 input; top_k changes no weight). The parameters are the "
                     "official module's, with ResNet-18's layer4 and fc, which its forward does "
                     "not use (3,500,386 used)."),
}

COLUMNS = ("model", "reference (file: class)", "parameters", "output compared", "input",
           "max abs diff", "largest abs (reference)", "relative", "tolerance the test asserts",
           "the test's measure")


def _reference_cell(ref) -> str:
  cls = type(ref)
  path = Path(inspect.getsourcefile(cls)).resolve()
  try:
    path = path.relative_to(REPO)
  except ValueError:
    pass
  return f"`{path.as_posix()}`: `{cls.__name__}`"


def row(name: str, case: Case) -> list[str]:
  """One table row; the error in the row if the set-up fails (torch missing included)."""
  try:
    import pytest
    skipped = (pytest.skip.Exception,)  # pytest.importorskip without torch
  except ImportError:
    skipped = ()
  try:
    module = importlib.import_module(case.module)
    run = module.parity_run(**case.kwargs)
  except (Exception, *skipped) as e:  # noqa: BLE001 (the row says what went wrong)
    msg = (str(e).strip().splitlines() or [""])[0].replace("|", "\\|")
    return [name, f"not built: {type(e).__name__}: {msg}"] + [""] * (len(COLUMNS) - 2)
  got = np.asarray(run.got[case.output], np.float64)
  want = np.asarray(run.want[case.output], np.float64)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  diff = float(np.abs(got - want).max())
  largest = float(np.abs(want).max())
  tol = module.PARITY_TOLERANCE
  fn, text = MEASURES[case.measure]
  others = [k for k in run.want if k != case.output]
  output = case.output + (f" (the test also checks {', '.join(others)})" if others else "")
  params = sum(p.numel() for p in run.reference.parameters())
  value = fn(got, want)
  return [name, _reference_cell(run.reference), f"{params:,}", output,
          "×".join(map(str, run.inputs[0].shape)) + " per date, NCHW",
          f"{diff:.2e}", f"{largest:.3g}", f"{diff / max(1.0, largest):.2e}",
          text.format(tol=tol) + f" (`{case.test}`)",
          f"{value:.2e} ({'within' if value < tol else 'OUTSIDE'})"]


def table(names: list[str]) -> str:
  import jax
  try:
    import torch
    torch_version = torch.__version__
  except ImportError:
    torch_version = "not installed"
  rows = []
  for name in names:
    t0 = time.perf_counter()
    rows.append(row(name, CASES[name]))
    print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    gc.collect()
  lines = [f"Python {platform.python_version()}, jax {jax.__version__} "
           f"({jax.default_backend()}), torch {torch_version}; "
           "max_diff = max |jaxcd − torch|, largest = max |torch|, "
           "relative = max_diff / max(1, largest).", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  notes = [f"- `{n}`: {CASES[n].note}" for n in names if CASES[n].note]
  if notes:
    lines += ["", *notes]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(CASES),
                 help=f"comma-separated, of {', '.join(CASES)} (default: all)")
  p.add_argument("--out", help="also write the table to this markdown file")
  args = p.parse_args(argv)
  names = [n.strip() for n in args.models.split(",") if n.strip()]
  unknown = [n for n in names if n not in CASES]
  if unknown:
    p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
  text = table(names)
  print(text, end="")
  if args.out:
    Path(args.out).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
