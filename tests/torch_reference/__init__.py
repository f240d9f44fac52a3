"""PyTorch re-statements of official models, for parity tests only (imported behind
`pytest.importorskip("torch")`; this file itself needs only numpy)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np


def randomize_batch_norm(model) -> None:
  """Non-trivial BatchNorm statistics and affine parameters (drawn from torch's global RNG), so a
  parity test in eval mode exercises them."""
  import torch
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)


def random_pair(batch: int, hw: tuple[int, int], rng: np.random.Generator | None = None,
                bands: int = 3) -> tuple[np.ndarray, np.ndarray]:
  """Two N(0, 1) dates, NCHW float32, drawn from `rng` (default_rng(0) if None)."""
  rng = np.random.default_rng(0) if rng is None else rng
  a, b = (rng.standard_normal((batch, bands, *hw)).astype(np.float32) for _ in range(2))
  return a, b


@dataclasses.dataclass
class ParityRun:
  """One parity set-up run: the reference and jaxcd's model with its converted weights, on the
  same inputs. Each parity test module builds one with its `parity_run()`; the tests assert on it
  and tests/parity_table.py prints it."""
  reference: Any  # the torch module, eval mode
  got: dict[str, np.ndarray]  # jaxcd's outputs, NHWC (distance maps NHW)
  want: dict[str, np.ndarray]  # the reference's outputs, same names and layouts
  inputs: tuple[np.ndarray, np.ndarray]  # the two dates, NCHW float32
  state_dict: dict[str, np.ndarray]  # what the converter was given
  variables: Any  # what it returned
  apply: Callable  # how `got` was computed: apply(variables, a_NHWC, b_NHWC)
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # a test's own by-products
