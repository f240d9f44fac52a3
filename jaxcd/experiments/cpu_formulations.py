"""Op formulations on the CPU (issue 17): jaxcd's current way of computing an op against an
alternative and PyTorch's op, forward and backward apart, at the shapes Dsfer-Net runs at batch 2,
256x256.

  python -m jaxcd.experiments.cpu_formulations --out DIR [--reps 5] [--quick] [--notorch] \
      [--experiments upsample,layernorm,hopfield,conv] [--torch_threads 2]

Whole-step profiles (docs/results.md, "CPU speed (issue 17)") bounded these ops only by their
share of a step; this times each one alone. Shapes come from the model (`shapes`; VGG16 levels
256/128/64/32/16 with 64/128/256/512/512 channels; the encoder and the DSFR blocks see A and B
stacked, batch 4):
  upsample   align-corners bilinear 2x, the decoder's four `upsample2x` inputs (batch 2): jaxcd's
             gathers vs two interpolation-matrix matmuls (rows, then columns) vs F.interpolate.
  layernorm  LayerNorm over (C, H, W) per sample at levels 4 and 5: the model's flax LayerNorm
             (two-pass variance) vs one variadic reduction of x and x^2 (Var = E[x^2] - E[x]^2)
             vs F.layer_norm over NCHW.
  hopfield   the DSFR retrieval's attention after its projections (1024 and 256 tokens, dim 512,
             one head, float32): jax.nn.dot_product_attention (impl "xla", the model's) vs einsum
             + softmax in float32 (`hopfield_reference`'s) vs F.scaled_dot_product_attention.
  conv       one 3x3 SAME convolution at three VGG shapes (batch 2, as `bench --kernel
             layer_grads`; the encoder runs them at batch 4): NHWC/HWIO through
             `jaxcd.models.conv` (per-tap kernel gradient on CPU) vs NCHW/OIHW with lax's own
             convolution and gradients vs F.conv2d on NCHW.
Thread settings are not an experiment here: XLA's were swept on whole steps (docs/results.md,
"XLA CPU options on whole steps"); XLA uses every core, torch --torch_threads.

Every jax cell is jitted (`lower().compile()`), called once to warm up, then timed as the median
of --reps calls, each ended by `block_until_ready`; torch cells likewise (torch CPU ops are
synchronous). "backward" is the value and gradient of <f(inputs), g> for a fixed random cotangent
g with respect to every input (LayerNorm's affine and the conv kernel included), so it includes
the forward; torch's is the forward plus `backward(g)`. Writes OUT/cpu_formulations.csv and
OUT/cpu_formulations.md and prints the rows as a JSON last line.
"""
import dataclasses
import os
import platform
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcd.bench import _median_seconds
from jaxcd.errors import ConfigError
from jaxcd.experiments import parse_choices, save_table
from jaxcd.models import conv as jconv
from jaxcd.models.dsfernet import layer_norm, resize_matmul_align_corners, upsample2x
from jaxcd.models.hopfield import einsum_attention
from jaxcd.models.vgg import VGG16_WIDTHS

EXPERIMENTS = ("upsample", "layernorm", "hopfield", "conv")
COLUMNS = ("experiment", "shape", "pass", "jaxcd_ms", "alternative_ms", "torch_ms",
           "alternative_speedup", "jaxcd_torch_ratio", "max_abs_diff", "torch_max_abs_diff",
           "jaxcd_impl", "alternative_impl", "torch_impl", "reps")
LN_EPS = layer_norm("chw").epsilon  # Dsfer-Net's, as PyTorch's


# --- the shapes -----------------------------------------------------------------------------------

