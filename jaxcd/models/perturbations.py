"""Feature perturbations of RCR's auxiliary decoders (Bandara & Patel 2022; github wgcban/SemiCD
`models/decoders.py`, read for facts, written anew), as pure functions of NHWC feature maps.

Each takes the encoder's features `z_BxhxwxC` and returns the perturbed map the auxiliary
decoder sees. Guided ones also take the main decoder's predicted change mask at full resolution
(`mask_BxHxW`, argmax > 0 of the detached logits), brought to h x w by torch's nearest rule
(pixel floor(i * H / h)). Random ones take a key; VAT takes the decoder itself (a function of
the features) and differentiates through it with `jax.grad` inside the jitted step.
"""
from typing import Callable

import jax
import jax.numpy as jnp


def nearest_down(mask_BxHxW: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """torch `F.interpolate(mode='nearest')` of a B x H x W map to B x h x w."""
  _, H, W = mask_BxHxW.shape
  if H % hw[0] == 0 and W % hw[1] == 0:  # the same pixels as a strided slice, not a gather
    return mask_BxHxW[:, ::H // hw[0], ::W // hw[1]]
  rows = (jnp.arange(hw[0]) * H) // hw[0]
  cols = (jnp.arange(hw[1]) * W) // hw[1]
  return mask_BxHxW[:, rows][:, :, cols]


def dropout2d(key: jax.Array, z_BxhxwxC: jax.Array, rate: float = 0.5) -> jax.Array:
  """torch `Dropout2d` in training: whole channels of each sample zeroed with probability
  `rate`, the rest scaled by 1 / (1 - rate)."""
  b, _, _, c = z_BxhxwxC.shape
  keep = jax.random.bernoulli(key, 1.0 - rate, (b, 1, 1, c))
  return jnp.where(keep, z_BxhxwxC / (1.0 - rate), 0).astype(z_BxhxwxC.dtype)


def feature_drop(key: jax.Array, z_BxhxwxC: jax.Array, low: float = 0.7,
                 high: float = 0.9) -> jax.Array:
  """Zeroes the positions whose channel mean reaches gamma x that sample's maximum channel mean,
  gamma ~ U(low, high) drawn once per call (the code's one `np.random.uniform` per batch)."""
  attention = jnp.mean(z_BxhxwxC.astype(jnp.float32), axis=-1, keepdims=True)
  gamma = jax.random.uniform(key, (), minval=low, maxval=high)
  threshold = gamma * jnp.max(attention, axis=(1, 2, 3), keepdims=True)
  return z_BxhxwxC * (attention < threshold).astype(z_BxhxwxC.dtype)


def feature_noise(key: jax.Array, z_BxhxwxC: jax.Array, uniform_range: float = 0.3) -> jax.Array:
  """z + z * n, n ~ U(-r, r) of shape h x w x C shared by the batch (as the code)."""
  noise = jax.random.uniform(key, (1,) + z_BxhxwxC.shape[1:], minval=-uniform_range,
                             maxval=uniform_range).astype(z_BxhxwxC.dtype)
  return z_BxhxwxC + z_BxhxwxC * noise


def context_masking(z_BxhxwxC: jax.Array, mask_BxHxW: jax.Array) -> jax.Array:
  """Keeps the features where change is predicted (the code's `return_msk_context=True`)."""
  m = nearest_down(mask_BxHxW, z_BxhxwxC.shape[1:3])[..., None]
  return z_BxhxwxC * m.astype(z_BxhxwxC.dtype)


def object_masking(z_BxhxwxC: jax.Array, mask_BxHxW: jax.Array) -> jax.Array:
  """Keeps the features where no change is predicted."""
  m = nearest_down(mask_BxHxW, z_BxhxwxC.shape[1:3])[..., None]
  return z_BxhxwxC * (1 - m.astype(z_BxhxwxC.dtype))


# --- guided cutout -------------------------------------------------------------------------------

def _max3x3(x_HxW: jax.Array) -> jax.Array:
  return jax.lax.reduce_window(x_HxW, jnp.array(0, x_HxW.dtype), jax.lax.max, (3, 3), (1, 1),
                               "SAME")


def connected_components(mask_HxW: jax.Array) -> jax.Array:
  """8-connected components of a boolean H x W mask: each pixel of a component holds the same
  label in 1..H*W (its largest flat index + 1), background 0."""
  h, w = mask_HxW.shape
  start = jnp.where(mask_HxW, jnp.arange(1, h * w + 1, dtype=jnp.int32).reshape(h, w), 0)

  def body(carry):
    lab, _ = carry
    new = jnp.where(mask_HxW, _max3x3(lab), 0)
    return new, jnp.any(new != lab)

  return jax.lax.while_loop(lambda c: c[1], body, (start, jnp.array(True)))[0]


def _boundary(mask_HxW: jax.Array) -> jax.Array:
  """Pixels of the mask with a 4-neighbour outside it (outside the image counts as outside)."""
  p = jnp.pad(mask_HxW, 1)
  inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
  return mask_HxW & ~inner


def _randint(key: jax.Array, bb_N: jax.Array, share: float) -> jax.Array:
  """Per entry, uniform in 0..floor(share * bb) inclusive (Python's `random.randint`)."""
  high = jnp.floor(bb_N * share) + 1
  return jnp.floor(jax.random.uniform(key, bb_N.shape) * high).astype(jnp.int32)


def max_cut_components(hw: tuple[int, int], min_boundary: int) -> int:
  """How many components can be cut at most: each has more than `min_boundary` boundary pixels,
  so at least min_boundary + 1 pixels, and components do not overlap."""
  return max(1, (hw[0] * hw[1]) // (min_boundary + 1))


def component_boxes(mask_HxW: jax.Array, min_boundary: int = 50) -> dict[str, jax.Array]:
  """Bounding boxes of the 8-connected components of `mask_HxW` with more than `min_boundary`
  boundary pixels (the ones to cut), in `max_cut_components` slots, the components in label
  order, then empty slots (`cut` false): rows r0..r1, columns c0..c1. The code keeps the
  components whose cv2 contour (CHAIN_APPROX_SIMPLE) has more than 50 points; that count has no
  array form, and the boundary pixel count bounds it from above, so a few more (smooth,
  straight-edged) components are cut.

  By sorting the pixels by label, not by segment sums and minima: those are scatters, which TPUs
  offload to their SparseCores, where XLA's cost model has no estimate and libtpu 0.0.42.1's
  compiler aborts on large batches."""
  h, w = mask_HxW.shape
  n = h * w
  label = connected_components(mask_HxW).reshape(-1)
  flat = jnp.arange(n, dtype=jnp.int32)
  edge = _boundary(mask_HxW).reshape(-1).astype(jnp.int32)
  # Each label's pixels together, in index order (rows ascending), then by column.
  lab, idx, edge = jax.lax.sort((label, flat, edge), num_keys=1, is_stable=True)
  col = jax.lax.sort((label, flat % w), num_keys=2)[1]
  change, one = lab[1:] != lab[:-1], jnp.ones((1,), bool)
  first, last = jnp.concatenate([one, change]), jnp.concatenate([change, one])
  start = jax.lax.cummax(jnp.where(first, flat, 0))  # the position of each pixel's label's first
  total = jnp.cumsum(edge)
  before = jnp.concatenate([jnp.zeros((1,), total.dtype),
                            jax.lax.cummax(jnp.where(last, total, 0))[:-1]])
  cut = last & (lab > 0) & (total - before > min_boundary)  # at each component's last pixel
  # The cut components' last pixels first, in order (a stable sort: `top_k` under `vmap` makes
  # the SPMD partitioner gather the batch).
  at = jax.lax.sort((jnp.logical_not(cut).astype(jnp.int32), flat), num_keys=1,
                    is_stable=True)[1][:min(n, max_cut_components((h, w), min_boundary))]
  return {"r0": idx[start[at]] // w, "r1": idx[at] // w, "c0": col[start[at]], "c1": col[at],
          "cut": cut[at]}


def cutout_keep(key: jax.Array, boxes: dict[str, jax.Array], hw: tuple[int, int],
                erase: float = 0.4) -> jax.Array:
  """H x W float mask, 0 inside one random box per component to cut (`component_boxes`), 1
  elsewhere. With bb_h = r1 - r0 (as the code), the box's rows are r0 + s ..
  r0 + s + floor(erase * bb_h) - 1, s uniform in 0..floor((1 - erase) * bb_h); columns alike."""
  h, w = hw
  cut = boxes["cut"]
  bb_h, bb_w = boxes["r1"] - boxes["r0"], boxes["c1"] - boxes["c0"]
  kh, kw = jax.random.split(key)
  top = boxes["r0"] + _randint(kh, bb_h, 1 - erase)
  left = boxes["c0"] + _randint(kw, bb_w, 1 - erase)
  bottom = top + jnp.floor(bb_h * erase).astype(jnp.int32)
  right = left + jnp.floor(bb_w * erase).astype(jnp.int32)
  # Pixel (i, j) is inside a box k when rows_k(i) and cols_k(j): one matmul of the 0/1 row and
  # column indicators of the boxes (exact in bf16, summed in float32), no scatter.
  i, j = jnp.arange(h), jnp.arange(w)
  rows_KxH = cut[:, None] & (top[:, None] <= i) & (i < bottom[:, None])
  cols_KxW = (left[:, None] <= j) & (j < right[:, None])
  inside = jnp.einsum("kh,kw->hw", rows_KxH.astype(jnp.bfloat16), cols_KxW.astype(jnp.bfloat16),
                      preferred_element_type=jnp.float32) > 0
  return 1.0 - inside.astype(jnp.float32)


def guided_cutout(key: jax.Array, z_BxhxwxC: jax.Array, mask_BxHxW: jax.Array,
                  erase: float = 0.4, min_boundary: int = 50,
                  boxes: dict[str, jax.Array] | None = None) -> jax.Array:
  """Features times `cutout_keep` of each sample's mask, brought to h x w (nearest). `boxes`:
  the batch's `component_boxes`, when several decoders share one mask."""
  if boxes is None:
    boxes = jax.vmap(lambda m: component_boxes(m, min_boundary))(mask_BxHxW)
  keys = jax.random.split(key, mask_BxHxW.shape[0])
  keep = jax.vmap(lambda k, bx: cutout_keep(k, bx, mask_BxHxW.shape[1:], erase))(keys, boxes)
  keep = nearest_down(keep, z_BxhxwxC.shape[1:3])[..., None]
  return z_BxhxwxC * keep.astype(z_BxhxwxC.dtype)


# --- virtual adversarial training ----------------------------------------------------------------

def _l2_normalize(d: jax.Array) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=tuple(range(1, d.ndim)), keepdims=True))
  return d / (norm + 1e-8)


def vat(key: jax.Array, z_BxhxwxC: jax.Array, decode: Callable[[jax.Array], jax.Array],
        xi: float = 1e-6, eps: float = 2.0, iterations: int = 1,
        direction: str = "hessian") -> jax.Array:
  """z + r_adv (Miyato et al.; the code's `get_r_adv`): r_adv is eps times the unit (per sample)
  direction that most increases KL(decode(z) || decode(z + r)), found by `iterations` power
  steps from a random start; `decode` maps features to logits (the auxiliary decoder). r_adv
  carries no gradient; z does (the decoder's output on z + r_adv trains the encoder).

  direction "finite_difference" (the code): each step is the gradient of the KL at r = xi d. In
  float32 with the code's xi = 1e-6, z + xi d rounds to z almost everywhere, so that gradient is
  rounding noise of norm ~1e-12 and the code's d / (|d| + 1e-8) leaves r_adv near 0, not eps.
  "hessian" (the method's intent, xi -> 0): each step is the Hessian-vector product H d of the KL
  at r = 0 (a jvp of its gradient), exact in float32; `xi` is then unused.
  """
  z = jax.lax.stop_gradient(z_BxhxwxC).astype(jnp.float32)
  pred = jax.nn.softmax(decode(z).astype(jnp.float32), axis=-1)

  def kl(r):  # torch kl_div(log q, p, reduction='batchmean')
    logq = jax.nn.log_softmax(decode(z + r).astype(jnp.float32), axis=-1)
    return jnp.sum(jax.scipy.special.xlogy(pred, pred) - pred * logq) / z.shape[0]

  if direction == "hessian":
    step = lambda d: jax.jvp(jax.grad(kl), (jnp.zeros_like(z),), (d,))[1]  # noqa: E731
  elif direction == "finite_difference":
    step = lambda d: jax.grad(kl)(xi * d)  # noqa: E731  (d/dd of kl(xi d) is xi times this)
  else:
    raise ValueError(f"vat direction must be 'hessian' or 'finite_difference', not {direction!r}")
  d = _l2_normalize(jax.random.uniform(key, z.shape) - 0.5)
  for _ in range(iterations):
    g = step(d)
    d = _l2_normalize(xi * g if direction == "finite_difference" else g)
  r_adv = jax.lax.stop_gradient(eps * d)
  return z_BxhxwxC + r_adv.astype(z_BxhxwxC.dtype)
