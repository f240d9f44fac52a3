"""`python -m jaxcd.data.describe` on the shared SZTAKI and LEVIR-CD samples."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared" / "data"
SZTAKI = SHARED / "SZTAKI_AirChange"
LEVIR_BIT = SHARED / "LEVIR-CD_samples_BIT_CD"


def _describe(*args: str) -> tuple[dict, subprocess.CompletedProcess]:
  out = subprocess.run([sys.executable, "-m", "jaxcd.data.describe", *args], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout.strip().splitlines()[-1]), out


@pytest.mark.skipif(not SZTAKI.is_dir(), reason=f"shared data not found at {SZTAKI}")
def test_describe_sztaki():
  summary, out = _describe("--dataset", "sztaki", "--data_dir", str(SZTAKI))
  # Tiles with change and their changed pixels, straight from the masks with numpy.
  changed = tiles = 0
  for gt in SZTAKI.rglob("*"):
    if gt.stem.lower() == "gt":
      mask = np.asarray(Image.open(gt)) > 127
      h, w = mask.shape
      for r in np.linspace(0, h - 256, 3).round().astype(int):
        for c in np.linspace(0, w - 256, 4).round().astype(int):
          n = int(mask[r:r + 256, c:c + 256].sum())
          tiles += n > 0
          changed += n
  assert summary["dataset"] == "sztaki"
  assert (summary["train"], summary["val"], summary["test"]) == (tiles - 24, 12, 12)
  assert 118 <= tiles <= 126  # RCL reports 122
  assert summary["changed_fraction"] == pytest.approx(changed / (tiles * 256 * 256), rel=1e-9)
  assert set(summary["changed_fraction_by_split"]) == {"train", "val", "test"}
  assert summary["image_size"]["test"] == [256, 256] and summary["bands"]["train"] == 3
  assert "train: " in out.stdout and "sztaki train" in out.stderr  # human lines, progress bar
  assert summary["checked"]["train"] == summary["train"] and summary["problems"] == []


@pytest.mark.skipif(not LEVIR_BIT.is_dir(), reason=f"shared data not found at {LEVIR_BIT}")
def test_describe_levir_samples():
  summary, _ = _describe("--dataset", "levir_cd", "--data_dir", str(LEVIR_BIT), "--no_progress")
  labels = sorted((LEVIR_BIT / "label").iterdir())
  for split in ("train", "val", "test"):
    mine = [p for p in labels if p.name.startswith(split + "_")]
    assert summary[split] == len(mine)
    frac = np.mean([np.asarray(Image.open(p)) > 127 for p in mine])
    assert summary["changed_fraction_by_split"][split] == pytest.approx(frac, rel=1e-9)
  assert summary["train"] + summary["val"] + summary["test"] == 11
  overall = np.mean([np.asarray(Image.open(p)) > 127 for p in labels])
  assert summary["changed_fraction"] == pytest.approx(overall, rel=1e-9)

  demo, _ = _describe("--dataset", "levir_cd", "--data_dir", str(LEVIR_BIT), "--splits", "demo",
                      "--no_progress")
  assert demo["demo"] == 7 and "list/<split>.txt" in demo["layout"]


def test_describe_counts_only_labelled_pixels(tmp_path):
  # A folder dataset whose 0/1 masks mark some pixels 255 (ignore): those are not in the fraction.
  rng = np.random.default_rng(0)
  changed = labelled = 0
  for split in ("train", "val", "test"):
    for k in range(2):
      for d in ("A", "B"):
        (tmp_path / split / d).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / split / d / f"{k}.png")
      label = (rng.random((64, 64)) < 0.3).astype(np.uint8)
      label[: 16 * (k + 1)] = 255
      (tmp_path / split / "label").mkdir(exist_ok=True)
      Image.fromarray(label).save(tmp_path / split / "label" / f"{k}.png")
      changed += int((label == 1).sum())
      labelled += int((label != 255).sum())
  summary, _ = _describe("--dataset", "folder", "--data_dir", str(tmp_path), "--no_progress")
  assert (summary["train"], summary["val"], summary["test"]) == (2, 2, 2)
  assert summary["changed_fraction"] == pytest.approx(changed / labelled, rel=1e-9)


def _folder(root: Path, n: int = 3, size: int = 64) -> Path:
  rng = np.random.default_rng(1)
  for k in range(n):
    for d in ("A", "B"):
      (root / d).mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
          root / d / f"p{k}.png")
    (root / "label").mkdir(exist_ok=True)
    Image.fromarray(np.where(rng.random((size, size)) < 0.2, 2, 1).astype(np.uint8)).save(
        root / "label" / f"p{k}.png")
  return root


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "jaxcd.data.describe", "--no_progress", *args],
                        capture_output=True, text=True, cwd=REPO, timeout=300)


def test_describe_checks_every_pair_and_quick_checks_the_first(tmp_path):
  root = _folder(tmp_path / "d")
  args = ("--dataset", "folder", "--data_dir", str(root), "--splits", "all",
          "--set", "label_encoding=1_2")  # parsed as the string '1_2', not the integer 12
  good, _ = _describe(*args, "--no_progress")
  assert good["all"] == 3 and good["checked"]["all"] == 3 and good["problems"] == []
  # Faults in later pairs: B smaller than A, a truncated A, a zero-byte label.
  Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / "B" / "p1.png")
  data = (root / "A" / "p2.png").read_bytes()
  (root / "A" / "p2.png").write_bytes(data[:len(data) // 2])
  (root / "label" / "p0.png").write_bytes(b"")
  out = _run(*args)
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
  assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr
  problems = [line for line in out.stdout.splitlines() if line.startswith("problem: ")]
  assert len(problems) == 3, out.stdout
  for name in (root / "B" / "p1.png", root / "A" / "p2.png", root / "label" / "p0.png"):
    assert sum(str(name) in p for p in problems) == 1, (name, problems)
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert len(summary["problems"]) == 3 and summary["checked"]["all"] == 3
  # --quick decodes the first pair only: its zero-byte label is found, the others are not.
  out = _run(*args, "--quick")
  assert out.returncode == 2 and str(root / "label" / "p0.png") in out.stderr
  assert json.loads(out.stdout.strip().splitlines()[-1])["checked"]["all"] == 1


def test_describe_set_takes_declared_options_only(tmp_path):
  root = _folder(tmp_path / "d", n=1)
  out = _run("--dataset", "folder", "--data_dir", str(root), "--splits", "all",
             "--set", "label_encodnig=1_2")
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
  assert "label_encodnig" in out.stderr and "did you mean 'label_encoding'" in out.stderr
  out = _run("--dataset", "levir_cd", "--data_dir", str(root), "--set", "tile_size=big")
  assert out.returncode == 2 and "tile_size=big: expected an integer" in out.stderr, out.stderr
