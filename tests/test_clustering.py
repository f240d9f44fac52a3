"""jaxcd.clustering: device sampling under a cap, PCA-whitening, FAISS k-means on separable blobs,
small/empty-cluster repair, device assignment against brute force."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from jaxcd import clustering as cl, metrics
from jaxcd.data import pipeline
from jaxcd.errors import ConfigError

H = W = 16


def make_source(n: int, seed: int = 0) -> list[dict]:
  """Records whose image_a encodes (row, col, example number) per pixel, image_b random."""
  rng = np.random.default_rng(seed)
  rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
  out = []
  for i in range(n):
    a = np.stack([rows, cols, np.full((H, W), i)], axis=-1).astype(np.uint8)
    b = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out.append({"image_a": a, "image_b": b, "label": np.zeros((H, W), np.uint8), "id": str(i)})
  return out


def coord_features(variables, batch):
  """feat = [row, col, example, ... b-dependent channels]: traceable, easy to check on the host."""
  a = batch["image_a"].astype(jnp.float32)
  b = batch["image_b"].astype(jnp.float32) / 255.0
  return jnp.concatenate([a, b * variables["scale"]], axis=-1)


def coord_features_np(record, scale: float) -> np.ndarray:
  return np.concatenate([record["image_a"].astype(np.float32),
                         record["image_b"].astype(np.float32) / 255.0 * scale], axis=-1)


def batches(source, batch_size: int):
  return list(pipeline.eval_dataset(source, global_batch_size=batch_size))


# --- sampling --------------------------------------------------------------------------------

def test_sample_features_picks_distinct_real_pixels_and_respects_the_cap():
  source = make_source(7)
  variables = {"scale": jnp.float32(2.0)}
  key = jax.random.key(3)
  # Under the cap: every valid image (padding excluded) gives exactly pixels_per_image pixels.
  x = cl.sample_features(coord_features, variables, batches(source, 4), max_samples=10_000,
                         pixels_per_image=20, rng=key)
  assert x.shape == (7 * 20, 6) and x.dtype == np.float32
  for i in range(7):
    rows = x[i * 20:(i + 1) * 20]
    np.testing.assert_array_equal(rows[:, 2], i)  # ordered by example, no padded duplicates
    rc = rows[:, :2].astype(int)
    assert len({tuple(p) for p in rc}) == 20  # drawn without replacement
    dense = coord_features_np(source[i], 2.0)
    np.testing.assert_allclose(rows, dense[rc[:, 0], rc[:, 1]], rtol=1e-6)  # real pixels
  # Batching does not change the sample (keys are folded with the example index).
  x3 = cl.sample_features(coord_features, variables, batches(source, 3), max_samples=10_000,
                          pixels_per_image=20, rng=key)
  np.testing.assert_array_equal(x, x3)
  # Over the cap: exactly max_samples rows, a subset of the uncapped sample, still seeded.
  for cap in (1, 50, 139):
    xc = cl.sample_features(coord_features, variables, batches(source, 4), max_samples=cap,
                            pixels_per_image=20, rng=key)
    assert xc.shape == (cap, 6)
    assert {tuple(r) for r in xc} <= {tuple(r) for r in x}
  other = cl.sample_features(coord_features, variables, batches(source, 4), max_samples=10_000,
                             pixels_per_image=20, rng=jax.random.key(4))
  assert not np.array_equal(other, x)
  assert cl.pixels_per_image_for(200_000, 5340, 256, 256) == 38
  assert cl.pixels_per_image_for(10**9, 2, 16, 16) == 256
  with pytest.raises(ConfigError, match="pixels_per_image=257"):
    cl.sample_features(coord_features, variables, batches(source, 4), max_samples=10,
                       pixels_per_image=257, rng=key)


def test_gather_samples_is_identity_in_one_process():
  a, b = np.arange(6).reshape(3, 2), np.array([True, False, True])
  ga, gb = cl.gather_samples(a, b)
  np.testing.assert_array_equal(ga, a)
  np.testing.assert_array_equal(gb, b)


# --- preprocessing ---------------------------------------------------------------------------

def test_pca_whitening_gives_identity_covariance_and_matches_on_device():
  rng = np.random.default_rng(0)
  mix = rng.normal(size=(6, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])[:, None]
  x = (rng.normal(size=(20_000, 6)) @ mix + 7.0).astype(np.float32)
  prep = cl.Preprocess.fit(x, pca_dim=6, eps=1e-8, l2=False)
  y = prep.apply(x)
  np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-3)
  np.testing.assert_allclose(np.cov(y, rowvar=False, bias=True), np.eye(6), atol=1e-3)
  # Reduced: the top 3 directions, still white.
  p3 = cl.Preprocess.fit(x, pca_dim=3, eps=1e-8, l2=False)
  y3 = p3.apply(x)
  assert y3.shape == (20_000, 3)
  np.testing.assert_allclose(np.cov(y3, rowvar=False, bias=True), np.eye(3), atol=1e-3)
  # With L2: unit rows; device and host agree; the checkpoint state round-trips.
  pl2 = cl.Preprocess.fit(x, pca_dim=4)
  yl = pl2.apply(x[:500])
  np.testing.assert_allclose(np.linalg.norm(yl, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(pl2.apply_jax(jnp.asarray(x[:500]))), yl, atol=1e-5)
  back = cl.Preprocess.from_state(pl2.state())
  np.testing.assert_array_equal(back.apply(x[:50]), pl2.apply(x[:50]))
  plain = cl.Preprocess.fit(x, pca_dim=0, l2=False)
  np.testing.assert_array_equal(plain.apply(x[:10]), x[:10])
  assert cl.Preprocess.from_state(plain.state()).proj is None
  with pytest.raises(ConfigError, match="pca_dim=7"):
    cl.Preprocess.fit(x, pca_dim=7)


# --- k-means and repair ----------------------------------------------------------------------

def blobs(n_per: int, k: int, d: int, seed: int, spread: float = 0.05):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * 3
  truth = np.repeat(np.arange(k), n_per)
  x = centers[truth] + spread * rng.normal(size=(k * n_per, d))
  perm = rng.permutation(len(x))
  return x[perm].astype(np.float32), truth[perm]


def test_kmeans_recovers_well_separated_blobs_deterministically():
  x, truth = blobs(400, 6, 8, seed=1)
  # nredo: one random init could put two seeds in one blob; the best of several cannot miss.
  res = cl.fit_clusters(x, 6, seed=0, nredo=5)
  assert res.centroids.shape == (6, 8) and res.assign.shape == (len(x),)
  assert metrics.nmi(truth, res.assign) == pytest.approx(1.0, abs=1e-12)
  assert metrics.adjusted_mutual_info(truth, res.assign) == pytest.approx(1.0, abs=1e-12)
  assert adjusted_mutual_info_score(truth, res.assign) == pytest.approx(1.0, abs=1e-12)
  np.testing.assert_array_equal(np.sort(res.counts), np.full(6, 400))
  again = cl.fit_clusters(x, 6, seed=0, nredo=5, num_threads=1)
  np.testing.assert_array_equal(again.centroids, res.centroids)
  np.testing.assert_array_equal(again.assign, res.assign)
  with pytest.raises(ConfigError, match="k=9000"):
    cl.kmeans(x, 9000, seed=0)


def test_repair_fills_empty_and_small_clusters():
  x, _ = blobs(500, 4, 6, seed=2, spread=1.0)
  n = len(x)
  c, a = cl.kmeans(x, 4, seed=0)
  # Four more centroids far from every point: empty clusters, as a bad init would leave them.
  far = np.full((4, 6), 100.0, np.float32) * np.arange(1, 5)[:, None]
  cents = np.concatenate([c, far])
  assign = cl.nearest_centroid_np(x, cents)
  assert (np.bincount(assign, minlength=8)[4:] == 0).all()
  min_size = 60
  c2, a2, counts, splits = cl.repair_small_clusters(x, cents, assign, min_size, rng=0)
  assert splits >= 4
  assert counts.sum() == n and (counts >= min_size).all(), counts
  np.testing.assert_array_equal(counts, np.bincount(a2, minlength=8))
  # The labels are the nearest-centroid labels of the returned centroids (what `assign` gives).
  np.testing.assert_array_equal(a2, cl.nearest_centroid_np(x, c2))
  # Same inputs, same seed: same result.
  c3, a3, _, _ = cl.repair_small_clusters(x, cents, assign, min_size, rng=0)
  np.testing.assert_array_equal(c3, c2)
  np.testing.assert_array_equal(a3, a2)
  # Nothing small: untouched.
  c4, a4, _, s4 = cl.repair_small_clusters(x, c2, a2, min_size, rng=1)
  assert s4 == 0 and np.array_equal(c4, c2) and np.array_equal(a4, a2)
  # A centroid at the origin (FAISS's relative perturbation cannot split it) is still repaired.
  y = np.concatenate([np.zeros((300, 3)), np.random.default_rng(0).normal(size=(300, 3)) * 0.1])
  y = y.astype(np.float32)
  cz = np.array([[0, 0, 0], [50, 50, 50]], np.float32)
  _, az, cnt, _ = cl.repair_small_clusters(y, cz, cl.nearest_centroid_np(y, cz), 100, rng=0)
  assert (cnt >= 100).all() and cnt.sum() == 600
  with pytest.raises(ConfigError, match="min_size=400"):
    cl.repair_small_clusters(x, cents, assign, 400, rng=0)
  assert cl.default_min_size(200_000, 20) == 200
  assert cl.default_min_size(200_000, 500) == 200
  assert cl.default_min_size(1000, 20) == 1
  assert cl.default_min_size(10_000, 500) == 10


# --- assignment on device --------------------------------------------------------------------

@pytest.mark.parametrize("pca_dim", [0, 4])
def test_assign_equals_brute_force_nearest_centroid(pca_dim):
  source = make_source(5, seed=1)
  scale = 40.0
  variables = {"scale": jnp.float32(scale)}
  dense = np.stack([coord_features_np(r, scale) for r in source])  # 5 x H x W x 6
  flat = dense.reshape(-1, 6)
  prep = cl.Preprocess.fit(flat, pca_dim=pca_dim, l2=pca_dim > 0)
  cents = cl.kmeans(prep.apply(flat), 7, seed=0)[0]
  labels = cl.assign(coord_features, variables, prep, cents, batches(source, 2), num_examples=6)
  assert labels.shape == (6, H, W) and labels.dtype == np.uint8
  z = prep.apply(flat)
  dist = np.linalg.norm(z[:, None, :] - cents[None], axis=-1)  # plain distances, no matmul trick
  expected = np.argmin(dist, axis=1).reshape(5, H, W)
  np.testing.assert_array_equal(labels[:5], expected)
  np.testing.assert_array_equal(labels[5], 255)  # never seen: the ignore label
  assert len(np.unique(labels[:5])) > 1


def test_label_dtype_and_nearest_centroid_on_device():
  assert cl.label_dtype(20) == np.uint8 and cl.label_dtype(255) == np.uint8
  assert cl.label_dtype(500) == np.uint16
  rng = np.random.default_rng(5)
  x, c = rng.normal(size=(1000, 5)).astype(np.float32), rng.normal(size=(300, 5)).astype(np.float32)
  brute = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)
  on_device = cl.nearest_centroid(jnp.asarray(x), jnp.asarray(c))
  np.testing.assert_array_equal(np.asarray(on_device), brute)
  np.testing.assert_array_equal(cl.nearest_centroid_np(x, c), brute)


@pytest.mark.slow  # 15-60 s of compiling on 2 cores; the fast tier keeps this module's cheaper tests
def test_with_the_cdcluster_network():
  from jaxcd.models import get_model
  model = get_model("cdcluster", num_clusters=4, features=6)
  x = jnp.zeros((1, H, W, 3))
  # Shapes from init (traced only; running Flax's initialisers costs compile time), numpy values.
  shapes = jax.eval_shape(lambda k: model.init(k, x, x, train=False), jax.random.key(0))
  rng = np.random.default_rng(0)

  def value(s):  # kernels: He-normal; vectors (biases, scales, BN statistics): positive, near 1
    if len(s.shape) > 1:
      return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype)
    return jnp.asarray(1.0 + 0.1 * np.abs(rng.normal(size=s.shape)), s.dtype)
  variables = jax.tree_util.tree_map(value, shapes)
  normalize = lambda im: im.astype(jnp.float32) / 127.5 - 1.0
  fn = cl.make_feature_fn(model, normalize)
  source = make_source(3, seed=2)
  sample = cl.sample_features(fn, variables, batches(source, 2), max_samples=40,
                              pixels_per_image=30, rng=jax.random.key(0))
  assert sample.shape == (40, 6)
  prep = cl.Preprocess.fit(sample, pca_dim=0, l2=True)
  res = cl.fit_clusters(prep.apply(sample), 4, seed=0, min_size=2)
  labels = cl.assign(fn, variables, prep, res.centroids, batches(source, 2), num_examples=3)
  a = normalize(jnp.stack([r["image_a"] for r in source]))
  b = normalize(jnp.stack([r["image_b"] for r in source]))
  feat = np.asarray(model.apply(variables, a, b, train=False)["features"]).reshape(-1, 6)
  z = prep.apply(feat)
  expected = np.argmin(((z[:, None] - res.centroids[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(labels.reshape(-1), expected)
