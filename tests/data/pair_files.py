"""Small on-disk pair datasets written for the source tests, and the shared real-data folder."""
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _write(path: Path, x: np.ndarray) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(x).save(path)
  return path


def _pair_arrays(h: int, w: int, seed: int):
  """Position-coded images (every pixel differs from its neighbours' tiles) and a 0/255 mask."""
  rr, cc = np.mgrid[:h, :w]
  a = np.stack([(rr // 3) % 256, (cc // 3) % 256, np.full_like(rr, seed * 40)], -1).astype(np.uint8)
  b = (255 - a).astype(np.uint8)
  label = ((((rr + 7 * seed) // 48 + cc // 48) % 3 == 0) * 255).astype(np.uint8)
  return a, b, label


def _make_pairs(root: Path, names, h, w, label_dir="label", ext=".png", seed0=0):
  arrays = {}
  for k, name in enumerate(names):
    a, b, lab = _pair_arrays(h, w, seed0 + k)
    _write(root / "A" / f"{name}{ext}", a)
    _write(root / "B" / f"{name}{ext}", b)
    _write(root / label_dir / f"{name}.png", lab)
    arrays[name] = (a, b, (lab > 127).astype(np.uint8))
  return arrays
