"""Losses. Logits are BxHxWxK, labels BxHxW integer with `ignore_label` pixels masked out."""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.errors import ConfigError


def label_log_prob(logp_BxHxWxK: jax.Array, labels_BxHxW: jax.Array) -> jax.Array:
  """logp[..., label] as a one-hot product, not a gather: on TPU the gather (and its scatter
  gradient) is its own slow op, the product fuses into the log-softmax around it."""
  onehot = jax.nn.one_hot(labels_BxHxW, logp_BxHxWxK.shape[-1], dtype=logp_BxHxWxK.dtype)
  return jnp.sum(logp_BxHxWxK * onehot, axis=-1)


def cross_entropy(logits_BxHxWxK: jax.Array, labels_BxHxW: jax.Array, *,
                  class_weights: Sequence[float] = (), ignore_label: int = 255) -> jax.Array:
  """Pixel-wise (class-weighted) softmax cross-entropy, averaged like PyTorch's CrossEntropyLoss.

  With weights w, the mean is sum(w_y * ce) / sum(w_y) over non-ignored pixels (torch semantics),
  so published class weights (e.g. Dsfer-Net's [1.048, 21.79]) mean the same thing here.
  """
  k = logits_BxHxWxK.shape[-1]
  labels = labels_BxHxW.astype(jnp.int32)
  valid = labels != ignore_label
  safe = jnp.where(valid, labels, 0)
  logp = jax.nn.log_softmax(logits_BxHxWxK.astype(jnp.float32), axis=-1)
  nll = -label_log_prob(logp, safe)
  if len(class_weights) and len(class_weights) != k:
    raise ValueError(f"loss.class_weights has {len(class_weights)} entries for {k} classes")
  w = (jnp.sum(jax.nn.one_hot(safe, k) * jnp.asarray(class_weights, jnp.float32), axis=-1)
       if len(class_weights) else jnp.ones_like(nll))
  w = w * valid
  return jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), 1e-12)


def dice_loss(logits_BxHxWxK: jax.Array, onehot_BxHxWxK: jax.Array, smooth: float = 1.0) -> jax.Array:
  """Dice of the official Dsfer-Net `utils/DiceLoss.py`: softmax over classes, then per sample and
  class 1 - (sum p t + smooth) / (sum p^2 + t^2 + smooth), averaged over batch and classes."""
  p = jax.nn.softmax(logits_BxHxWxK.astype(jnp.float32), axis=-1)
  t = onehot_BxHxWxK.astype(jnp.float32)
  num_BxK = jnp.sum(p * t, axis=(1, 2)) + smooth
  den_BxK = jnp.sum(p * p + t * t, axis=(1, 2)) + smooth
  return jnp.mean(1.0 - num_BxK / den_BxK)


