"""jaxcd.predict: the sliding window (`jaxcd.sliding`) against a single pass, blending of
tile-edge artifacts, overlay colours, the true-colour panel, pairs files, and the command line
end to end on a tiny trained run (change maps, overlays, metrics, GeoTIFF handling, one-line
errors with exit code 2)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from jaxcd import predict, sliding, trainer
from jaxcd.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "fc_siam_diff.py")


def _sigmoid_of_mean_diff(a_BxHxWxC: np.ndarray, b_BxHxWxC: np.ndarray) -> np.ndarray:
  """A per-pixel 'model': any tiling and blending must reproduce its whole-image output."""
  d = b_BxHxWxC.astype(np.float32).mean(-1) - a_BxHxWxC.astype(np.float32).mean(-1)
  return 1.0 / (1.0 + np.exp(-d / 20.0))


def _pair(h: int, w: int, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (h, w, c), dtype=np.uint8),
          rng.integers(0, 256, (h, w, c), dtype=np.uint8))


# --- sliding window ----------------------------------------------------------------------------

@pytest.mark.parametrize("size,tile,overlap", [(100, 64, 16), (77, 64, 0), (64, 64, 32),
                                               (300, 64, 48), (65, 32, 31)])
def test_tile_starts_cover_the_image_and_stay_inside(size, tile, overlap):
  starts = sliding.tile_starts(size, tile, overlap)
  assert starts[0] == 0 and starts[-1] == size - tile
  assert all(0 <= s <= size - tile for s in starts)
  gaps = np.diff(starts)
  assert np.all(gaps > 0) and np.all(gaps <= tile - overlap)  # every seam overlaps enough
  # The fewest windows: one less could not reach the end with that overlap.
  assert len(starts) == 1 or tile + (len(starts) - 2) * (tile - overlap) < size
  covered = np.zeros(size, bool)
  for s in starts:
    covered[s:s + tile] = True
  assert covered.all()


@pytest.mark.parametrize("tile,overlap", [(64, 16), (64, 32), (32, 8)])
def test_ramp_windows_sum_to_one_where_regular_tiles_overlap(tile, overlap):
  w = sliding.ramp_window(tile, overlap)
  assert w.min() > 0 and w.max() <= 1.0
  total = np.zeros(tile * 5)
  for s in range(0, len(total) - tile + 1, tile - overlap):
    total[s:s + tile] += w
  interior = total[tile:3 * tile]  # away from the first and last window's free ends
  np.testing.assert_allclose(interior, 1.0, atol=1e-6)


@pytest.mark.parametrize("hw", [(100, 77), (40, 40), (64, 64), (130, 200)])
@pytest.mark.parametrize("tile,overlap,batch", [(64, 16, 3), (64, 0, 8), (32, 24, 2), (96, 40, 1)])
def test_sliding_window_equals_single_pass_for_a_per_pixel_model(hw, tile, overlap, batch):
  a, b = _pair(*hw, seed=hw[0] + tile)
  expected = _sigmoid_of_mean_diff(a[None], b[None])[0]
  got = sliding.sliding_window_predict(_sigmoid_of_mean_diff, a, b, tile, overlap, batch)
  assert got.shape == hw and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_sliding_window_any_band_count_and_fixed_size_model():
  a, b = _pair(50, 70, c=5)
  calls = []

  def fn(x, y):
    calls.append(x.shape)
    return _sigmoid_of_mean_diff(x, y)
  got = sliding.sliding_window_predict(fn, a, b, tile=64, overlap=16, batch=4, fixed_size=True)
  np.testing.assert_allclose(got, _sigmoid_of_mean_diff(a[None], b[None])[0], atol=2e-6)
  # A model built for one size only ever sees that size, even for a thinner image.
  assert {s[1:] for s in calls} == {(64, 64, 5)}


def test_small_image_is_one_pass_and_large_one_has_one_tile_shape():
  shapes = []

  def fn(x, y):
    shapes.append(x.shape)
    return _sigmoid_of_mean_diff(x, y)
  sliding.sliding_window_predict(fn, *_pair(40, 40), tile=256, overlap=64, batch=8)
  assert shapes == [(1, 64, 64, 3)]  # 40 padded to the next multiple of 32, not to the tile
  shapes.clear()
  sliding.sliding_window_predict(fn, *_pair(64, 96), tile=256, overlap=64, batch=8)
  assert shapes == [(1, 64, 96, 3)]  # compatible size: no padding at all
  shapes.clear()
  sliding.sliding_window_predict(fn, *_pair(150, 220), tile=64, overlap=16, batch=5)
  # One compilation: every call has the same shape (the last batch is filled up).
  assert len(set(shapes)) == 1 and shapes[0] == (5, 64, 64, 3) and len(shapes) > 1


def test_blending_suppresses_tile_edge_artifacts():
  """Real networks are worst at tile borders; the ramp window must fade them out at seams."""
  a, b = _pair(200, 170)
  tile, overlap, ring, err = 64, 32, 4, 0.4
  edge_TxT = np.ones((tile, tile), bool)
  edge_TxT[ring:-ring, ring:-ring] = False

  def artifact(x, y):
    return _sigmoid_of_mean_diff(x, y) * (1 - err) + err * edge_TxT  # wrong near every edge
  truth = _sigmoid_of_mean_diff(a[None], b[None])[0] * (1 - err)
  got = sliding.sliding_window_predict(artifact, a, b, tile, overlap, batch=4)
  inner = np.abs(got - truth)[ring:-ring, ring:-ring]  # the image border has no second tile
  # Plain averaging of two tiles would leave err/2 at every seam, no blending the full err.
  assert inner.max() < err / 4, inner.max()


def test_sliding_window_rejects_bad_options():
  a, b = _pair(40, 40)
  with pytest.raises(ConfigError, match="--overlap"):
    sliding.sliding_window_predict(_sigmoid_of_mean_diff, a, b, tile=64, overlap=64)
  with pytest.raises(ConfigError, match="--batch"):
    sliding.sliding_window_predict(_sigmoid_of_mean_diff, a, b, tile=64, overlap=8, batch=0)


# --- pictures ----------------------------------------------------------------------------------

def test_overlay_colours():
  label = np.array([[1, 0, 1, 0, 255, 255]], np.uint8)
  pred = np.array([[1, 1, 0, 0, 1, 0]], np.uint8)
  expected = np.array([[[255, 255, 255], [0, 255, 255], [255, 0, 0], [0, 0, 0],
                        [128, 128, 128], [128, 128, 128]]], np.uint8)
  np.testing.assert_array_equal(predict.overlay(label, pred), expected)


def test_overlay_on_image_tints_only_changes_red():
  image = np.full((2, 2, 1), 100, np.uint8)  # one band: shown as grey
  pred = np.array([[1, 0], [0, 1]], np.uint8)
  out = predict.overlay_on_image(image, pred, alpha=0.5)
  np.testing.assert_array_equal(out[0, 1], [100, 100, 100])
  np.testing.assert_array_equal(out[0, 0], [178, 50, 50])  # 100/2 + 255/2 = 177.5 -> 178
  np.testing.assert_array_equal(out[1, 1], [178, 50, 50])


def test_to_rgb_of_multiband_and_grey():
  x = np.arange(2 * 2 * 5, dtype=np.uint8).reshape(2, 2, 5)
  np.testing.assert_array_equal(predict.to_rgb(x), x[..., :3])
  np.testing.assert_array_equal(predict.to_rgb(x[..., :1]), np.repeat(x[..., :1], 3, -1))


@pytest.mark.parametrize("bands,override,expected", [
    (13, (), (3, 2, 1)),  # Sentinel-2 B04, B03, B02
    (4, (), (0, 1, 2)), (3, (), (0, 1, 2)), (1, (), (0, 0, 0)), (2, (), (0, 0, 0)),
    (13, (7, 3, 2), (7, 3, 2)), (4, [3, 1, 0], (3, 1, 0))])
def test_rgb_bands_true_colour_and_override(bands, override, expected):
  assert predict.rgb_bands(bands, override) == expected


@pytest.mark.parametrize("override", [(0, 1), (0, 1, 13), (-1, 0, 1)])
def test_rgb_bands_rejects_a_bad_override(override):
  with pytest.raises(ConfigError, match=r"config\.data\.rgb_bands"):
    predict.rgb_bands(13, override)


def test_multiband_panel_is_true_colour_stretched_jointly_rgb_is_not():
  rng = np.random.default_rng(0)
  # 13 dark bands (16-bit data scaled to 8 bits); B04/B03/B02 each in their own narrow range.
  a = rng.integers(0, 30, (40, 50, 13), dtype=np.uint8)
  a[..., 3], a[..., 2], a[..., 1] = (rng.integers(lo, lo + 20, (40, 50), dtype=np.uint8)
                                     for lo in (10, 40, 70))
  b = a.copy()
  b[..., 3] //= 2  # B darker in red than A
  ra, rb = predict.display_images([a, b])
  assert ra.shape == rb.shape == (40, 50, 3) and ra.dtype == np.uint8
  # Each shown band goes from its joint 2nd to 98th percentile onto 0..255.
  for ch, band in enumerate((3, 2, 1)):
    both = np.concatenate([a[..., band].ravel(), b[..., band].ravel()]).astype(np.float32)
    lo, hi = np.percentile(both, (2, 98))
    expected = np.rint(np.clip((a[..., band] - lo) * 255 / (hi - lo), 0, 255))
    np.testing.assert_array_equal(ra[..., ch], expected)
    assert np.mean(ra[..., ch] == 0) < 0.1 and np.mean(ra[..., ch] == 255) < 0.1
  assert rb[..., 0].mean() < ra[..., 0].mean() - 50  # one stretch: B stays darker than A
  # The override picks other bands; 8-bit RGB and grey are shown as they are.
  ro, _ = predict.display_images([a, b], (0, 0, 0))
  assert np.all(ro[..., 0] == ro[..., 1])
  rgb = rng.integers(0, 20, (8, 8, 3), dtype=np.uint8)
  np.testing.assert_array_equal(predict.display_images([rgb, rgb])[0], rgb)
  grey = rgb[..., :1]
  np.testing.assert_array_equal(predict.display_images([grey])[0], np.repeat(grey, 3, -1))


def test_stretch_keeps_a_constant_band():
  x = np.full((4, 4, 3), 7, np.uint8)
  lo, hi = predict.stretch_limits([x])
  np.testing.assert_array_equal(predict.stretch(x, lo, hi), x)


# --- pairs files and checks --------------------------------------------------------------------

def _png(path: Path, x: np.ndarray) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(x).save(path)
  return path


def test_pairs_file_paths_are_relative_to_it(tmp_path):
  f = tmp_path / "lists" / "pairs.txt"
  f.parent.mkdir()
  f.write_text("# comment\n../A/x.png ../B/x.png\n\n'/abs dir/a.png' /b.png lab.png  # label\n")
  pairs = predict.read_pairs_file(f)
  assert pairs == [predict.Pair(f.parent / "../A/x.png", f.parent / "../B/x.png"),
                   predict.Pair(Path("/abs dir/a.png"), Path("/b.png"), f.parent / "lab.png")]
  f.write_text("a.png b.png\nonly_one.png\n")
  with pytest.raises(DataError, match=f"{f}:2"):
    predict.read_pairs_file(f)


def test_unique_stems_tell_same_named_files_apart():
  pairs = [predict.Pair(Path(a), Path("b")) for a in
           ("Szada/1/im1.bmp", "Szada/2/im1.bmp", "x/2/im1.bmp", "c.png")]
  stems = predict.unique_stems(pairs)
  assert stems[0] == "im1" and stems[1] == "2_im1" and stems[3] == "c"
  assert len(set(stems)) == len(stems)


def test_precheck_names_missing_and_mismatched_files(tmp_path):
  a = _png(tmp_path / "a.png", np.zeros((40, 30, 3), np.uint8))
  b = _png(tmp_path / "b.png", np.zeros((40, 30, 3), np.uint8))
  small = _png(tmp_path / "small.png", np.zeros((40, 20, 3), np.uint8))
  lab = _png(tmp_path / "lab.png", np.zeros((30, 30), np.uint8))
  predict.precheck([predict.Pair(a, b)])
  with pytest.raises(DataError, match=f"image file not found: {tmp_path / 'nope.png'}"):
    predict.precheck([predict.Pair(a, b), predict.Pair(a, tmp_path / "nope.png")])
  with pytest.raises(DataError) as e:
    predict.precheck([predict.Pair(a, small)])
  assert str(a) in str(e.value) and str(small) in str(e.value)
  with pytest.raises(DataError, match=str(lab)):
    predict.precheck([predict.Pair(a, b, lab)])


# --- command line ------------------------------------------------------------------------------

def _run(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        cwd=REPO, timeout=timeout)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
  """A 4-step FC-Siam-diff run on 64x64 synthetic scenes: a real checkpoint to predict with."""
  workdir = tmp_path_factory.mktemp("predict_run") / "run"
  trainer.train_and_evaluate(tiny_config(num_steps=4, eval_every=4, checkpoint_every=4), str(workdir))
  return workdir


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> dict:
  """Two synthetic pairs cut to sizes no tile divides, as PNGs (A of the first one a GeoTIFF)."""
  from jaxcd.data.synthetic import SyntheticSource
  d = tmp_path_factory.mktemp("scenes")
  src = SyntheticSource("test", image_size=96, num_test=2)
  out = {}
  for i, (h, w) in enumerate([(90, 70), (96, 81)]):
    rec = src[i]
    out[i] = dict(a=rec["image_a"][:h, :w], b=rec["image_b"][:h, :w], label=rec["label"][:h, :w],
                  b_path=_png(d / f"s{i}_B.png", rec["image_b"][:h, :w]),
                  label_path=_png(d / f"s{i}_L.png", rec["label"][:h, :w] * 255))
    out[i]["a_path"] = _png(d / f"s{i}_A.png", out[i]["a"])
  # A as a GeoTIFF: written by rasterio with a CRS when it is installed, else with the GeoTIFF
  # tags by Pillow (georeference must then be reported as lost).
  out["geo_path"] = d / "s0_A.tif"
  out["transform"] = (1.5, 0.0, 500000.0, 0.0, -1.5, 5200000.0)
  try:
    import rasterio
    from rasterio.transform import Affine
    a = out[0]["a"]
    with rasterio.open(out["geo_path"], "w", driver="GTiff", height=a.shape[0], width=a.shape[1],
                       count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(*out["transform"])) as ds:
      ds.write(np.moveaxis(a, -1, 0))
  except ImportError:
    Image.fromarray(out[0]["a"]).save(out["geo_path"], tiffinfo={
        33550: (1.5, 1.5, 0.0), 33922: (0.0, 0.0, 0.0, 500000.0, 5200000.0, 0.0)})
  return out


def _read(path) -> np.ndarray:
  return np.asarray(Image.open(path))


def _check_change_maps(res: dict, h: int, w: int) -> np.ndarray:
  for key in ("change", "prob", "overlay", "panel"):
    assert Path(res[key]).is_file(), key
  change = _read(res["change"])
  assert change.shape == (h, w) and set(np.unique(change)) <= {0, 255}
  prob = _read(res["prob"])
  assert prob.shape == (h, w)
  # The map is the thresholded probability (0.5 <-> 127.5 after rounding to 0-255).
  assert np.all(prob[change == 255] >= 127) and np.all(prob[change == 0] <= 128)
  assert _read(res["overlay"]).shape == (h, w, 3)
  return change // 255


@pytest.mark.slow
def test_cli_pair_with_label_metrics_and_geotiff(trained, scenes, tmp_path):
  s = scenes[0]
  out = tmp_path / "out"
  r = _run("jaxcd.predict", "--config", CONFIG, "--workdir", str(trained), str(scenes["geo_path"]),
           str(s["b_path"]), "--label", str(s["label_path"]), "--out", str(out), "--tile", "64",
           "--overlap", "16", "--batch", "3")
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.loads(r.stdout.strip().splitlines()[-1])
  assert summary["checkpoint"] == "best" and summary["step"] == 4
  (res,) = summary["pairs"]
  assert Path(res["change"]).name == "s0_A_change.png"
  pred = _check_change_maps(res, 90, 70)

  # Metrics against an independent count on the written map and the label.
  truth = s["label"] == 1
  tp, fp = np.sum(truth & (pred == 1)), np.sum(~truth & (pred == 1))
  fn = np.sum(truth & (pred == 0))
  m = res["metrics"]
  assert m["confusion_matrix"] == [[int(truth.size - tp - fp - fn), int(fp)], [int(fn), int(tp)]]
  assert m["f1"] == pytest.approx(2 * tp / max(2 * tp + fp + fn, 1), abs=1e-4)
  assert f"f1 {m['f1']:.4f}" in r.stdout

  ov = _read(res["overlay"])
  assert np.all(ov[truth & (pred == 1)] == [255, 255, 255])
  assert np.all(ov[~truth & (pred == 1)] == [0, 255, 255])
  assert np.all(ov[truth & (pred == 0)] == [255, 0, 0])
  assert np.all(ov[~truth & (pred == 0)] == [0, 0, 0])

  import rasterio
  with rasterio.open(res["change_tif"]) as ds:
    assert ds.crs.to_epsg() == 32633
    assert tuple(ds.transform)[:6] == scenes["transform"]
    np.testing.assert_array_equal(ds.read(1), pred * 255)


@pytest.mark.slow
def test_cli_pairs_file_without_and_with_label(trained, scenes, tmp_path):
  f = tmp_path / "pairs.txt"
  s0, s1 = scenes[0], scenes[1]
  f.write_text(f"{s1['a_path']} {s1['b_path']}\n"
               f"{s0['a_path']} {s0['b_path']} {s0['label_path']}\n")
  out = tmp_path / "out"
  r = _run("jaxcd.predict", "--config", CONFIG, "--workdir", str(trained), "--pairs_file", str(f),
           "--out", str(out), "--tile", "64", "--overlap", "32", "--checkpoint", "latest")
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.loads(r.stdout.strip().splitlines()[-1])
  assert summary["checkpoint"] == "checkpoints"
  res1, res0 = summary["pairs"]
  assert "metrics" not in res1 and "metrics" in res0
  pred1 = _check_change_maps(res1, 96, 81)
  _check_change_maps(res0, 90, 70)
  # Without a label: B unchanged where nothing changed, reddened where the model sees change.
  ov, b = _read(res1["overlay"]).astype(int), s1["b"].astype(int)
  np.testing.assert_array_equal(ov[pred1 == 0], b[pred1 == 0])
  if pred1.any():
    assert np.all(ov[pred1 == 1][:, 0] >= b[pred1 == 1][:, 0])
    assert np.all(ov[pred1 == 1][:, 1] <= b[pred1 == 1][:, 1])


def _error_line(r: subprocess.CompletedProcess) -> str:
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  assert "Traceback" not in r.stderr
  lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1, r.stderr[-2000:]
  return lines[0]


def test_cli_missing_b_file(scenes, tmp_path):
  missing = tmp_path / "nope_B.png"
  r = _run("jaxcd.predict", "--config", CONFIG, "--workdir", str(tmp_path),
           str(scenes[0]["a_path"]), str(missing), "--out", str(tmp_path / "out"))
  assert str(missing) in _error_line(r)
  assert not (tmp_path / "out").exists()  # failed before writing anything


def test_cli_size_mismatch(scenes, tmp_path):
  a, b = scenes[0]["a_path"], scenes[1]["b_path"]
  r = _run("jaxcd.predict", "--config", CONFIG, "--workdir", str(tmp_path), str(a), str(b),
           "--out", str(tmp_path / "out"))
  line = _error_line(r)
  assert str(a) in line and str(b) in line


def test_cli_no_checkpoint(scenes, tmp_path):
  empty = tmp_path / "empty_run"
  empty.mkdir()
  r = _run("jaxcd.predict", "--config", CONFIG, "--workdir", str(empty), str(scenes[0]["a_path"]),
           str(scenes[0]["b_path"]), "--out", str(tmp_path / "out"))
  assert str(empty) in _error_line(r)


@pytest.mark.slow
def test_cli_band_count_differs_from_config(trained, tmp_path):
  a = _png(tmp_path / "grey_A.png", np.zeros((40, 40), np.uint8))
  b = _png(tmp_path / "grey_B.png", np.zeros((40, 40), np.uint8))
  r = _run("jaxcd.predict", "--config", CONFIG, "--workdir", str(trained), str(a), str(b),
           "--out", str(tmp_path / "out"))
  line = _error_line(r)
  assert str(a) in line and "num_bands" in line
