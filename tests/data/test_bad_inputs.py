"""Each bad input gives a one-line DataError naming the offending file or folder."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcd.data.cdd import cdd
from jaxcd.data.folder import folder
from jaxcd.data.levir_cd import levir_cd
from jaxcd.data.sztaki import sztaki
from jaxcd.data.whu_cd import whu_cd
from jaxcd.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, x: np.ndarray) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(x).save(path)
  return path


def _dataset(root: Path, names=("a1", "a2"), size=64) -> Path:
  """A valid LEVIR-style split folder root/{A,B,label}."""
  rng = np.random.default_rng(0)
  for name in names:
    _write(root / "A" / f"{name}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    _write(root / "B" / f"{name}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    label = np.zeros((size, size), np.uint8)
    label[8:20, 8:30] = 255
    _write(root / "label" / f"{name}.png", label)
  return root


def _levir(tmp_path: Path) -> Path:
  for split in ("train", "val", "test"):
    _dataset(tmp_path / "levir" / split, names=(f"{split}_1", f"{split}_2"))
  return tmp_path / "levir"


def _error(fn) -> str:
  with pytest.raises(DataError) as e:
    fn()
  msg = str(e.value)
  assert "\n" not in msg, msg
  return msg


def _describe(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "jaxcd.data.describe", "--no_progress", *args],
                        capture_output=True, text=True, cwd=REPO, timeout=120)


def test_missing_b_image(tmp_path):
  root = _dataset(tmp_path / "d")
  (root / "B" / "a2.png").unlink()
  msg = _error(lambda: folder("all", data_dir=str(root)))
  assert str(root / "A" / "a2.png") in msg and str(root / "B") in msg


def test_a_b_size_mismatch(tmp_path):
  root = _dataset(tmp_path / "d")
  _write(root / "B" / "a1.png", np.zeros((64, 60, 3), np.uint8))
  src = folder("all", data_dir=str(root))
  msg = _error(lambda: src[0])
  assert str(root / "A" / "a1.png") in msg and str(root / "B" / "a1.png") in msg
  assert "64x64" in msg and "60x64" in msg
  src[1]  # the other pair is fine


def test_label_with_values_0_and_7(tmp_path):
  root = _levir(tmp_path)
  bad = root / "train" / "label" / "train_2.png"
  label = np.zeros((64, 64), np.uint8)
  label[:10] = 7
  _write(bad, label)
  src = levir_cd("train", data_dir=str(root), tile_size=64)
  msg = _error(lambda: src[1])
  assert str(bad) in msg and "{0, 7}" in msg


def test_corrupt_png(tmp_path):
  root = _levir(tmp_path)
  bad = root / "test" / "A" / "test_1.png"
  data = bad.read_bytes()
  bad.write_bytes(data[: len(data) // 3])  # header intact, pixel data cut
  src = levir_cd("test", data_dir=str(root), tile_size=64)
  msg = _error(lambda: src[0])
  assert str(bad) in msg


def test_empty_split(tmp_path):
  root = _levir(tmp_path)
  for p in (root / "val").rglob("*.png"):
    p.unlink()
  msg = _error(lambda: levir_cd("val", data_dir=str(root), tile_size=64))
  assert "split 'val'" in msg and "empty" in msg and str(root) in msg
  levir_cd("train", data_dir=str(root), tile_size=64)  # the others still load


def test_nonexistent_data_dir(tmp_path):
  missing = tmp_path / "no_such_dataset"
  for source in (folder, levir_cd, whu_cd, cdd, sztaki):
    msg = _error(lambda: source("train", data_dir=str(missing)))
    assert str(missing) in msg and "does not exist" in msg
  assert "authors" in _error(lambda: levir_cd("train", data_dir=str(missing)))


def test_describe_nonexistent_data_dir(tmp_path):
  missing = tmp_path / "nope"
  out = _describe("--dataset", "levir_cd", "--data_dir", str(missing))
  assert out.returncode == 2, out
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
  assert "Traceback" not in out.stderr


def test_describe_bad_label_and_missing_b(tmp_path):
  root = _levir(tmp_path)
  bad = root / "val" / "label" / "val_1.png"
  _write(bad, np.full((64, 64), 7, np.uint8) * (np.arange(64) % 2)[:, None].astype(np.uint8))
  out = _describe("--dataset", "levir_cd", "--data_dir", str(root), "--set", "tile_size=64")
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
  assert out.stderr.startswith("error: ") and str(bad) in out.stderr

  (root / "test" / "B" / "test_2.png").unlink()
  out = _describe("--dataset", "levir_cd", "--data_dir", str(root), "--set", "tile_size=64",
                  "--splits", "test")
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
  assert str(root / "test" / "A" / "test_2.png") in out.stderr


def test_describe_succeeds_once_fixed(tmp_path):
  # The same folder without the faults: exit 0 and a JSON last line (so the tests above fail
  # for the fault, not for the set-up).
  out = _describe("--dataset", "levir_cd", "--data_dir", str(_levir(tmp_path)), "--set",
                  "tile_size=64")
  assert out.returncode == 0, out.stderr
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert (summary["train"], summary["val"], summary["test"]) == (2, 2, 2)