def max_pool_labels(labels_BxHxW: jax.Array, k: int, ignore_label: int = 255) -> jax.Array:
  """k x k max-pool of a {0,1} label (stride k, remainder cropped like torch's MaxPool2d).

  Ignored pixels count as 0 (no change) before pooling: a cell is "changed" only if a labelled
  pixel in it is, and the official code, whose labels have no ignore value, is unchanged.
  """
  y = jnp.where(labels_BxHxW == ignore_label, 0, labels_BxHxW).astype(jnp.int32)
  b, h, w = y.shape
  y = y[:, :h // k * k, :w // k * k].reshape(b, h // k, k, w // k, k)
  return jnp.max(y, axis=(2, 4))


def dsfernet_loss(outputs: dict[str, jax.Array], labels_BxHxW: jax.Array,
                  class_weights: Sequence[float], lam: float, *, ignore_label: int = 255) -> jax.Array:
  """Dsfer-Net's training loss (official Train.py): class-weighted CE on 'logits' (ignore label
  masked) + lam * 0.5 * (Dice(aux4, onehot(maxpool8(y))) + Dice(aux5, onehot(maxpool16(y))))."""
  logits = outputs["logits"]
  k = logits.shape[-1]
  ce = cross_entropy(logits, labels_BxHxW, class_weights=class_weights, ignore_label=ignore_label)
  y4 = jax.nn.one_hot(max_pool_labels(labels_BxHxW, 8, ignore_label), k)
  y5 = jax.nn.one_hot(max_pool_labels(labels_BxHxW, 16, ignore_label), k)
  return ce + lam * 0.5 * (dice_loss(outputs["aux4"], y4) + dice_loss(outputs["aux5"], y5))


def contrastive_loss(logits_real_BxHxWxK: jax.Array, logits_nochange_BxHxWxK: jax.Array,
                     labels_BxHxW: jax.Array, *, ignore_label: int = 255) -> jax.Array:
  """RCL's pixel contrastive loss L_ct = L_p + L_n (Wang et al., paper eqs. 8-10; official code
  `comtrastive_loss`), for 2 classes (0 = no change, 1 = change).

  P = softmax(real pair (A, B)), N = softmax(its no-change pair, e.g. (A + eta, A + eta')); the
  label (or pseudo-label) M of the real pair splits the pixels:
    unchanged (M = 0), positive pixels, the two pairs should agree:  (P_0 - N_0)^2
      (= (P_1 - N_1)^2 with two classes, so this is the MSE over both channels);
    changed (M = 1), negative pixels, the pairs should be opposite: the real pair's change
      probability should equal the no-change pair's no-change probability and vice versa:
      (P_1 - N_0)^2 + (P_0 - N_1)^2.
  The sum over pixels is divided by the number of non-ignored pixels of the batch (not by the
  count of each region): the official code's mean over all pixels, so the rare changed pixels
  are not up-weighted. Pixels labelled `ignore_label` (padding, cutout) count nowhere. Gradients
  flow into both P and N, as in the code.
  """
  if logits_real_BxHxWxK.shape[-1] != 2:
    raise ValueError(f"contrastive_loss needs 2 classes, got {logits_real_BxHxWxK.shape[-1]}")
  p = jax.nn.softmax(logits_real_BxHxWxK.astype(jnp.float32), axis=-1)
  n = jax.nn.softmax(logits_nochange_BxHxWxK.astype(jnp.float32), axis=-1)
  labels = labels_BxHxW.astype(jnp.int32)
  valid = labels != ignore_label
  changed = valid & (labels == 1)
  unchanged = valid & (labels == 0)
  l_p = jnp.square(p[..., 0] - n[..., 0])
  l_n = jnp.square(p[..., 1] - n[..., 0]) + jnp.square(p[..., 0] - n[..., 1])
  total = jnp.sum(jnp.where(unchanged, l_p, 0.0)) + jnp.sum(jnp.where(changed, l_n, 0.0))
  return total / jnp.maximum(jnp.sum(valid), 1)


def snunet_loss(outputs: dict[str, jax.Array], labels_BxHxW: jax.Array, *,
                class_weights: Sequence[float] = (), ignore_label: int = 255,
                eps: float = 1e-7) -> tuple[jax.Array, dict]:
  """SNUNet-CD's `hybrid_loss`: CE (its FocalLoss with gamma 0: unweighted, the official
  `class_weights` are ()) + Dice, where
  Dice = 1 - mean over classes of 2 sum(p t) / (sum(p + t) + eps), p = softmax, t = one-hot,
  summed over the batch and all pixels. Ignored pixels count in neither term."""
  logits = outputs["logits"]
  ce = cross_entropy(logits, labels_BxHxW, class_weights=class_weights, ignore_label=ignore_label)
  valid = (labels_BxHxW != ignore_label)[..., None]
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * valid
  t = jax.nn.one_hot(jnp.where(valid[..., 0], labels_BxHxW, 0), logits.shape[-1]) * valid
  inter_K = jnp.sum(p * t, axis=(0, 1, 2))
  card_K = jnp.sum(p + t, axis=(0, 1, 2))
  dice = 1.0 - jnp.mean(2.0 * inter_K / (card_K + eps))
  return ce + dice, {"ce": ce, "dice": dice}


def batch_balanced_contrastive(distance_BxHxW: jax.Array, labels_BxHxW: jax.Array, *,
                               margin: float = 2.0, ignore_label: int = 255) -> jax.Array:
  """BCL, the batch-balanced contrastive loss of STANet (models/loss.py) and DSAMNet
  (loss/BCL.py), the same formula in both: sum_unchanged d^2 / (n_unchanged + 1e-4)
  + sum_changed max(0, margin - d)^2 / (n_changed + 1e-4), counted over the whole batch, with no
  1/2 factors. Ignored pixels count in neither term (the official labels have none)."""
  labels = labels_BxHxW.astype(jnp.int32)
  valid = labels != ignore_label
  changed, unchanged = valid & (labels == 1), valid & (labels == 0)
  d = distance_BxHxW.astype(jnp.float32)
  l_unchanged = jnp.sum(jnp.where(unchanged, d * d, 0.0)) / (jnp.sum(unchanged) + 1e-4)
  l_changed = jnp.sum(jnp.where(changed, jnp.square(jnp.maximum(margin - d, 0.0)), 0.0))
  return l_unchanged + l_changed / (jnp.sum(changed) + 1e-4)


def dsamnet_loss(outputs: dict[str, jax.Array], labels_BxHxW: jax.Array, *,
                 class_weights: Sequence[float] = (), ignore_label: int = 255, margin: float = 2.0,
                 w_dice: float = 0.1) -> tuple[jax.Array, dict]:
  """DSAMNet's training loss (official train.py, loss/BCL.py, loss/DiceLoss.py):
  BCL(distance) + w_dice * 0.5 * (Dice(ds2) + Dice(ds3)), BCL on the full-resolution
  'distance' (`batch_balanced_contrastive`).
  Dice: a sigmoid (not a softmax) per channel against the one-hot label; per sample and class
  1 - (sum p t + 1) / (sum p^2 + t^2 + 1), averaged over batch and classes. Ignored pixels
  count nowhere (the official labels have none)."""
  if len(class_weights):
    raise ConfigError("config.loss.class_weights: the dsamnet loss (BCL + Dice) has no class weights")
  bcl = batch_balanced_contrastive(outputs["distance"], labels_BxHxW, margin=margin,
                                   ignore_label=ignore_label)
  labels = labels_BxHxW.astype(jnp.int32)
  valid = labels != ignore_label
  mask = valid[..., None]

  def dice(logits):
    p = jax.nn.sigmoid(logits.astype(jnp.float32)) * mask
    t = jax.nn.one_hot(jnp.where(valid, labels, 0), logits.shape[-1]) * mask
    num_BxK = jnp.sum(p * t, axis=(1, 2)) + 1.0
    den_BxK = jnp.sum(p * p + t * t, axis=(1, 2)) + 1.0
    return jnp.mean(1.0 - num_BxK / den_BxK)
  ds = 0.5 * (dice(outputs["ds2"]) + dice(outputs["ds3"]))
  return bcl + w_dice * ds, {"bcl": bcl, "dice": ds}


def stanet_loss(outputs: dict[str, jax.Array], labels_BxHxW: jax.Array, *,
                class_weights: Sequence[float] = (), ignore_label: int = 255,
                margin: float = 2.0) -> jax.Array:
  """STANet's training loss (official CDFA_model.py, models/loss.py): BCL with margin 2 on the
  full-resolution 'distance' (`batch_balanced_contrastive`), nothing else."""
  if len(class_weights):
    raise ConfigError("config.loss.class_weights: the stanet loss (BCL) has no class weights")
  return batch_balanced_contrastive(outputs["distance"], labels_BxHxW, margin=margin,
                                    ignore_label=ignore_label)


def nearest_labels(labels_BxHxW: jax.Array, hw: Sequence[int]) -> jax.Array:
  """torch `F.interpolate(mode='nearest')` of a label map to `hw`: output pixel i takes input
  floor(i * H / h) (the top-left pixel of each cell when h divides H); ignore labels survive."""
  b, h_in, w_in = labels_BxHxW.shape
  rows = np.minimum(np.floor(np.arange(hw[0]) * (h_in / hw[0])).astype(np.int32), h_in - 1)
  cols = np.minimum(np.floor(np.arange(hw[1]) * (w_in / hw[1])).astype(np.int32), w_in - 1)
  return labels_BxHxW[:, rows][:, :, cols]


CHANGEFORMER_OUTPUTS = ("p_c4", "p_c3", "p_c2", "p_c1", "logits")  # the official list's order


def changeformer_loss(outputs: dict[str, jax.Array], labels_BxHxW: jax.Array, *,
                      class_weights: Sequence[float] = (), ignore_label: int = 255,
                      multi_scale: bool = True,
                      weights: Sequence[float] = (0.5, 0.5, 0.5, 0.8, 1.0)) -> tuple[jax.Array, dict]:
  """ChangeFormer's training loss (official models/trainer.py `_backward_G`, LEVIR/WHU scripts:
  loss ce, multi_scale_train True, the default multi_pred_weights): sum over the outputs
  (p_c4, p_c3, p_c2, p_c1, logits) of weight x CE(output, the label resized by nearest to the
  output's size), ignore label masked. multi_scale=False: CE of 'logits' only.
  (The official resizes to a square of the output's height; here to its height and width.)"""
  if len(weights) != len(CHANGEFORMER_OUTPUTS):
    raise ConfigError(f"config.loss.weights: {len(weights)} weights for the "
                      f"{len(CHANGEFORMER_OUTPUTS)} outputs {CHANGEFORMER_OUTPUTS}")
  keys = CHANGEFORMER_OUTPUTS if multi_scale else ("logits",)
  ws = tuple(weights) if multi_scale else (1.0,)
  parts, total = {}, 0.0
  for key, w in zip(keys, ws):
    pred = outputs[key]
    y = labels_BxHxW if pred.shape[1:3] == labels_BxHxW.shape[1:] else \
        nearest_labels(labels_BxHxW, pred.shape[1:3])
    ce = cross_entropy(pred, y, class_weights=class_weights, ignore_label=ignore_label)
    parts[f"ce_{key}"] = ce
    total = total + w * ce
  return total, parts


def consistency_mse(aux_logits_BxHxWxK: jax.Array, target_probs_BxHxWxK: jax.Array) -> jax.Array:
  """RCR's unsupervised loss (SemiCD `softmax_mse_loss`, no confidence mask): the mean over every
  element of (softmax(aux logits) - target probabilities)^2; the target carries no gradient."""
  p = jax.nn.softmax(aux_logits_BxHxWxK.astype(jnp.float32), axis=-1)
  return jnp.mean(jnp.square(p - jax.lax.stop_gradient(target_probs_BxHxWxK)))


def sigmoid_rampup(step: jax.Array, length: int) -> jax.Array:
  """exp(-5 (1 - t / T)^2) for t = min(step, T), 1 once T = `length` steps have passed (and for
  T = 0): the consistency weight's ramp of Laine & Aila, SemiCD `ramps.sigmoid_rampup`."""
  if length <= 0:
    return jnp.ones((), jnp.float32)
  phase = 1.0 - jnp.clip(jnp.asarray(step, jnp.float32), 0.0, length) / length
  return jnp.exp(-5.0 * phase * phase)


def from_config(loss_config) -> Callable[[dict, jax.Array], tuple[jax.Array, dict]]:
  """(outputs, labels) -> (loss, parts) of a config's `loss` block: `name` "ce" (the default,
  class-weighted cross-entropy of `logits`) or the `<name>_loss` of this module with the block's
  other fields as keyword arguments."""
  name = loss_config.get("name", "ce")
  if name == "ce":
    def loss_fn(outputs, labels):
      ce = cross_entropy(outputs["logits"], labels,
                         class_weights=tuple(loss_config.class_weights),
                         ignore_label=loss_config.ignore_label)
      return ce, {}
    return loss_fn
  fn = globals().get(f"{name}_loss")
  if fn is None:
    raise ConfigError(f"config.loss.name: unknown loss {name!r}")
  kwargs = {k: v for k, v in loss_config.items() if k != "name"}

  def named_loss(outputs, labels):
    out = fn(outputs, labels, **kwargs)  # a loss returns a scalar or (scalar, dict of parts)
    return out if isinstance(out, tuple) else (out, {})
  return named_loss
