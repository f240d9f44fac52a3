"""Synthetic bitemporal scenes: the embedded default dataset (no download, no storage).

Each pair is an aerial-like tile of farmland, roads, trees and houses seen on two dates. The TRUE
changes are buildings that appear or disappear (label 1 on their footprints). Everything else that
differs between the dates is a nuisance labelled 0: seasonal field and vegetation colours, re-grown
tree crowns and re-sampled texture, sun direction (shadows, roof shading), global gain/offset and
tint, cloud shadows, sensor noise and a 0-2 pixel misregistration of the whole of B (labels follow
A). Classical change vector analysis is fooled by these (CVA + Otsu: test F1 0.24); a learned
model is not (FC-Siam-diff, configs/fc_siam_diff.py: test F1 0.84 after 1200 steps, ~6 min on 2
CPU cores). About 6% of the pixels are changed.

Generation is per index from `np.random.default_rng([seed, split_id, index])`, so a source is
random-access, deterministic, picklable and costs no storage. Sizes are in pixels at a fixed
ground resolution: larger `image_size` means more parcels and houses, not bigger ones.
"""
import operator
from pathlib import Path
from typing import Any

import numpy as np

from jaxcd.data.registry import SPLITS, register_source
from jaxcd.errors import ConfigError

_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}

# Parcel types and their three seasonal states, RGB in 0-255 before lighting.
CROP, GRASS, SOIL, FOREST, YARD = range(5)
_PALETTE = np.array([
    [(75, 120, 50), (190, 172, 105), (122, 96, 70)],  # crop: green, ripe, ploughed
    [(95, 135, 65), (160, 155, 100), (122, 146, 80)],  # grass: green, dry, mown
    [(150, 120, 90), (112, 90, 70), (176, 150, 115)],  # bare soil: normal, wet, dry
    [(45, 75, 40), (100, 86, 46), (36, 62, 36)],  # forest: summer, autumn, dark
    [(110, 140, 90), (150, 150, 112), (128, 136, 110)],  # yards: lawn, dry lawn, mixed
], np.float32)
_RURAL_PROBS = np.array([0.5, 0.25, 0.12, 0.13, 0.0])  # parcel types before adding yards
_STRIPE_AMP = np.array([14.0, 4.0, 0.0, 0.0, 0.0], np.float32)  # crop rows, mowing lines
_GRAIN_AMP = np.array([6.0, 6.0, 8.0, 18.0, 6.0], np.float32)  # fine texture, re-sampled per date
# Chance that a house centre is accepted on each parcel type (houses cluster in yards, none in forest).
_HOUSE_WEIGHT = np.array([0.2, 0.5, 0.5, 0.0, 1.0])
# Roof colours: tiles, concrete, bright metal, slate, painted blue. (Brown roofs, lost among
# ploughed fields, made the task too ambiguous for the small default network.)
_ROOFS = np.array([(178, 88, 66), (150, 150, 155), (205, 202, 195), (82, 82, 92), (92, 110, 140)],
                  np.float32)
_TREE = np.array([(48, 84, 44), (110, 96, 50)], np.float32)  # summer, autumn crowns


