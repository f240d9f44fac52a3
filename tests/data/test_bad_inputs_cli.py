"""Bad input through the command lines: each case ends in exactly one `error:` line on stderr that
names the file or field, exit status 2, no traceback.

Cases that only need the data layer run `jaxcd.data.describe`'s `main` in-process (what the
command runs; an exception escaping it would be the traceback); those that start `jaxcd.train`,
`evaluate` or `predict` run the command in a subprocess and are in the slow tier.
`python tests/data/test_bad_inputs_cli.py` prints the cases and their messages as the markdown
table in docs/bad_inputs.md.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

if __package__:
  from .layouts import OSCD_SIMPLE, write_folder, write_geotiff, write_oscd
else:  # run as a script, to print the docs table
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
  from tests.data.layouts import OSCD_SIMPLE, write_folder, write_geotiff, write_oscd

REPO = Path(__file__).resolve().parents[2]
CASES: dict[str, tuple[Callable[[Path], tuple[list[str], list[str]]], bool, str]] = {}


def case(what: str, slow: bool = False):
  """Registers `fn(tmp) -> (argv after 'python -m', substrings the error line must hold)`."""
  def deco(fn):
    CASES[fn.__name__] = (fn, slow, what)
    return fn
  return deco


# --- writers -----------------------------------------------------------------------------------

def _png(path: Path, x: np.ndarray) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(x).save(path)
  return path


def _pairs(root: Path, names=("p0", "p1", "p2")) -> Path:
  """root/{A,B,label}/<name>.png, 64x64, valid 0/255 labels."""
  write_folder(root, "A", "B", names=names)
  return root


def _splits(root: Path) -> Path:
  for split in ("train", "val", "test"):
    _pairs(root / split, names=(f"{split}_0", f"{split}_1"))
  return root


def _describe(root: Path, *extra: str) -> list[str]:
  return ["jaxcd.data.describe", "--no_progress", "--dataset", "folder", "--data_dir", str(root),
          "--splits", "all", *extra]


def _train(*extra: str) -> list[str]:
  return ["jaxcd.train", "--config", str(REPO / "configs" / "fc_siam_diff.py"),
          "--config.progress=False", *extra]


# --- cases: the dataset ------------------------------------------------------------------------

@case("data_dir does not exist")
def missing_data_dir(tmp):
  return _describe(tmp / "nope"), [str(tmp / "nope"), "does not exist"]


@case("data_dir is a file")
def data_dir_is_file(tmp):
  f = tmp / "file.txt"
  f.write_text("x")
  return _describe(f), [str(f), "is a file, not a folder"]


@case("B smaller than A in a later pair")
def size_mismatch_later_pair(tmp):
  root = _pairs(tmp / "d")
  _png(root / "B" / "p2.png", np.zeros((48, 64, 3), np.uint8))
  return _describe(root), [str(root / "B" / "p2.png"), "64x48"]


@case("truncated PNG")
def truncated_png(tmp):
  root = _pairs(tmp / "d")
  p = _png(root / "A" / "p1.png",
           np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
  p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])  # header whole, pixel data cut
  return _describe(root), [str(p)]


@case("zero-byte image")
def zero_byte_image(tmp):
  root = _pairs(tmp / "d")
  p = root / "B" / "p1.png"
  p.write_bytes(b"")
  return _describe(root), [str(p)]


@case("zero-byte label")
def zero_byte_label(tmp):
  root = _pairs(tmp / "d")
  p = root / "label" / "p2.png"
  p.write_bytes(b"")
  return _describe(root), [str(p)]


@case("label of another size")
def label_size_mismatch(tmp):
  root = _pairs(tmp / "d")
  p = _png(root / "label" / "p1.png", np.zeros((32, 32), np.uint8))
  return _describe(root), [str(p), "label size mismatch"]


@case("label values {0, 7}")
def label_values_0_7(tmp):
  root = _pairs(tmp / "d")
  x = np.zeros((64, 64), np.uint8)
  x[:9] = 7
  p = _png(root / "label" / "p0.png", x)
  return _describe(root), [str(p), "{0, 7}"]


@case("1/2-coded label read with encoding auto")
def label_1_2_without_encoding(tmp):
  root = _pairs(tmp / "d")
  p = _png(root / "label" / "p0.png", np.where(np.eye(64, dtype=bool), 2, 1).astype(np.uint8))
  return _describe(root), [str(p), "1_2"]


@case("a photo given as a label")
def label_is_a_photo(tmp):
  root = _pairs(tmp / "d")
  p = _png(root / "label" / "p1.png",
           np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8))
  return _describe(root), [str(p), "binary mask"]


@case("0/255 labels read with label_encoding=1_2")
def label_bad_for_1_2(tmp):
  root = _pairs(tmp / "d")
  return _describe(root, "--set", "label_encoding=1_2"), [str(root / "label" / "p0.png"),
                                                          "'1_2'", "{0, 255}"]


@case("an A image without its B")
def missing_b(tmp):
  root = _pairs(tmp / "d")
  (root / "B" / "p1.png").unlink()
  return _describe(root), [str(root / "A" / "p1.png"), "missing B"]


@case("a B image without its A")
def b_without_a(tmp):
  root = _pairs(tmp / "d")
  (root / "A" / "p1.png").unlink()
  return _describe(root), [str(root / "B" / "p1.png")]


@case("an A image without its label")
def missing_label(tmp):
  root = _pairs(tmp / "d")
  (root / "label" / "p0.png").unlink()
  return _describe(root), [str(root / "A" / "p0.png"), "missing label"]


@case("two images with one stem (a.png, a.PNG)")
def duplicate_stem(tmp):
  root = _pairs(tmp / "d")
  (root / "A" / "p0.PNG").write_bytes((root / "A" / "p0.png").read_bytes())
  return _describe(root), ["p0.PNG", "two images with stem"]


@case("a list file naming a missing image")
def list_names_missing(tmp):
  root = _pairs(tmp / "d")
  lst = root / "list" / "train.txt"
  lst.parent.mkdir()
  lst.write_text("p0.png\nnope.png\n")
  return [*_describe(root)[:-2], "--splits", "train"], [str(lst), "'nope'"]


@case("an empty split folder")
def empty_split(tmp):
  root = _splits(tmp / "d")
  for p in (root / "val").rglob("*.png"):
    p.unlink()
  return [*_describe(root)[:-2], "--splits", "train,val"], ["split 'val'", "empty"]


@case("unknown dataset name")
def unknown_dataset(tmp):
  return ["jaxcd.data.describe", "--dataset", "levir", "--data_dir", str(tmp)], [
      "config.data.name", "'levir'", "levir_cd"]


@case("misspelled source option (--set tile_sise=512)")
def misspelled_option(tmp):
  root = _splits(tmp / "d")
  return ["jaxcd.data.describe", "--dataset", "levir_cd", "--data_dir", str(root), "--set",
          "tile_sise=512"], ["tile_sise", "did you mean 'tile_size'"]


@case("option value of the wrong type (--set tile_size=big)")
def option_wrong_type(tmp):
  root = _splits(tmp / "d")
  return ["jaxcd.data.describe", "--dataset", "levir_cd", "--data_dir", str(root), "--set",
          "tile_size=big"], ["tile_size=big", "integer"]


@case("unknown label encoding")
def unknown_label_encoding(tmp):
  return _describe(_pairs(tmp / "d"), "--set", "label_encoding=0_3"), ["label_encoding", "0_3"]


@case("unknown 16-bit scaling")
def unknown_scaling(tmp):
  return _describe(_pairs(tmp / "d"), "--set", "scale_16bit=log"), ["scale_16bit", "log"]


@case("tile_size larger than the images")
def tile_larger_than_image(tmp):
  root = _splits(tmp / "d")
  return ["jaxcd.data.describe", "--no_progress", "--dataset", "levir_cd", "--data_dir", str(root),
          "--set", "tile_size=512"], ["smaller than tile_size 512", str(root)]


@case("13-band GeoTIFF pair where num_bands is 3")
def band_count_mismatch(tmp):
  root = tmp / "d"
  rng = np.random.default_rng(0)
  for d in ("A", "B"):
    write_geotiff(root / d / "s.tif", rng.integers(0, 4000, (64, 64, 13), dtype=np.uint16))
  _png(root / "label" / "s.png", np.zeros((64, 64), np.uint8))
  return _describe(root, "--set", "num_bands=3"), [str(root / "A" / "s.tif"), "13 bands",
                                                   "num_bands"]


@case("A with 3 bands, B with 5")
def a_b_band_mismatch(tmp):
  root = _pairs(tmp / "d", names=("p0",))
  (root / "B" / "p0.png").unlink()
  p = write_geotiff(root / "B" / "p0.tif", np.zeros((64, 64, 5), np.uint8) + 9)
  return _describe(root), [str(root / "A" / "p0.png"), str(p), "band mismatch"]


@case("garbage bytes in a .tif")
def corrupt_tif(tmp):
  root = _pairs(tmp / "d", names=("p0",))
  (root / "A" / "p0.png").unlink()
  p = root / "A" / "p0.tif"
  p.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
  return _describe(root), [str(p)]


@case("a truncated deflate GeoTIFF")
def truncated_geotiff(tmp):
  root = _pairs(tmp / "d", names=("p0",))
  (root / "B" / "p0.png").unlink()
  x = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  p = write_geotiff(root / "B" / "p0.tif", x)  # band-interleaved, deflate
  p.write_bytes(p.read_bytes()[:600])
  return _describe(root), [str(p)]


@case("OSCD: a city without one of its 13 band files")
def oscd_missing_band(tmp):
  write_oscd(tmp / "o", train=("abudhabi", "nantes", "pisa", "rennes"), test=("dubai",), size=30,
             smaller_date2=(), folders=OSCD_SIMPLE)
  band = next((tmp / "o" / "images" / "nantes" / "imgs_2").glob("*_B8A.tif"))
  band.unlink()
  return ["jaxcd.data.describe", "--no_progress", "--dataset", "oscd", "--data_dir",
          str(tmp / "o")], [str(band.parent), "B8A"]


@case("OSCD: a city without its change map")
def oscd_missing_label(tmp):
  write_oscd(tmp / "o", train=("abudhabi", "nantes", "pisa", "rennes"), test=("dubai",), size=30,
             smaller_date2=(), folders=OSCD_SIMPLE)
  cm = tmp / "o" / "test_labels" / "dubai" / "cm" / "dubai-cm.tif"
  cm.unlink()
  return ["jaxcd.data.describe", "--no_progress", "--dataset", "oscd", "--data_dir",
          str(tmp / "o"), "--splits", "test"], ["dubai"]


@case("two pairs of date folders (A/B and t1/t2) in one folder")
def ambiguous_date_folders(tmp):
  root = _pairs(tmp / "d")
  for d in ("t1", "t2"):
    (root / d).mkdir()
  return _describe(root), ["A", "t1", str(root)]


# --- cases: configs and command lines (these import JAX) ---------------------------------------

@case("misspelled config field (--config.optim.lrr)", slow=True)
def misspelled_config_field(tmp):
  return _train("--config.optim.lrr=0.01", f"--workdir={tmp / 'w'}"), [
      "--config.optim.lrr", "did you mean 'lr'", "weight_decay"]


@case("misspelled config group (--config.optimm.lr)", slow=True)
def misspelled_config_group(tmp):
  return _train("--config.optimm.lr=0.01", f"--workdir={tmp / 'w'}"), [
      "--config.optimm.lr", "did you mean 'optim'"]


@case("config value of the wrong type (--config.num_steps=abc)", slow=True)
def config_wrong_type(tmp):
  return _train("--config.num_steps=abc", f"--workdir={tmp / 'w'}"), ["--config.num_steps=abc"]


@case("a data option the source does not take (tile_size on synthetic)", slow=True)
def data_option_of_other_source(tmp):
  return _train("--config.data.tile_size=512", f"--workdir={tmp / 'w'}"), [
      "--config.data.tile_size", "'synthetic'", "image_size"]


@case("misspelled data option after --config.data.name=folder", slow=True)
def misspelled_data_option(tmp):
  return _train("--config.data.name=folder", "--config.data.label_encodng=1_2",
                f"--workdir={tmp / 'w'}"), ["--config.data.label_encodng", "'label_encoding'"]


@case("config file that does not exist", slow=True)
def missing_config_file(tmp):
  return ["jaxcd.train", "--config", str(tmp / "nope.py")], [str(tmp / "nope.py")]


@case("negative num_steps", slow=True)
def negative_steps(tmp):
  return _train("--config.num_steps=-1", f"--workdir={tmp / 'w'}"), ["config.num_steps"]


@case("global batch larger than the training split (checked before the first step)", slow=True)
def batch_larger_than_split(tmp):
  root = _splits(tmp / "d")
  return _train("--config.data.name=folder", f"--config.data.data_dir={root}",
                "--config.input.batch_size=4", f"--workdir={tmp / 'w'}"), [
      "input.batch_size", "2 training pairs"]


@case("label_encoding=1_2 on 0/255 labels (found before the first step)", slow=True)
def wrong_encoding_before_training(tmp):
  root = _splits(tmp / "d")
  return _train("--config.data.name=folder", f"--config.data.data_dir={root}",
                "--config.data.label_encoding=1_2", "--config.input.batch_size=2",
                f"--workdir={tmp / 'w'}"), [str(root / "train" / "label"), "'1_2'"]


@case("evaluate a workdir without checkpoints", slow=True)
def evaluate_without_checkpoint(tmp):
  (tmp / "w").mkdir()
  return ["jaxcd.evaluate", "--config", str(REPO / "configs" / "fc_siam_diff.py"),
          f"--workdir={tmp / 'w'}", "--split=test"], [str(tmp / "w")]


@case("predict: A image does not exist", slow=True)
def predict_missing_image(tmp):
  b = _png(tmp / "b.png", np.zeros((64, 64, 3), np.uint8))
  return ["jaxcd.predict", "--config", str(REPO / "configs" / "fc_siam_diff.py"),
          f"--workdir={tmp / 'w'}", f"--out={tmp / 'o'}", str(tmp / "a.png"), str(b)], [
      str(tmp / "a.png"), "not found"]


@case("predict: a folder given as the A image", slow=True)
def predict_directory_as_image(tmp):
  (tmp / "a.png").mkdir()
  b = _png(tmp / "b.png", np.zeros((64, 64, 3), np.uint8))
  return ["jaxcd.predict", "--config", str(REPO / "configs" / "fc_siam_diff.py"),
          f"--workdir={tmp / 'w'}", f"--out={tmp / 'o'}", str(tmp / "a.png"), str(b)], [
      str(tmp / "a.png"), "directory"]


@case("predict: A and B of different sizes", slow=True)
def predict_size_mismatch(tmp):
  a = _png(tmp / "a.png", np.zeros((64, 64, 3), np.uint8))
  b = _png(tmp / "b.png", np.zeros((64, 96, 3), np.uint8))
  return ["jaxcd.predict", "--config", str(REPO / "configs" / "fc_siam_diff.py"),
          f"--workdir={tmp / 'w'}", f"--out={tmp / 'o'}", str(a), str(b)], [str(a), str(b)]


@case("predict: a pairs file line with one path", slow=True)
def predict_bad_pairs_file(tmp):
  f = tmp / "pairs.txt"
  f.write_text("a.png b.png\nonly_one.png\n")
  return ["jaxcd.predict", "--config", str(REPO / "configs" / "fc_siam_diff.py"),
          f"--workdir={tmp / 'w'}", f"--out={tmp / 'o'}", f"--pairs_file={f}"], [f"{f}:2"]


# --- running them ------------------------------------------------------------------------------

def run_case(name: str, tmp: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
  argv, expected = CASES[name][0](tmp)
  if argv[0] == "jaxcd.data.describe":
    from jaxcd.data import describe
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        rc = describe.main(argv[1:])
      except SystemExit as e:  # argparse
        rc = e.code
    return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue()), expected
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=600)
  return out, expected


def error_line(out: subprocess.CompletedProcess) -> str:
  """The one `error:` line, checked to be stderr's last line and the only one."""
  lines = out.stderr.rstrip().splitlines()
  errors = [line for line in lines if line.startswith("error: ")]
  assert "Traceback" not in out.stderr, out.stderr
  assert out.returncode == 2, (out.returncode, out.stderr)
  assert len(errors) == 1 and lines[-1] == errors[0], out.stderr
  return errors[0]


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if slow else [])
                                  for n, (_, slow, _) in CASES.items()])
def test_bad_input_gives_one_error_line(name, tmp_path):
  out, expected = run_case(name, tmp_path)
  line = error_line(out)
  for text in expected:
    assert text in line, (text, line)


def test_enough_cases():
  assert len(CASES) >= 30


if __name__ == "__main__":
  print("| case | command | error (paths shortened) |\n|---|---|---|")
  for name, (_, _, what) in CASES.items():
    with tempfile.TemporaryDirectory() as d:
      out, _ = run_case(name, Path(d))
      line = error_line(out).replace(d, "…")
      module = out.args[0] if out.args[0].startswith("jaxcd.") else out.args[2]
      command = module.split(".")[-1]
      print(f"| {what} | {command} | `{line}` |".replace("\n", " "))
