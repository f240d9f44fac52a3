"""`jaxcd.predict` and `jaxcd.evaluate` see a pair alike: the same decoding (the config's 16-bit
scaling, label encoding, band order), the same sliding window for pairs larger than the
evaluation window, and so the same confusion matrix, pixel for pixel. Also the evaluation's
window rule and its batches of pairs of one size (function level, with a per-pixel model)."""
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcd import metrics as metrics_lib, parallel, sliding, steps
from jaxcd.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _png(path: Path, x: np.ndarray) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(x).save(path)
  return path


# --- function level: the evaluation window and where evaluation slides --------------------------

def _config(**input_fields):
  from jaxcd.config_base import base_config
  c = base_config()
  c.progress = False
  c.input.eval_batch_size = 4
  for k, v in input_fields.items():
    c.input[k] = v
  return c


def test_eval_window_rule():
  assert sliding.eval_window(_config()) == sliding.EvalWindow(256, 64, False)
  assert sliding.eval_window(_config(crop_size=300)).tile == 320  # the training crop, to 32
  assert sliding.eval_window(_config(eval_tile=64, eval_overlap=16)) == sliding.EvalWindow(
      64, 16, False)
  assert sliding.eval_window(_config(eval_tile=64)).overlap == 16  # capped at a quarter
  for bad in (dict(eval_tile=100), dict(eval_tile=0), dict(eval_overlap=-1)):
    with pytest.raises(ConfigError, match=r"config\.input\.eval_"):
      sliding.eval_window(_config(**bad))
  fixed = _config()
  fixed.model.input_size = 64  # Dsfer-Net's (C,H,W) LayerNorm: one input size
  w = sliding.eval_window(fixed)
  assert w == sliding.EvalWindow(64, 16, True)  # the default overlap shrinks with the window
  assert w.needs_windows(32, 64) and w.needs_windows(128, 64) and not w.needs_windows(64, 64)


@jax.jit
def _score(a_BxHxWxC, b_BxHxWxC):
  """A per-pixel 'model': windows and blending must reproduce its whole-image output."""
  d = jnp.mean(jnp.asarray(b_BxHxWxC, jnp.float32) - jnp.asarray(a_BxHxWxC, jnp.float32), -1)
  return jax.nn.sigmoid(d / 20.0)


@jax.jit
def _confusion(a, b, label, valid):
  return metrics_lib.confusion_matrix(_score(a, b) > 0.5, label, 2, 255, valid=valid)


