"""Change scores of pairs of any size through a model of bounded input: overlapping windows,
blended with a linear-ramp window so seams vanish. `jaxcd.predict` maps scenes with it and
`steps.evaluate` scores the pairs larger than the evaluation window with it, so both give one
change map for one pair."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from jaxcd.errors import ConfigError, DataError

# Windows are multiples of this so every network's down/up-sampling path (up to 5 poolings) lines
# up exactly; smaller multiples would rely on the decoder's edge padding.
SIZE_MULTIPLE = 32
DEFAULT_EVAL_TILE, DEFAULT_EVAL_OVERLAP = 256, 64

PredictFn = Callable[[np.ndarray, np.ndarray], Any]  # (a_BxHxWxC, b_BxHxWxC) -> BxHxW score


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  """Offsets of the fewest windows of `tile` that cover [0, size) overlapping by >= `overlap`.

  The first starts at 0, the last ends at `size` (edge windows stay inside the image), and the
  rest are evenly spaced: shifting only the last window would leave one narrow, deep overlap
  where the blend is worst.
  """
  if size <= tile:
    return [0]
  n = -(-(size - tile) // (tile - overlap)) + 1
  return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def ramp_window(tile: int, overlap: int) -> np.ndarray:
  """1-D blending weights: linear ramps over `overlap` pixels at both ends, 1 in between.

  Where two regularly spaced tiles overlap their ramps sum to 1 (a partition of unity), so the
  blend is a smooth cross-fade; weights stay > 0, so pixels covered by one tile edge keep it.
  """
  if overlap <= 0:
    return np.ones(tile, np.float32)
  i = np.arange(tile, dtype=np.float32) + 0.5
  return np.minimum(1.0, np.minimum(i, tile - i) / overlap).astype(np.float32)


def _tile_side(size: int, tile: int, multiple: int, fixed: bool) -> int:
  if fixed or size > tile:
    return tile
  # Image fits: one pass over the image padded only up to the next size the model takes.
  return min(tile, -(-size // multiple) * multiple)


def sliding_window_predict(predict_fn: PredictFn, a_HxWxC: np.ndarray, b_HxWxC: np.ndarray,
                           tile: int = 256, overlap: int = 64, batch: int = 8,
                           multiple: int = SIZE_MULTIPLE, fixed_size: bool = False,
                           progress: bool = False, desc: str = "tiles") -> np.ndarray:
  """HxW float32 change score of a pair of any size.

  Windows of `tile` (`tile_starts`: overlapping by >= `overlap`, none past the edge) are predicted
  in batches of `batch` and blended with `ramp_window` weights. A dimension smaller than the tile is
  reflection-padded to the next multiple of `multiple` (to `tile` if `fixed_size`, for models
  built for one input size), so an image that fits is predicted in one pass, and then exactly:
  a dimension with one window is not weighted. All calls of `predict_fn` have one shape (one
  compilation): the last batch is filled with repeats.
  """
  if a_HxWxC.shape != b_HxWxC.shape:
    raise DataError(f"A/B shapes differ: {a_HxWxC.shape} vs {b_HxWxC.shape}")
  if not 0 <= overlap < tile:
    raise ConfigError(f"--overlap must be in [0, tile={tile}), got {overlap}")
  if batch < 1:
    raise ConfigError(f"--batch must be >= 1, got {batch}")
  h, w = a_HxWxC.shape[:2]
  th, tw = (_tile_side(s, tile, multiple, fixed_size) for s in (h, w))
  pad = ((0, max(th - h, 0)), (0, max(tw - w, 0)), (0, 0))
  if any(after for _, after in pad):
    a_HxWxC, b_HxWxC = (np.pad(x, pad, mode="reflect") for x in (a_HxWxC, b_HxWxC))
  hp, wp = a_HxWxC.shape[:2]
  ys, xs = tile_starts(hp, th, overlap), tile_starts(wp, tw, overlap)
  wy, wx = (ramp_window(t, overlap if len(s) > 1 else 0) for t, s in ((th, ys), (tw, xs)))
  weight_TxT = np.outer(wy, wx)
  positions = [(y, x) for y in ys for x in xs]
  bsz = min(batch, len(positions))

  acc_HxW = np.zeros((hp, wp), np.float32)
  bar = tqdm(total=len(positions), desc=desc, unit="tile", leave=False, disable=not progress)

  def accumulate(out, chunk):
    prob_BxTxT = np.asarray(out, np.float32)
    if prob_BxTxT.shape[1:] != (th, tw):
      raise ValueError(f"predict_fn returned {prob_BxTxT.shape}, expected (B, {th}, {tw})")
    for (y, x), p in zip(chunk, prob_BxTxT):
      acc_HxW[y:y + th, x:x + tw] += weight_TxT * p
    bar.update(len(chunk))

  pending = None
  for i in range(0, len(positions), bsz):
    chunk = positions[i:i + bsz]
    idx = chunk + [chunk[-1]] * (bsz - len(chunk))
    a_BxTxTxC = np.stack([a_HxWxC[y:y + th, x:x + tw] for y, x in idx])
    b_BxTxTxC = np.stack([b_HxWxC[y:y + th, x:x + tw] for y, x in idx])
    out = predict_fn(a_BxTxTxC, b_BxTxTxC)  # dispatched asynchronously ...
    if pending is not None:
      accumulate(*pending)  # ... while the previous batch is copied back and blended
    pending = (out, chunk)
  accumulate(*pending)
  bar.close()

  # The summed weights are separable (a grid of tiles times an outer-product window): divide by
  # the row and column coverage in place instead of holding a second HxW array.
  if len(ys) > 1:
    acc_HxW /= _coverage(hp, ys, wy)[:, None]
  if len(xs) > 1:
    acc_HxW /= _coverage(wp, xs, wx)[None, :]
  return np.clip(acc_HxW[:h, :w], 0.0, 1.0)


def _coverage(size: int, starts: Sequence[int], w: np.ndarray) -> np.ndarray:
  cov = np.zeros(size, np.float32)
  for s in starts:
    cov[s:s + len(w)] += w
  return cov


def sharded_predict_fn(change_score: Callable[[Any, Any], Any], mesh) -> PredictFn:
  """`change_score(a, b)` (a `Predictor`'s) as a `PredictFn` over the mesh: each batch of
  windows is split over the devices, filled up to a multiple of their count. Every process
  passes the same windows and gets all scores back."""
  import jax
  from jax.experimental import multihost_utils

  from jaxcd import parallel
  sharding, ndev = parallel.data_sharded(mesh), mesh.devices.size

  def predict_fn(a_BxHxWxC: np.ndarray, b_BxHxWxC: np.ndarray):
    n = a_BxHxWxC.shape[0]
    extra = -n % ndev
    if extra:
      a_BxHxWxC, b_BxHxWxC = (np.concatenate([x, np.repeat(x[-1:], extra, 0)])
                              for x in (a_BxHxWxC, b_BxHxWxC))
    a, b = jax.device_put(a_BxHxWxC, sharding), jax.device_put(b_BxHxWxC, sharding)
    out = change_score(a, b)
    if isinstance(out, jax.Array) and not out.is_fully_addressable:
      out = multihost_utils.process_allgather(out, tiled=True)
    return out[:n]

  return predict_fn


def fixed_input_size(config) -> int | None:
  """The one input size of a model whose parameters depend on it (Dsfer-Net's official (C,H,W)
  LayerNorm), or None for fully convolutional models."""
  m = config.model
  if "input_size" in m and m.get("layernorm", "chw") == "chw":
    return int(m.input_size)
  return None


@dataclasses.dataclass(frozen=True)
class EvalWindow:
  """How evaluation sees a pair: whole in a batch, or through sliding windows of `tile`."""
  tile: int
  overlap: int
  fixed: bool  # the model takes `tile` x `tile` inputs only

  def needs_windows(self, h: int, w: int) -> bool:
    return h > self.tile or w > self.tile or (self.fixed and (h, w) != (self.tile, self.tile))


def eval_window(config) -> EvalWindow:
  """The evaluation window of a config, from the config alone, so validation during training,
  the final evaluation and `jaxcd.evaluate` agree: the model's fixed input size, else
  max(`input.eval_tile` (256), `input.crop_size` rounded up to a multiple of 32), with
  `input.eval_overlap` (64) pixels of overlap, capped at a quarter of the window. Pairs within it
  are evaluated whole."""
  fixed = fixed_input_size(config)
  i = config.input
  if fixed:
    tile = fixed
  else:
    tile = i.get("eval_tile", DEFAULT_EVAL_TILE)
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < SIZE_MULTIPLE or (
        tile % SIZE_MULTIPLE):
      raise ConfigError(f"config.input.eval_tile must be a positive multiple of {SIZE_MULTIPLE}, "
                        f"got {tile!r}")
    tile = max(tile, -(-int(i.crop_size) // SIZE_MULTIPLE) * SIZE_MULTIPLE)
  overlap = i.get("eval_overlap", DEFAULT_EVAL_OVERLAP)
  if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
    raise ConfigError(f"config.input.eval_overlap must be an integer >= 0, got {overlap!r}")
  return EvalWindow(int(tile), min(int(overlap), tile // 4), fixed is not None)
