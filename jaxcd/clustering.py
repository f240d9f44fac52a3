"""Pseudo-labels by clustering per-pixel features (CDCluster, after DeepCluster and FAISS).

One clustering, called by the method between jitted epochs:

  feature_fn = make_feature_fn(model, normalize)
  x_NxD = sample_features(feature_fn, variables, batches, max_samples=..., pixels_per_image=...,
                          rng=key)                  # device pass; only N x D floats reach the host
  prep = Preprocess.fit(x_NxD, pca_dim=..., l2=True)   # DeepCluster: PCA-whitening + L2
  clusters = fit_clusters(prep.apply(x_NxD), k, seed)   # FAISS k-means + small-cluster repair
  labels_NxHxW = assign(feature_fn, variables, prep, clusters.centroids, batches, num_examples)

Dense features never leave the device: the feature pass keeps `pixels_per_image` random pixels per
image (chosen on device with a key folded with the example index, so the sample does not depend
on the batch size or the number of processes), and the assignment returns only uint8 labels.
Host memory: the sample is N x D x 4 bytes (200,000 x 16 features: 12.8 MB), before the cap
num_images x pixels_per_image x D x 4; the labels are num_examples x H x W bytes.

Several processes: every process gathers the whole sample (`gather_samples`), fits on the same
array with the same seed and thread count, and so gets the same centroids; `assign` gathers the
labels so that every process holds all of them.
"""
import contextlib
import dataclasses
import functools
import logging
import math
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple

# faiss's loader logs at INFO each SIMD build it tries and lacks (ModuleNotFoundError lines).
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss  # noqa: E402
import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.errors import ConfigError

# (variables, batch with float/uint8 'image_a', 'image_b') -> feat_BxHxWxD.
FeatureFn = Callable[[Any, Mapping[str, jax.Array]], jax.Array]
SPLIT_EPS = 1.0 / 1024  # FAISS's relative perturbation when it splits a centroid
_HIGHEST = jax.lax.Precision.HIGHEST  # f32 distances: TPU/GPU default matmuls round to bf16/tf32


def make_feature_fn(model, normalize: Callable[[jax.Array], jax.Array]) -> FeatureFn:
  """The model's feature pass (no head), in eval mode, on normalised images. Create it once per
  run: the jitted passes below are cached per feature_fn object."""
  def feature_fn(variables, batch):
    return model.apply(variables, normalize(batch["image_a"]), normalize(batch["image_b"]),
                       train=False, method="features")
  return feature_fn


# --- sampling features on device -------------------------------------------------------------

def pixels_per_image_for(max_samples: int, num_images: int, height: int, width: int) -> int:
  """Pixels to draw per image so that num_images of them give about max_samples in all."""
  return int(max(1, min(height * width, math.ceil(max_samples / max(num_images, 1)))))


@functools.partial(jax.jit, static_argnames=("feature_fn", "pixels_per_image"))
def _sample_batch(feature_fn, variables, batch, rng, pixels_per_image: int) -> jax.Array:
  feat_BxHxWxD = feature_fn(variables, batch)
  b, h, w, d = feat_BxHxWxD.shape
  flat_BxHWxD = feat_BxHxWxD.reshape(b, h * w, d)

  def pick(index):
    return jax.random.choice(jax.random.fold_in(rng, index), h * w, (pixels_per_image,),
                             replace=False)
  idx_BxP = jax.vmap(pick)(batch["index"])
  return jnp.take_along_axis(flat_BxHWxD, idx_BxP[..., None], axis=1).astype(jnp.float32)