def shapes(batch: int = 2, size: int = 256, div: int = 1) -> dict[str, list[tuple[int, ...]]]:
  """Dsfer-Net's shapes per experiment for `batch` pairs of size x size (channels / div):
  upsample: the decoder's inputs to `upsample2x` (B, H, W, C); layernorm: the (2B, H, W, C) maps
  of levels 4 and 5; hopfield: (2B, tokens, heads, dim) of the same levels; conv: (B, H, W, Cin,
  Cout) of VGG's 3x3 convs at levels 1, 3 and 4."""
  c = [w[0] // div for w in VGG16_WIDTHS]  # 64, 128, 256, 512, 512
  side = [size >> i for i in range(5)]
  return {
      # dec51 (512 @ 1/16), dec41 (256 @ 1/8), dec31 (128 @ 1/4), dec21 (64 @ 1/2)
      "upsample": [(batch, side[4], side[4], c[4]), (batch, side[3], side[3], c[2]),
                   (batch, side[2], side[2], c[1]), (batch, side[1], side[1], c[0])],
      "layernorm": [(2 * batch, side[3], side[3], c[3]), (2 * batch, side[4], side[4], c[4])],
      "hopfield": [(2 * batch, side[3] ** 2, 1, c[3]), (2 * batch, side[4] ** 2, 1, c[4])],
      "conv": [(batch, side[0], side[0], c[0], c[0]), (batch, side[2], side[2], c[2], c[2]),
               (batch, side[3], side[3], c[3], c[3])],
  }


def quick_shapes() -> dict[str, list[tuple[int, ...]]]:
  """Tiny shapes of the same structure (tests); convs keep >= 32 output channels so that
  jaxcd's side takes the per-tap kernel gradient (`conv.TAPS_MIN_OUT`)."""
  s = shapes(batch=1, size=32, div=8)
  s["conv"] = [(1, 16, 16, 32, 32), (1, 8, 8, 64, 64)]
  return s


# --- the formulations -----------------------------------------------------------------------------

def upsample2x_matmul(x_BxHxWxC: jax.Array) -> jax.Array:
  return resize_matmul_align_corners(x_BxHxWxC, 2 * x_BxHxWxC.shape[1], 2 * x_BxHxWxC.shape[2])


def layernorm_model(x_BxHxWxC: jax.Array, scale_HxWxC: jax.Array,
                    bias_HxWxC: jax.Array) -> jax.Array:
  """Dsfer-Net's LayerNorm ("chw"): the model's own module."""
  return layer_norm("chw").apply({"params": {"scale": scale_HxWxC, "bias": bias_HxWxC}}, x_BxHxWxC)


@jax.custom_jvp
def _sums(x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum x, sum x^2) per sample, one pass over x: one variadic reduction to per-channel partials,
  then their sum. Straight to a scalar, XLA:CPU's variadic reduce lost digits as one running sum
  would (relative error ~3e-5 over a 32x32x512 map, jnp.sum's 7e-8); per channel, ~1e-7."""
  zero = jnp.zeros((), x_BxHxWxC.dtype)
  s_BxC, s2_BxC = lax.reduce((x_BxHxWxC, x_BxHxWxC * x_BxHxWxC), (zero, zero),
                             lambda a, b: (a[0] + b[0], a[1] + b[1]), (1, 2))
  return s_BxC.sum(-1), s2_BxC.sum(-1)


@_sums.defjvp
def _sums_jvp(primals, tangents):
  # The sums are linear in (x, x^2): without this, JAX differentiates a generic reduction as a
  # log-depth tree of slices and pads.
  (x,), (dx,) = primals, tangents
  axes = tuple(range(1, x.ndim))
  return _sums(x), (jnp.sum(dx, axes), jnp.sum(2 * x * dx, axes))


def layernorm_one_pass(x_BxHxWxC: jax.Array, scale_HxWxC: jax.Array,
                       bias_HxWxC: jax.Array) -> jax.Array:
  """LayerNorm over (H, W, C) with Var = E[x^2] - E[x]^2 from one reduction (flax's
  `use_fast_variance`, but one reduce op). Cancels digits when |mean| >> std."""
  n = int(np.prod(x_BxHxWxC.shape[1:]))
  s, s2 = _sums(x_BxHxWxC)
  mean = (s / n)[:, None, None, None]
  var = jnp.maximum((s2 / n)[:, None, None, None] - mean * mean, 0)
  return (x_BxHxWxC - mean) * lax.rsqrt(var + LN_EPS) * scale_HxWxC + bias_HxWxC


def attention_xla(q_BxNxHxE: jax.Array, k_BxMxHxE: jax.Array, v_BxMxHxE: jax.Array) -> jax.Array:
  """`HopfieldRetrieval`'s attention as the model runs it (impl "xla")."""
  return jax.nn.dot_product_attention(q_BxNxHxE, k_BxMxHxE, v_BxMxHxE,
                                      scale=q_BxNxHxE.shape[-1] ** -0.5, implementation="xla")


def attention_einsum(q_BxNxHxE: jax.Array, k_BxMxHxE: jax.Array,
                     v_BxMxHxE: jax.Array) -> jax.Array:
  """`hopfield_reference`'s attention: two einsums, softmax in float32."""
  return einsum_attention(q_BxNxHxE, k_BxMxHxE, v_BxMxHxE, q_BxNxHxE.shape[-1] ** -0.5)


_PAD1 = ((1, 1), (1, 1))  # VGG's explicit 3x3 padding (= SAME)


def conv_nhwc(x_BxHxWxC: jax.Array, w_HxWxIxO: jax.Array) -> jax.Array:
  """jaxcd's convolution (what `models.conv.Conv` calls): per-tap kernel gradient on CPU."""
  return jconv.conv_general_dilated(x_BxHxWxC, w_HxWxIxO, (1, 1), _PAD1,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_nchw(x_BxCxHxW: jax.Array, w_OxIxHxW: jax.Array) -> jax.Array:
  """The same convolution in PyTorch's layout, lax's own lowering and gradients."""
  return lax.conv_general_dilated(x_BxCxHxW, w_OxIxHxW, (1, 1), _PAD1,
                                  dimension_numbers=("NCHW", "OIHW", "NCHW"))


# --- the cases ------------------------------------------------------------------------------------

NHWC_TO_NCHW = (0, 3, 1, 2)


@dataclasses.dataclass
class Case:
  """One op at one shape. Inputs are in jaxcd's layout; `alt_perms` / `torch_perms` transpose
  each input into the alternative's / torch's layout (None: the same), `*_out_perm` the output."""
  experiment: str
  shape: str
  inputs: tuple[np.ndarray, ...]
  current: Callable
  alternative: Callable
  jaxcd_impl: str
  alternative_impl: str
  torch_impl: str
  torch_fn: Callable[..., Any]  # (torch module, *tensors) -> tensor
  alt_perms: tuple | None = None
  alt_out_perm: tuple | None = None
  torch_perms: tuple | None = None
  torch_out_perm: tuple | None = None


def _tx(a, perm):
  return a if perm is None else np.ascontiguousarray(np.transpose(a, perm))


def _untx(a, perm):
  return a if perm is None else np.transpose(a, np.argsort(perm))


def _dims(shape: Sequence[int]) -> str:
  return "x".join(str(d) for d in shape)


def build_cases(spec: dict[str, list[tuple[int, ...]]],
                experiments: Sequence[str] = EXPERIMENTS, seed: int = 0) -> list[Case]:
  """The cases of `spec` (as `shapes`), inputs drawn from one seeded generator."""
  rng = np.random.default_rng(seed)
  normal = lambda *s: rng.standard_normal(s, dtype=np.float32)  # noqa: E731
  cases = []
  if "upsample" in experiments:
    for s in spec["upsample"]:
      cases.append(Case(
          "upsample", _dims(s), (normal(*s),), upsample2x, upsample2x_matmul,
          "gathers (dsfernet.upsample2x)", "2 matmuls (rows, columns)",
          "F.interpolate bilinear align_corners NCHW",
          lambda t, x: t.nn.functional.interpolate(x, scale_factor=2, mode="bilinear",
                                                   align_corners=True),
          torch_perms=(NHWC_TO_NCHW,), torch_out_perm=NHWC_TO_NCHW))
  if "layernorm" in experiments:
    for s in spec["layernorm"]:
      x = np.maximum(normal(*s), 0)  # ReLU features, as VGG's taps: mean and std alike
      scale, bias = 1 + 0.1 * normal(*s[1:]), 0.1 * normal(*s[1:])
      cases.append(Case(
          "layernorm", _dims(s), (x, scale, bias), layernorm_model, layernorm_one_pass,
          "flax LayerNorm, two-pass variance", "one variadic reduce (x, x^2)",
          "F.layer_norm NCHW",
          lambda t, x, w, b: t.nn.functional.layer_norm(x, x.shape[1:], w, b, LN_EPS),
          torch_perms=(NHWC_TO_NCHW, (2, 0, 1), (2, 0, 1)), torch_out_perm=NHWC_TO_NCHW))
  if "hopfield" in experiments:
    for s in spec["hopfield"]:
      q, k, v = normal(*s), normal(*s), normal(*s)
      cases.append(Case(
          "hopfield", _dims(s), (q, k, v), attention_xla, attention_einsum,
          "jax.nn.dot_product_attention xla", "einsum + softmax f32",
          "F.scaled_dot_product_attention",
          lambda t, q, k, v: t.nn.functional.scaled_dot_product_attention(
              q, k, v, scale=q.shape[-1] ** -0.5),
          torch_perms=((0, 2, 1, 3),) * 3, torch_out_perm=(0, 2, 1, 3)))
  if "conv" in experiments:
    for b, h, w, cin, cout in spec["conv"]:
      x = normal(b, h, w, cin)
      kernel = normal(3, 3, cin, cout) / np.float32(np.sqrt(9 * cin))
      perms = (NHWC_TO_NCHW, (3, 2, 0, 1))
      cases.append(Case(
          "conv", f"{b}x{h}x{w} {cin}->{cout}", (x, kernel), conv_nhwc, conv_nchw,
          "NHWC/HWIO jaxcd.models.conv", "NCHW/OIHW lax", "F.conv2d NCHW",
          lambda t, x, w: t.nn.functional.conv2d(x, w, padding=1),
          alt_perms=perms, alt_out_perm=NHWC_TO_NCHW, torch_perms=perms,
          torch_out_perm=NHWC_TO_NCHW))
  return cases


# --- timing ---------------------------------------------------------------------------------------

def _cotangent(case: Case) -> np.ndarray:
  out = jax.eval_shape(case.current, *case.inputs)
  return np.random.default_rng(1).standard_normal(out.shape, dtype=np.float32)


def jax_pass(fn: Callable, inputs: Sequence[np.ndarray], g: np.ndarray,
             backward: bool) -> Callable[[], Any]:
  """A compiled call of fn (forward) or of the value and gradients of <fn(inputs), g>; g is an
  argument, not a constant folded into the program."""
  args = [jnp.asarray(a) for a in inputs]
  if backward:
    n = len(args)
    loss = lambda *xs: jnp.vdot(fn(*xs[:n]), xs[n])  # noqa: E731
    f = jax.value_and_grad(loss, argnums=tuple(range(n)))
    args.append(jnp.asarray(g))
  else:
    f = fn
  compiled = jax.jit(f).lower(*args).compile()
  return lambda: compiled(*args)


def torch_pass(torch, case: Case, g: np.ndarray, backward: bool) -> Callable[[], Any]:
  """The torch op on torch's layout: forward under no_grad, or forward plus backward(g); the
  call returns (output) or (input gradients), each in torch's layout."""
  perms = case.torch_perms or (None,) * len(case.inputs)
  ts = [torch.from_numpy(_tx(a, p)) for a, p in zip(case.inputs, perms)]
  if not backward:
    def fwd():
      with torch.no_grad():
        return (case.torch_fn(torch, *ts),)
    return fwd
  gt = torch.from_numpy(_tx(g, case.torch_out_perm))
  for t in ts:
    t.requires_grad_(True)

  def bwd():
    for t in ts:
      t.grad = None
    case.torch_fn(torch, *ts).backward(gt)
    return tuple(t.grad for t in ts)
  return bwd


def max_abs_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def time_case(case: Case, backward: bool, reps: int, torch=None) -> dict[str, Any]:
  """One row: the three sides' median ms and the differences from jaxcd's values (the output
  forward, every input's gradient backward)."""
  g = _cotangent(case)
  alt_perms = case.alt_perms or (None,) * len(case.inputs)
  alt_inputs = [_tx(a, p) for a, p in zip(case.inputs, alt_perms)]
  cur = jax_pass(case.current, case.inputs, g, backward)
  alt = jax_pass(case.alternative, alt_inputs, _tx(g, case.alt_out_perm), backward)
  # value_and_grad gives (value, gradients): compare the gradients.
  values = lambda out: [np.asarray(a) for a in (out[1] if backward else (out,))]  # noqa: E731
  ref, alt_vals = values(cur()), values(alt())  # also the warm-up calls
  back = alt_perms if backward else (case.alt_out_perm,)
  row = {"experiment": case.experiment, "shape": case.shape,
         "pass": "backward" if backward else "forward",
         "jaxcd_ms": _median_seconds(cur, reps) * 1e3,
         "alternative_ms": _median_seconds(alt, reps) * 1e3,
         "torch_ms": None,
         "max_abs_diff": max_abs_diff(ref, [_untx(a, p) for a, p in zip(alt_vals, back)]),
         "torch_max_abs_diff": None,
         "jaxcd_impl": case.jaxcd_impl, "alternative_impl": case.alternative_impl,
         "torch_impl": case.torch_impl if torch else "", "reps": reps}
  if torch is not None:
    call = torch_pass(torch, case, g, backward)
    t_vals = [t.detach().numpy() for t in call()]  # the warm-up call
    t_perms = case.torch_perms or (None,) * len(case.inputs)
    back = t_perms if backward else (case.torch_out_perm,)
    row["torch_max_abs_diff"] = max_abs_diff(ref, [_untx(a, p) for a, p in zip(t_vals, back)])
    def torch_call() -> None:  # torch CPU ops are synchronous: nothing to wait for
      call()
    row["torch_ms"] = _median_seconds(torch_call, reps) * 1e3
  row["alternative_speedup"] = row["jaxcd_ms"] / row["alternative_ms"]
  row["jaxcd_torch_ratio"] = row["torch_ms"] / row["jaxcd_ms"] if row["torch_ms"] else None
  return row


def import_torch():
  """torch, or None when it is not installed."""
  try:
    import torch
  except ImportError:
    return None
  return torch


# --- the experiment -------------------------------------------------------------------------------

def parse_experiments(text: str) -> list[str]:
  return parse_choices(text, EXPERIMENTS, "experiments")


def check_args(reps: int, torch_threads: int) -> None:
  for flag, v in (("reps", reps), ("torch_threads", torch_threads)):
    if v <= 0:
      raise ConfigError(f"--{flag} must be positive, got {v}")


def run(out: str, reps: int = 5, quick: bool = False, use_torch: bool = True,
        torch_threads: int = 2, experiments: Sequence[str] = EXPERIMENTS) -> list[dict]:
  """Times every case forward and backward, writes the tables; returns the rows."""
  from tqdm.auto import tqdm
  check_args(reps, torch_threads)
  experiments = parse_experiments(",".join(experiments))
  torch = import_torch() if use_torch else None
  old_threads = torch.get_num_threads() if torch else None
  cases = build_cases(quick_shapes() if quick else shapes(), experiments)
  rows = []
  bar = tqdm(total=2 * len(cases), desc="cpu_formulations", dynamic_ncols=True)
  try:
    if torch:
      torch.set_num_threads(torch_threads)
    for case in cases:
      for backward in (False, True):
        bar.set_postfix_str(f"{case.experiment} {case.shape} {'bwd' if backward else 'fwd'}")
        rows.append(time_case(case, backward, reps, torch))
        bar.update()
  finally:
    bar.close()
    if torch:
      torch.set_num_threads(old_threads)
  write_tables(rows, out, quick, torch, torch_threads if torch else None)
  return rows


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    return names[0] if names else platform.processor()
  except OSError:
    return platform.processor() or "unknown CPU"


def write_tables(rows: list[dict], out: str, quick: bool = False, torch=None,
                 torch_threads: int | None = None) -> tuple[str, str]:
  ms = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
  ratio = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
  side = (f"torch {torch.__version__}, {torch_threads} threads" if torch
          else "torch: not installed or disabled")
  reps = rows[0]["reps"] if rows else "-"
  lines = [f"Op formulations on {_cpu_name()} ({os.cpu_count()} cores), jax {jax.__version__}, "
           f"{side}; {'--quick shapes; ' if quick else ''}median ms of {reps} calls after a "
           "warm-up. Speed-up: jaxcd ms / alternative ms (> 1: the alternative is faster); "
           "jaxcd/torch: torch ms / jaxcd ms (> 1: jaxcd is faster); max abs diff: alternative "
           "vs jaxcd (the output forward, every gradient backward). Shapes in jaxcd's layout: "
           "BxHxWxC; hopfield B x tokens x heads x dim; conv BxHxW Cin->Cout.", "",
           "| experiment | shape | pass | jaxcd ms | alternative ms | torch ms | alternative/jaxcd "
           "speed-up | jaxcd/torch ratio | max abs diff |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['experiment']} | {r['shape']} | {r['pass']} | {ms(r['jaxcd_ms'])} | "
                 f"{ms(r['alternative_ms'])} | {ms(r['torch_ms'])} | "
                 f"{ratio(r['alternative_speedup'])} | {ratio(r['jaxcd_torch_ratio'])} | "
                 f"{r['max_abs_diff']:.1e} |")
  lines += ["", "| experiment | jaxcd | alternative | torch |", "|---|---|---|---|"]
  seen = {}
  for r in rows:
    seen.setdefault(r["experiment"], r)
  for e, r in seen.items():
    lines.append(f"| {e} | {r['jaxcd_impl']} | {r['alternative_impl']} | "
                 f"{r['torch_impl'] or '-'} |")
  return save_table(out, "cpu_formulations", COLUMNS, rows, lines)


def main(argv):
  del argv
  from absl import flags
  from jaxcd import cli
  f = flags.FLAGS
  rows = cli.run_guarded(lambda: run(f.out, f.reps, f.quick, f.torch, f.torch_threads,
                                     parse_experiments(f.experiments)))
  cli.print_json(rows)


if __name__ == "__main__":
  from absl import flags

  from jaxcd import cli
  flags.DEFINE_string("out", "runs/cpu_formulations", "Output folder of cpu_formulations.csv/.md.")
  flags.DEFINE_integer("reps", 5, "Timed calls per cell (median), after one warm-up call.")
  flags.DEFINE_bool("quick", False, "Tiny shapes of the same structure (tests), not Dsfer-Net's.")
  flags.DEFINE_bool("torch", True, "Time PyTorch's op too when torch is importable (--notorch: "
                    "leave the torch column empty).")
  flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads for the torch column.")
  flags.DEFINE_string("experiments", ",".join(EXPERIMENTS), "Comma-separated, from " +
                      ", ".join(EXPERIMENTS))
  cli.run_app(main)