def _records(root: Path, sizes):
  """A folder dataset of random pairs of these sizes (stems p0, p1, ... in order)."""
  from jaxcd.data.folder import folder
  rng = np.random.default_rng(0)
  for i, (h, w) in enumerate(sizes):
    for d in ("A", "B"):
      _png(root / d / f"p{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    label = (rng.random((h, w)) < 0.4).astype(np.uint8)
    label[:2] = 255
    _png(root / "label" / f"p{i}.png", label)
  return folder("all", data_dir=str(root), label_encoding="0_1")


def test_evaluate_slides_over_large_pairs_and_batches_each_size_unpadded(tmp_path):
  config = _config(eval_tile=64, eval_overlap=16)
  src = _records(tmp_path, [(64, 64), (32, 64), (100, 150), (64, 64), (64, 64)])
  mesh = parallel.make_mesh()
  batches, windows = [], []

  def eval_step(params, batch_stats, batch):
    batches.append(batch["label"].shape)
    return _confusion(batch["image_a"], batch["image_b"], batch["label"],
                      batch["valid"][:, None, None])

  def score(a, b):
    windows.append(a.shape)
    return _score(a, b)

  res = steps.evaluate(eval_step, None, None, src, config, mesh, num_classes=2, score=score)
  # Whole pairs in one batch per size, never padded beyond their count; the 100x150 pair in
  # 64x64 windows (2 rows x 3 columns) in batches of the eval batch size.
  assert batches == [(3, 64, 64), (1, 32, 64)]
  assert windows == [(4, 64, 64, 3), (4, 64, 64, 3)]
  cm = np.zeros((2, 2), np.int64)
  for r in src:
    cm += np.asarray(_confusion(r["image_a"][None], r["image_b"][None], r["label"][None], True))
  np.testing.assert_array_equal(res["confusion_matrix"], cm)


def test_evaluate_without_a_score_names_the_window_field(tmp_path):
  src = _records(tmp_path, [(100, 100)])
  with pytest.raises(ConfigError, match=r"config\.input\.eval_tile"):
    steps.evaluate(lambda *a: None, None, None, src, _config(eval_tile=64), parallel.make_mesh(),
                   num_classes=2)


# --- end to end: a tiny trained run, predict's per-pair matrices against evaluate's --------------

_CONFIG_FILE = '''
from jaxcd.config_base import base_config, on_dataset


def get_config(variant=""):
  c = base_config()
  on_dataset(c, "folder", {data_dir!r})
  c.data.scale_16bit = "shift" if variant == "shift" else "minmax"
  c.data.label_encoding = "1_2" if variant == "label12" else "auto"
  c.data.label_dir = "label12" if variant == "label12" else "label"
  c.data.band_order = (2, 1, 0) if variant == "bgr" else ()
  c.input.eval_tile = 64 if variant == "window" else 256
  c.input.eval_overlap = 16
  c.input.batch_size = 4
  c.input.eval_batch_size = 4
  c.model.name = "fc_siam_diff"
  c.num_steps = 4
  c.eval_every = 4
  c.checkpoint_every = 4
  c.log_every = 4
  c.progress = False
  return c
'''
SPLITS = {"train": 8, "val": 2, "test": 3}


def _tif16(path: Path, x_HxWxC: np.ndarray) -> Path:
  import rasterio
  path.parent.mkdir(parents=True, exist_ok=True)
  with rasterio.open(path, "w", driver="GTiff", height=x_HxWxC.shape[0], width=x_HxWxC.shape[1],
                     count=x_HxWxC.shape[2], dtype="uint16") as ds:
    ds.write(np.moveaxis(x_HxWxC, -1, 0))
  return path


def _write_dataset(root: Path) -> None:
  """Synthetic scenes as 12-bit data in 16-bit 3-band GeoTIFFs (a per-file offset, so minmax and
  shift scaling differ), labels 0/255 in label/ and 1 = no change, 2 = change, 0 = ignore in
  label12/. Splits by list files; `big` is one 96x150 pair, larger than a 64 window."""
  from jaxcd.data.synthetic import SyntheticSource
  stems = {}
  k = 0
  for split, n in SPLITS.items():
    src = SyntheticSource("train", image_size=64, num_train=sum(SPLITS.values()), seed=3)
    stems[split] = []
    for _ in range(n):
      stems[split].append(_write_pair(root, f"p{k:02d}", src[k], k))
      k += 1
  big = SyntheticSource("test", image_size=160, num_test=1, seed=3)[0]
  crop = {key: big[key][:96, :150] for key in ("image_a", "image_b", "label")}
  stems["big"] = [_write_pair(root, "big", crop, k)]
  for split, names in stems.items():
    (root / "list").mkdir(parents=True, exist_ok=True)
    (root / "list" / f"{split}.txt").write_text("\n".join(names) + "\n")


def _write_pair(root: Path, stem: str, rec: dict, k: int) -> str:
  for key, folder in (("image_a", "A"), ("image_b", "B")):
    _tif16(root / folder / f"{stem}.tif",
           rec[key].astype(np.uint16) * 12 + 100 * (k % 5) + 37 * (folder == "B"))
  label = rec["label"]
  _png(root / "label" / f"{stem}.png", label * np.uint8(255))
  coded = label + np.uint8(1)
  coded[::7] = 0  # ignored rows
  _png(root / "label12" / f"{stem}.png", coded)
  return stem


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  pytest.importorskip("rasterio")
  from jaxcd import trainer
  from jaxcd.config_base import sibling
  d = tmp_path_factory.mktemp("predict_vs_evaluate")
  _write_dataset(d / "data")
  cfg = d / "cfg.py"
  cfg.write_text(_CONFIG_FILE.format(data_dir=str(d / "data")))
  workdir = d / "run"
  trainer.train_and_evaluate(sibling(str(cfg), "cfg"), str(workdir))
  return {"dir": d, "cfg": cfg, "workdir": workdir, "cache": {}}


def _predict_and_evaluate(run, variant: str, split: str) -> tuple[dict, dict]:
  """(predict's summary over the split's pairs from a pairs file, evaluate's metrics), cached.
  The label12 variant runs the command line (`--pairs_file`), the others `predict_pairs` on
  `read_pairs_file`, its parser, in this process."""
  key = (variant, split)
  if key in run["cache"]:
    return run["cache"][key]
  from jaxcd import evaluate, predict
  from jaxcd.config_base import sibling
  config = sibling(str(run["cfg"]), "cfg", variant)
  data = run["dir"] / "data"
  stems = (data / "list" / f"{split}.txt").read_text().split()
  pairs = run["dir"] / f"pairs_{variant or 'default'}_{split}.txt"
  pairs.write_text("".join(f"{data / 'A' / s}.tif {data / 'B' / s}.tif "
                           f"{data / config.data.label_dir / s}.png\n" for s in stems))
  out = run["dir"] / f"out_{variant or 'default'}_{split}"
  window = dict(tile=64, overlap=16, batch=4) if variant == "window" else {}
  if variant == "label12":
    r = subprocess.run([sys.executable, "-m", "jaxcd.predict", "--config",
                        f"{run['cfg']}:{variant}", "--workdir", str(run["workdir"]),
                        "--pairs_file", str(pairs), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
  else:
    summary = predict.predict_pairs(config, str(run["workdir"]), predict.read_pairs_file(pairs),
                                    out, **window)
  res = evaluate.evaluate_workdir(config, str(run["workdir"]), split)
  run["cache"][key] = summary, res
  return summary, res


@pytest.mark.slow
@pytest.mark.parametrize("variant,split", [("", "test"), ("shift", "test"), ("label12", "test"),
                                           ("bgr", "test"), ("window", "big")])
def test_predict_confusion_matrices_sum_to_evaluates(run, variant, split):
  summary, res = _predict_and_evaluate(run, variant, split)
  assert summary["checkpoint"] == res["checkpoint"] == "best"
  cm = np.sum([p["metrics"]["confusion_matrix"] for p in summary["pairs"]], axis=0)
  np.testing.assert_array_equal(cm, res["confusion_matrix"])
  assert cm.sum() > 0 and res["pairs"] == len(summary["pairs"])
  if variant == "label12":  # rows coded 0 are ignored by both
    assert cm.sum() < sum(64 * 64 for _ in summary["pairs"])


@pytest.mark.slow
def test_scale_16bit_reaches_predict(run):
  minmax, _ = _predict_and_evaluate(run, "", "test")
  shift, _ = _predict_and_evaluate(run, "shift", "test")
  for p, q in zip(minmax["pairs"], shift["pairs"]):
    prob_p, prob_q = (np.asarray(Image.open(x["prob"]), np.int16) for x in (p, q))
    assert np.abs(prob_p - prob_q).max() > 0, p["a"]