def _host_rows(x) -> np.ndarray:
  """This process's rows of a batch field (numpy, or a possibly multi-process jax.Array)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jaxcd import parallel
    return parallel.local_rows(x)
  return np.asarray(x)


def gather_samples(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  """Concatenates each array over processes (process order) with `process_allgather`; every
  process must pass the same shapes. With one process returns the arrays unchanged."""
  if jax.process_count() == 1:
    return tuple(np.asarray(a) for a in arrays)
  from jax.experimental import multihost_utils
  return tuple(np.asarray(multihost_utils.process_allgather(np.asarray(a), tiled=True))
               for a in arrays)


def _by_index(index: np.ndarray, valid: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  # Drop padding, order rows by example index: the same result for any batching or process count.
  keep = np.flatnonzero(valid)
  order = keep[np.argsort(index[keep], kind="stable")]
  return (index[order],) + tuple(a[order] for a in arrays)


def _gather_ordered(outs, indexes, valids) -> tuple[np.ndarray, np.ndarray]:
  """Per-batch device outputs of this process -> (example index, rows) of every process's valid
  examples, sorted by example index (identical on all processes)."""
  rows = np.concatenate([_host_rows(o) for o in outs])
  index, valid = np.concatenate(indexes), np.concatenate(valids).astype(bool)
  rows, index, valid = gather_samples(rows, index, valid)
  return _by_index(index, valid, rows)


def sample_features(feature_fn: FeatureFn, variables: Any, batches: Iterable[Mapping[str, Any]],
                    *, max_samples: int, pixels_per_image: int, rng: jax.Array) -> np.ndarray:
  """Random pixel features of the images in `batches`, N x D float32 with N <= max_samples.

  `batches` are padded evaluation batches (`data.pipeline.eval_dataset`, optionally made global
  with `parallel.to_global`) carrying `index` and `valid`. Pixel choice is on device and keyed by
  (rng, example index); if there are more than max_samples, a seeded subset is kept (host side,
  in example order). Identical on every process.
  """
  if max_samples < 1 or pixels_per_image < 1:
    raise ConfigError(f"sample_features: max_samples ({max_samples}) and pixels_per_image "
                      f"({pixels_per_image}) must be >= 1")
  feats, indexes, valids = [], [], []
  for batch in batches:
    sub = {k: batch[k] for k in ("image_a", "image_b", "index")}
    h, w = sub["image_a"].shape[1:3]
    if pixels_per_image > h * w:
      raise ConfigError(f"sample_features: pixels_per_image={pixels_per_image} exceeds the "
                        f"{h}x{w} pixels of an image")
    # Dispatch every batch first and read back once: the device never waits for the host.
    feats.append(_sample_batch(feature_fn, variables, sub, rng, pixels_per_image))
    indexes.append(_host_rows(batch["index"]))
    valids.append(_host_rows(batch["valid"]))
  if not feats:
    raise ConfigError("sample_features: no batches (is the clustering subset empty?)")
  _, x_IxPxD = _gather_ordered(feats, indexes, valids)
  x_NxD = x_IxPxD.reshape(-1, x_IxPxD.shape[-1])
  if len(x_NxD) > max_samples:
    seed = int(jax.random.bits(jax.random.fold_in(rng, 2**31 - 1), (), jnp.uint32))
    keep = np.sort(np.random.default_rng(seed).choice(len(x_NxD), max_samples, replace=False))
    x_NxD = x_NxD[keep]
  return np.ascontiguousarray(x_NxD, dtype=np.float32)


# --- preprocessing (DeepCluster's preprocess_features) ---------------------------------------

@dataclasses.dataclass
class Preprocess:
  """x -> [(x - mean) @ proj] -> [x / |x|]: optional PCA-whitening, optional L2 normalisation.

  Fit on the host sample, applied identically on device (`apply_jax`) for the assignment.
  proj is D x pca_dim (eigenvectors / sqrt(eigenvalue + eps * largest eigenvalue)), or None.
  """
  mean: np.ndarray  # D (zeros without PCA)
  proj: np.ndarray | None  # D x d, or None
  l2: bool = True

  @classmethod
  def fit(cls, x_NxD: np.ndarray, pca_dim: int = 0, eps: float = 1e-5,
          l2: bool = True) -> "Preprocess":
    x = np.asarray(x_NxD, np.float64)
    d = x.shape[1]
    if pca_dim == 0:
      return cls(np.zeros(d, np.float32), None, l2)
    if not 0 < pca_dim <= d:
      raise ConfigError(f"pca_dim={pca_dim} must be in 0..{d} (the feature dimension)")
    mean = x.mean(axis=0)
    xc = x - mean
    lam, vec = np.linalg.eigh(xc.T @ xc / len(x))
    lam, vec = lam[::-1][:pca_dim], vec[:, ::-1][:, :pca_dim]
    # eigh's signs are arbitrary: fix them so the projection is reproducible across machines.
    vec = vec * np.where(vec[np.argmax(np.abs(vec), axis=0), np.arange(pca_dim)] < 0, -1.0, 1.0)
    proj = vec / np.sqrt(np.maximum(lam, 0.0) + eps * max(lam[0], 1e-30))
    return cls(mean.astype(np.float32), proj.astype(np.float32), l2)

  @property
  def out_dim(self) -> int:
    return self.mean.shape[0] if self.proj is None else self.proj.shape[1]

  def apply(self, x_NxD: np.ndarray) -> np.ndarray:
    x = np.asarray(x_NxD, np.float32)
    if self.proj is not None:
      x = (x - self.mean) @ self.proj
    if self.l2:
      x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)

  def apply_jax(self, x_NxD: jax.Array) -> jax.Array:
    return _preprocess_jax(x_NxD, self.mean, self.proj, self.l2)

  def state(self) -> dict[str, np.ndarray]:
    """Arrays for a checkpoint (proj is an empty 0 x 0 array when PCA is off)."""
    proj = np.zeros((0, 0), np.float32) if self.proj is None else self.proj
    return {"mean": self.mean, "proj": proj, "l2": np.asarray(self.l2)}

  @classmethod
  def from_state(cls, state: Mapping[str, Any]) -> "Preprocess":
    proj = np.asarray(state["proj"], np.float32)
    return cls(np.asarray(state["mean"], np.float32), proj if proj.size else None,
               bool(np.asarray(state["l2"])))


def _preprocess_jax(x, mean, proj, l2: bool):
  x = x.astype(jnp.float32)
  if proj is not None:
    x = jnp.matmul(x - mean, proj, precision=_HIGHEST)
  if l2:
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return x


# --- k-means on the host (FAISS) and small-cluster repair ------------------------------------

@contextlib.contextmanager
def _faiss_threads(num_threads: int | None):
  if not num_threads:
    yield
    return
  old = faiss.omp_get_max_threads()
  faiss.omp_set_num_threads(int(num_threads))
  try:
    yield
  finally:
    faiss.omp_set_num_threads(old)


def nearest_centroid_np(x_NxD: np.ndarray, c_KxD: np.ndarray, chunk: int = 65536) -> np.ndarray:
  """argmin_k |x - c_k|^2 on the host (|x|^2 dropped: it does not change the argmin)."""
  c = np.asarray(c_KxD, np.float32)
  cc = np.sum(c * c, axis=1)
  out = np.empty(len(x_NxD), np.int64)
  for s in range(0, len(x_NxD), chunk):
    out[s:s + chunk] = np.argmin(cc - 2.0 * (x_NxD[s:s + chunk] @ c.T), axis=1)
  return out


def kmeans(x_NxD: np.ndarray, k: int, seed: int, *, niter: int = 20, nredo: int = 1,
           max_points_per_centroid: int | None = None,
           num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """FAISS k-means: (centroids K x D float32, nearest-centroid assignment N int64).

  Deterministic for a given (x, k, seed, num_threads). FAISS subsamples to
  k * max_points_per_centroid points (its default 256); None = use every point, as DeepCluster.
  FAISS already splits empty clusters during its iterations (perturbation +-1/1024).
  """
  x = np.ascontiguousarray(x_NxD, dtype=np.float32)
  n, d = x.shape
  if n < k:
    raise ConfigError(f"k-means: {n} samples for k={k} clusters (raise the sample size or "
                      "lower the number of clusters)")
  if not np.all(np.isfinite(x)):
    raise ConfigError("k-means: the features contain NaN or inf")
  km = faiss.Kmeans(d, int(k), niter=int(niter), nredo=int(nredo), seed=int(seed), verbose=False,
                    min_points_per_centroid=1,
                    max_points_per_centroid=int(max_points_per_centroid or n))
  with _faiss_threads(num_threads):
    km.train(x)
    _, assign_Nx1 = km.index.search(x, 1)
  return np.asarray(km.centroids, np.float32).copy(), assign_Nx1[:, 0].astype(np.int64)


def default_min_size(n: int, k: int) -> int:
  """The small-cluster threshold: 0.1% of the sample, at least 1, at most n / (2k) so a donor of
  at least twice the threshold always exists (200,000 samples, k = 20: 200 points)."""
  return int(max(1, min(n // 1000, n // (2 * k))))


def repair_small_clusters(x_NxD: np.ndarray, centroids_KxD: np.ndarray, assign_N: np.ndarray,
                          min_size: int | None = None, rng: np.random.Generator | int = 0,
                          refine_iters: int = 5, max_splits: int | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """Splits large clusters until none has fewer than `min_size` points.

  While a cluster is small (the smallest first): draw a donor among clusters with >= 2*min_size
  points with probability proportional to size, copy its centroid to the small one and perturb
  both by -+1/1024 (alternating signs over dimensions, FAISS's split); a few 2-means steps on the
  points of the pair separate them (FAISS would run more Lloyd iterations after its split); then
  every point is re-assigned to its nearest centroid, so the returned labels are exactly the
  nearest-centroid labels of the returned centroids (what the device assignment computes).
  Returns (centroids, assignment, counts K, number of splits).
  """
  x = np.ascontiguousarray(x_NxD, dtype=np.float32)
  c = np.array(centroids_KxD, np.float32, copy=True)
  a = np.asarray(assign_N, np.int64).copy()
  n, k = len(x), len(c)
  min_size = default_min_size(n, k) if min_size is None else int(min_size)
  if min_size * k > n:
    raise ConfigError(f"cluster repair: min_size={min_size} x k={k} exceeds the {n} samples")
  rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
  max_splits = 10 * k if max_splits is None else max_splits
  sign_D = np.where(np.arange(x.shape[1]) % 2 == 0, 1.0, -1.0).astype(np.float32)
  counts = np.bincount(a, minlength=k)
  splits = 0
  while (counts < min_size).any():
    if splits >= max_splits:
      logging.warning("cluster repair stopped after %d splits; sizes %s", splits, counts.tolist())
      break
    small = np.flatnonzero(counts < min_size)
    ci = int(small[np.argmin(counts[small])])
    donor_ok = counts >= 2 * min_size
    if not donor_ok.any():
      donor_ok = counts > min_size
    weights = np.where(donor_ok, counts, 0).astype(np.float64)
    cj = int(rng.choice(k, p=weights / weights.sum()))
    base = c[cj].copy()
    c[ci], c[cj] = base * (1 + SPLIT_EPS * sign_D), base * (1 - SPLIT_EPS * sign_D)
    members = np.flatnonzero((a == cj) | (a == ci))
    xm = x[members]
    for _ in range(refine_iters):
      to_i = np.sum((xm - c[ci]) ** 2, 1) < np.sum((xm - c[cj]) ** 2, 1)
      if to_i.all() or not to_i.any():
        # Degenerate split (e.g. a centroid at the origin): seed the new one on a random member.
        c[ci] = xm[rng.integers(len(xm))]
        continue
      c[ci], c[cj] = xm[to_i].mean(axis=0), xm[~to_i].mean(axis=0)
    a = nearest_centroid_np(x, c)
    counts = np.bincount(a, minlength=k)
    splits += 1
  return c, a, counts, splits


class Clusters(NamedTuple):
  centroids: np.ndarray  # K x D float32, in the preprocessed space
  assign: np.ndarray  # N int64: nearest centroid of each sample
  counts: np.ndarray  # K
  num_splits: int  # small clusters repaired
  seconds: float  # k-means + repair wall time


def fit_clusters(x_NxD: np.ndarray, k: int, seed: int, *, niter: int = 20, nredo: int = 1,
                 min_size: int | None = None, max_points_per_centroid: int | None = None,
                 num_threads: int | None = None) -> Clusters:
  """k-means then small-cluster repair, all seeded by `seed` (identical on every process)."""
  start = time.perf_counter()
  c, a = kmeans(x_NxD, k, seed, niter=niter, nredo=nredo,
                max_points_per_centroid=max_points_per_centroid, num_threads=num_threads)
  c, a, counts, splits = repair_small_clusters(x_NxD, c, a, min_size, np.random.default_rng(seed))
  return Clusters(c, a, counts, splits, time.perf_counter() - start)


# --- assignment on device ---------------------------------------------------------------------

def nearest_centroid(x_NxD: jax.Array, c_KxD: jax.Array) -> jax.Array:
  """argmin_k |x|^2 - 2 x.c_k + |c_k|^2 as one matmul (|x|^2 dropped: constant per row), int32."""
  c = c_KxD.astype(jnp.float32)
  d_NxK = jnp.sum(c * c, axis=-1) - 2.0 * jnp.matmul(x_NxD.astype(jnp.float32), c.T,
                                                     precision=_HIGHEST)
  return jnp.argmin(d_NxK, axis=-1).astype(jnp.int32)


def label_dtype(k: int) -> np.dtype:
  """uint8 while the labels 0..k-1 stay below the ignore value 255, else uint16."""
  return np.dtype(np.uint8) if k <= 255 else np.dtype(np.uint16)


def assign_pixels(feat_BxHxWxD: jax.Array, preprocess: Preprocess, centroids_KxD) -> jax.Array:
  """Pseudo-labels BxHxW (int32) of dense features: preprocess, then nearest centroid. Traceable,
  so a method can also fuse it into its own jitted step."""
  b, h, w, d = feat_BxHxWxD.shape
  x = preprocess.apply_jax(feat_BxHxWxD.reshape(-1, d))
  return nearest_centroid(x, jnp.asarray(centroids_KxD)).reshape(b, h, w)


@functools.partial(jax.jit, static_argnames=("feature_fn", "l2", "dtype"))
def _assign_batch(feature_fn, variables, batch, mean, proj, l2, centroids, dtype):
  feat = feature_fn(variables, batch)
  prep = Preprocess(mean, proj, l2)
  return assign_pixels(feat, prep, centroids).astype(dtype)


def assign(feature_fn: FeatureFn, variables: Any, preprocess: Preprocess, centroids_KxD: np.ndarray,
           batches: Iterable[Mapping[str, Any]], num_examples: int) -> np.ndarray:
  """Pseudo-labels of every example, num_examples x H x W (uint8 for k <= 255, else uint16).

  Features, preprocessing and nearest centroid run jitted on device; only the labels reach the
  host. Examples never seen in `batches` stay at the dtype's maximum (255 = the ignore label).
  With several processes, every process receives all labels.
  """
  k = len(centroids_KxD)
  dtype = label_dtype(k)
  proj = None if preprocess.proj is None else jnp.asarray(preprocess.proj)
  mean, cents = jnp.asarray(preprocess.mean), jnp.asarray(centroids_KxD, jnp.float32)
  outs, indexes, valids = [], [], []
  for batch in batches:
    sub = {k_: batch[k_] for k_ in ("image_a", "image_b")}
    outs.append(_assign_batch(feature_fn, variables, sub, mean, proj, preprocess.l2, cents,
                              dtype.type))
    indexes.append(_host_rows(batch["index"]))
    valids.append(_host_rows(batch["valid"]))
  if not outs:
    raise ConfigError("assign: no batches")
  index, labels = _gather_ordered(outs, indexes, valids)
  if len(index) and (index.max() >= num_examples or index.min() < 0):
    raise ConfigError(f"assign: example index {index.max()} out of range for num_examples="
                      f"{num_examples}")
  out = np.full((num_examples,) + labels.shape[1:], np.iinfo(dtype).max, dtype)
  out[index] = labels
  return out