def _smooth_noise(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
  """Value noise of roughly unit variance varying on a scale of `cell` pixels (SxS float32)."""
  n = int(size / cell) + 3
  grid = rng.standard_normal((n, n), dtype=np.float32)
  t = np.arange(size, dtype=np.float32) / np.float32(cell) + rng.uniform(0, 1, 2).astype(np.float32)[:, None]
  i = t.astype(np.int64)
  f = t - i
  f = f * f * (3 - 2 * f)  # smoothstep hides the grid
  # Separable bilinear interpolation: along x on the coarse rows, then along y.
  rows = grid[:, i[1]] * (1 - f[1]) + grid[:, i[1] + 1] * f[1]
  fy = f[0][:, None]
  return (rows[i[0]] * (1 - fy) + rows[i[0] + 1] * fy) * np.float32(1.6)


def _rotate(yy: np.ndarray, xx: np.ndarray, theta: float, cy: float, cx: float):
  """Coordinates (u along theta, v across) relative to (cy, cx)."""
  c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
  return (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """`x` moved by (dy, dx) pixels, zero-filled (np.roll would wrap shadows around the tile)."""
  out = np.zeros_like(x)
  h, w = x.shape[:2]
  out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      x[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
  return out


_CELL = 22.0  # side of the lattice cell holding at most one house (pixels)


def _houses(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, span: float, theta: float,
            t_pix: np.ndarray, road: np.ndarray):
  """Lays houses on a jittered lattice aligned with the fields, one per cell at most.

  Vectorised over pixels (no loop over houses): each pixel finds its cell and tests itself
  against that cell's house (rectangle or L, jittered centre and angle, maybe turned 90
  degrees), so houses never overlap. Returns a dict of per-pixel maps (cell id `cid`, `foot`,
  `edge`, roof `side`, `grown` footprint) and per-cell arrays (`status` 0 both dates / 1 only A /
  2 only B, `height`, `colour`, `gable`, `normal`, `shade`).
  """
  n = int(2 * span / _CELL) + 2
  row_offset = rng.uniform(0, _CELL, n).astype(np.float32)  # rows slide: no rigid grid
  cv = np.clip(((v + span) / _CELL).astype(np.int64), 0, n - 1)
  cu = np.clip(((u + span + row_offset[cv]) / _CELL).astype(np.int64), 0, n - 1)
  cid = cv * n + cu
  k = n * n
  # Half-extents stay below _CELL / 2 - 2 so that a house never leaves its cell.
  half_l = rng.uniform(4.5, 9.0, k)
  half_w = np.minimum(rng.uniform(3.5, 6.0, k), half_l)
  wing = rng.random(k) < 0.3
  wing_hu = rng.uniform(1.5, 0.6 * half_l)
  wing_hv = np.minimum(rng.uniform(1.0, 2.5, k), (_CELL / 2 - 2 - half_w) / 2) * wing
  wing_su, wing_sv = rng.choice([-1.0, 1.0], (2, k))
  wing_u = wing_su * (half_l - wing_hu)
  wing_v = wing_sv * (half_w + wing_hv)
  ext_u, ext_v = half_l, half_w + 2 * wing_hv  # half-extents, used for the slack in the cell
  turned = rng.random(k) < 0.5
  slack_u = np.maximum(_CELL / 2 - 2.5 - np.where(turned, ext_v, ext_u), 0)
  slack_v = np.maximum(_CELL / 2 - 2.5 - np.where(turned, ext_u, ext_v), 0)
  centre_u = (np.arange(k) % n + 0.5) * _CELL - span + rng.uniform(-1, 1, k) * slack_u
  centre_v = (np.arange(k) // n + 0.5) * _CELL - span + rng.uniform(-1, 1, k) * slack_v
  jitter = rng.normal(0, 0.04, k)
  # Local frame of the cell's house: move, rotate by the jitter, maybe turn by 90 degrees.
  lu = u - (centre_u[cid] - row_offset[cv]).astype(np.float32)
  lv = v - centre_v[cid].astype(np.float32)
  cj, sj = np.cos(jitter).astype(np.float32)[cid], np.sin(jitter).astype(np.float32)[cid]
  lu, lv = lu * cj + lv * sj, lv * cj - lu * sj
  lu, lv = np.where(turned[cid], lv, lu), np.where(turned[cid], -lu, lv)
  hl, hw = half_l[cid].astype(np.float32), half_w[cid].astype(np.float32)
  wu, wv = wing_u[cid].astype(np.float32), wing_v[cid].astype(np.float32)
  hu, hv = wing_hu[cid].astype(np.float32), wing_hv[cid].astype(np.float32)
  has_wing = wing[cid]

  def footprint(grow: float) -> np.ndarray:
    mask = (np.abs(lu) <= hl + grow) & (np.abs(lv) <= hw + grow)
    return mask | (has_wing & (np.abs(lu - wu) <= hu + grow) & (np.abs(lv - wv) <= hv + grow))

  # Which cells are built: a scene density times a preference for the cell's parcel type.
  density = rng.uniform(0.5, 1.0)
  centre_type = np.full(k, FOREST)
  centre_type[cid.ravel()] = t_pix.ravel()  # any pixel of the cell: parcels are larger than cells
  present = rng.random(k) < density * _HOUSE_WEIGHT[centre_type]
  grown = footprint(2.0)
  on_road = np.bincount(cid[grown & road], minlength=k) > 0
  present &= ~on_road
  # Houses cut by the canvas border are fine (they continue outside the tile).
  built = present[cid]
  foot = footprint(0.0) & built
  edge = foot & ~footprint(-1.0)
  status = np.where(rng.random(k) < rng.uniform(0.4, 0.9), 1 + (rng.random(k) < 0.5), 0)
  houses = {
      "cid": cid, "foot": foot, "edge": edge, "side": lv >= 0, "grown": grown & built,
      "status": status, "height": rng.uniform(1.5, 4.0, k).astype(np.float32),
      "colour": (_ROOFS[rng.integers(0, len(_ROOFS), k)] + rng.normal(0, 10, (k, 3))).astype(np.float32),
      "gable": (half_l * half_w < 30) | (rng.random(k) < 0.5),  # big buildings: flat roofs
      "normal": theta + jitter + np.pi / 2 + turned * np.pi / 2,  # direction of the v >= 0 plane
      "shade": rng.uniform(0.06, 0.16, k),
  }
  return houses


def generate_pair(rng: np.random.Generator, image_size: int = 64, max_shift: int = 2,
                  nuisance: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One pair: (image_a HxWx3 uint8, image_b HxWx3 uint8, label HxW uint8 in {0, 1})."""
  # The world: A and B are crops of it, B possibly shifted. A margin of at least 2 keeps the
  # world (hence A and the label) the same for every max_shift in 0..2.
  pad = max(max_shift, 2)
  size = image_size + 2 * pad
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  theta = rng.uniform(0, np.pi)  # orientation of fields, roads and houses
  u, v = _rotate(yy, xx, theta, size / 2, size / 2)
  p_season = rng.uniform(0.2, 0.8) * nuisance
  autumn = rng.random(2) < 0.3 * nuisance  # per date: tree crowns turn brown

  # Parcels: strips across v with random widths, each cut along u at its own places.
  span = 0.75 * size  # covers the rotated canvas
  strip_edges = np.cumsum(rng.uniform(12, 36, int(2 * span / 12) + 2)) - span
  n_strips = len(strip_edges) + 1
  max_cuts = int(2 * span / 16) + 2
  cuts = np.cumsum(rng.uniform(16, 60, (n_strips, max_cuts)), axis=1) - span
  strip = np.searchsorted(strip_edges, v)
  # One sorted search for all strips: strip k's cuts and pixels are offset by k * 4 * span.
  offset = 4 * span * np.arange(n_strips)[:, None]
  seg = np.searchsorted((cuts + offset).ravel(), u + offset[strip, 0]) - strip * max_cuts
  pid = strip * (max_cuts + 1) + seg
  n_parcels = n_strips * (max_cuts + 1)
  urban = rng.uniform(0.15, 0.8)  # share of residential yards, where most houses stand
  ptype = rng.choice(len(_RURAL_PROBS), n_parcels, p=_RURAL_PROBS * (1 - urban) + np.eye(5)[YARD] * urban)
  state_a = rng.integers(0, 3, n_parcels)
  seasonal = rng.random(n_parcels) < p_season
  state_b = np.where(seasonal, (state_a + rng.integers(1, 3, n_parcels)) % 3, state_a)
  tint = rng.normal(0, 8, (n_parcels, 3)).astype(np.float32)  # each field its own shade
  period = rng.uniform(3, 7, n_parcels).astype(np.float32)
  phase = rng.uniform(0, 2 * np.pi, n_parcels).astype(np.float32)
  along = rng.random(n_parcels) < 0.5
  stripes = np.sin(2 * np.pi * np.where(along[pid], u, v) / period[pid] + phase[pid])
  margin = np.zeros((size, size), bool)  # field margins: where the parcel id changes
  margin[1:] |= pid[1:] != pid[:-1]
  margin[:, 1:] |= pid[:, 1:] != pid[:, :-1]
  t_pix = ptype[pid]
  shade = _smooth_noise(rng, size, 10.0)  # shared soil/crop variation inside parcels

  # Roads along and across the field grid.
  road = np.zeros((size, size), bool)
  road_edge = np.zeros((size, size), bool)
  for coord, present in ((v, rng.random() < 0.6), (u, rng.random() < 0.35)):
    if present:
      offset, half = rng.uniform(-0.35, 0.35) * size, rng.uniform(1.5, 2.8)
      d = np.abs(coord - offset)
      road |= d <= half
      road_edge |= (d > half - 1) & (d <= half)

  h = _houses(rng, u, v, span, theta, t_pix, road)
  cid, foot = h["cid"], h["foot"]
  label = (foot & (h["status"][cid] > 0)).astype(np.uint8)
  # Roofs, drawn per date on their own pixels only: dark eaves on gables, a bright parapet on
  # flat roofs.
  foot_yx = np.nonzero(foot)
  foot_cid = cid[foot_yx]
  foot_side = np.where(h["side"][foot_yx], 1.0, -1.0)
  foot_trim = np.where(h["edge"][foot_yx], np.where(h["gable"][foot_cid], 0.7, 1.15), 1.0)
  foot_rgb = h["colour"][foot_cid] * foot_trim[:, None].astype(np.float32)
  rows = (_STRIPE_AMP[t_pix] * stripes).astype(np.float32)
  texture = (6 * shade).astype(np.float32)
  grain_amp = _GRAIN_AMP[t_pix]

  # Tree crowns: a shared blob field, thresholded per date with a little re-grown noise.
  trees = 0.6 * _smooth_noise(rng, size, 3.0) + _smooth_noise(rng, size, 9.0)
  tree_level = rng.uniform(1.1, 2.2)
  no_trees = road | h["grown"] | (t_pix == FOREST)

  images = []
  for date, state in enumerate((state_a, state_b)):
    sun = rng.uniform(0, 2 * np.pi)  # direction shadows fall, per date
    sun_len = rng.uniform(0.6, 1.4)  # shadow length per pixel of height
    sun_y, sun_x = np.sin(sun), np.cos(sun)
    shadow_dark = np.float32(rng.uniform(0.45, 0.65))
    grain = _smooth_noise(rng, size, 1.5)  # fine texture, re-sampled per date
    # Ground: parcel colour + rows + shared shading + grain.
    img = _PALETTE[t_pix, state[pid]] + tint[pid]
    ploughed = state[pid] == 2  # deeper furrows
    img += (rows + np.float32(0.4) * rows * ploughed + texture + grain_amp * grain)[..., None]
    img[margin] = 0.6 * img[margin] + 0.4 * np.float32([140, 130, 100])
    img[road] = np.float32([104, 104, 108]) + (4 * grain[road])[:, None]
    img[road_edge] = np.float32([150, 150, 150])
    # Trees with their shadows; crowns grow or shrink a little between dates.
    crowns = (trees + 0.25 * nuisance * _smooth_noise(rng, size, 4.0) > tree_level) & ~no_trees
    reach = 2 * sun_len
    img[_shift(crowns, round(reach * sun_y), round(reach * sun_x)) & ~crowns] *= shadow_dark
    img[crowns] = _TREE[int(autumn[date])] + (18 * grain[crowns])[:, None]
    # Houses standing on this date (status 1 = only in A, 2 = only in B), with their shadows:
    # a pixel is shaded when a roof d pixels towards the sun is at least d / sun_len high.
    here = foot & (h["status"][cid] != 2 - date)
    height = np.where(here, h["height"][cid], 0) * sun_len
    shadow = np.zeros_like(here)
    for d in range(1, int(np.ceil(height.max(initial=0))) + 1):
      shadow |= _shift(height, round(d * sun_y), round(d * sun_x)) >= d
    img[shadow & ~here] *= shadow_dark
    # Gable roofs: the plane facing the sun is brighter.
    k = -h["shade"] * np.cos(h["normal"] - sun) * h["gable"]
    roof = foot_rgb * (1 + k[foot_cid] * foot_side)[:, None].astype(np.float32)
    roof += (3 * grain[foot_yx])[:, None]
    standing = here[foot_yx]
    img[foot_yx[0][standing], foot_yx[1][standing]] = roof[standing]
    # Acquisition: global gain/offset with a tint, an optional cloud shadow, sensor noise.
    gain = rng.uniform(1 - 0.2 * nuisance, 1 + 0.2 * nuisance) * (1 + rng.normal(0, 0.04 * nuisance, 3))
    img = img * gain.astype(np.float32) + np.float32(rng.uniform(-15, 15) * nuisance)
    if rng.random() < 0.25 * nuisance:
      cloud = np.clip(_smooth_noise(rng, size, size / 3) - 0.3, 0, 1)
      img *= (1 - 0.45 * cloud)[..., None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1, 4) * nuisance)
    images.append(np.clip(img, 0, 255).astype(np.uint8))

  # Misregistration: B is the world seen through a window shifted by up to max_shift pixels.
  # Per axis, a shift of m pixels has odds 0.35**m: mostly 0 or 1, sometimes 2.
  odds = 0.35 ** np.arange(max_shift + 1)
  dy_b, dx_b = rng.choice(max_shift + 1, 2, p=odds / odds.sum()) * rng.choice([-1, 1], 2)
  crop = np.s_[pad:pad + image_size, pad:pad + image_size]
  image_b = images[1][pad + dy_b:pad + dy_b + image_size, pad + dx_b:pad + dx_b + image_size]
  return (np.ascontiguousarray(images[0][crop]), np.ascontiguousarray(image_b),
          np.ascontiguousarray(label[crop]))


@register_source("synthetic")
class SyntheticSource:
  """Random-access source of generated pairs; records follow `jaxcd.data`'s contract.

  Options (config.data fields): `image_size` (square tiles, pixels), `num_train|val|test` (pairs
  per split), `seed`, `max_shift` (largest misregistration of B, pixels), `nuisance` (scales the
  seasonal changes, tree regrowth, lighting, cloud shadows and noise; 0 leaves only the sun's
  shadows and the re-sampled texture), `cache_mb` (generated pairs kept in memory).
  `data_dir` is ignored; `num_bands` must be 3.
  """

  def __init__(self, split: str, image_size: int = 64, num_train: int = 1000, num_val: int = 100,
               num_test: int = 200, seed: int = 0, max_shift: int = 2, nuisance: float = 1.0,
               cache_mb: float = 256.0, data_dir: str = "", num_bands: int = 3):
    del data_dir  # a field of every config; nothing to read here
    if split not in _SPLIT_IDS:
      raise ConfigError(f"split {split!r}: unknown; expected one of {', '.join(SPLITS)}")
    if num_bands != 3:
      raise ConfigError(f"config.data.num_bands: synthetic scenes have 3 bands, got {num_bands}")
    if not 32 <= int(image_size) <= 1024:
      raise ConfigError(f"config.data.image_size: must be in [32, 1024], got {image_size}")
    if not 0 <= int(max_shift) <= 8:
      raise ConfigError(f"config.data.max_shift: must be in [0, 8], got {max_shift}")
    if not 0.0 <= float(nuisance) <= 2.0:
      raise ConfigError(f"config.data.nuisance: must be in [0, 2], got {nuisance}")
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    if int(sizes[split]) < 0:
      raise ConfigError(f"config.data.num_{split}: must be >= 0, got {sizes[split]}")
    self.split, self.size = split, int(sizes[split])
    self.image_size, self.seed = int(image_size), int(seed)
    self.max_shift, self.nuisance = int(max_shift), float(nuisance)
    # Pairs already generated are kept (up to cache_mb) so that later epochs cost a copy, not a
    # render: the default 1000 training pairs of 64x64 take 28 MB.
    self.cache_mb = float(cache_mb)
    self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    self._cached_bytes = 0

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_cache"], state["_cached_bytes"] = {}, 0  # a worker regenerates faster than it unpickles
    return state

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = operator.index(index)
    if index < 0:
      index += self.size
    if not 0 <= index < self.size:
      raise IndexError(f"synthetic {self.split}: index {index} out of range [0, {self.size})")
    pair = self._cache.get(index)
    if pair is None:
      rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
      pair = generate_pair(rng, self.image_size, self.max_shift, self.nuisance)
      nbytes = sum(x.nbytes for x in pair)
      if self._cached_bytes + nbytes <= self.cache_mb * 2**20:
        self._cache[index] = pair
        self._cached_bytes += nbytes
    a, b, label = (x.copy() for x in pair)  # callers may write into their record
    return {"image_a": a, "image_b": b, "label": label, "id": f"synthetic_{self.split}_{index:06d}"}

  def __repr__(self) -> str:
    return (f"SyntheticSource(split={self.split!r}, n={self.size}, image_size={self.image_size}, "
            f"seed={self.seed})")


def save_examples(source: Any, path: str | Path, n: int = 8) -> Path:
  """Writes a PNG grid of the first `n` records of `source`, one row of A | B | label each."""
  import matplotlib
  matplotlib.use("Agg")  # no display needed
  import matplotlib.pyplot as plt

  n = min(n, len(source))
  if n < 1:
    raise ValueError(f"save_examples: source {source!r} is empty")
  fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
  for row in range(n):
    rec = source[row]
    label = rec["label"]
    label_rgb = np.stack([np.where(label == 1, 255, 0)] * 3, -1).astype(np.uint8)
    label_rgb[label == 255] = (128, 128, 128)  # ignored pixels in grey
    for col, (img, title) in enumerate(((rec["image_a"][..., :3], "A"), (rec["image_b"][..., :3], "B"),
                                        (label_rgb, "change"))):
      axes[row, col].imshow(img, interpolation="nearest")
      axes[row, col].set_axis_off()
      if row == 0:
        axes[row, col].set_title(title)
    axes[row, 0].text(-2, label.shape[0] / 2, str(rec["id"]), rotation=90, va="center", ha="right",
                      fontsize=6)
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
