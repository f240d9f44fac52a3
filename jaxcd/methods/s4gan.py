"""s4GAN (Mittal et al., TPAMI 2019): a GAN branch with feature matching plus discriminator-
filtered self-training, the RCL paper's rival in Table IV (../shared/papers/rcl.txt), as the
official SemiCD code's `s4GAN` branch (github wgcban/SemiCD) implements it for change detection.
Batches and the two-optimizer step: `jaxcd.methods.adversarial`.

The discriminator (`Discriminator(head="fc", dropout=0.5)`, ndf `gan.ndf`) sees a 2-class map
concatenated with both images, each min-max scaled to [0, 1] over its batch (2 + 2C channels),
and gives one real/fake logit per pair plus its pooled conv4 features.
  D:  (BCE(D(one-hot ground truth | labeled images), 1) + BCE(D(softmax(p_u) | unlabeled
      images), 0)) / 2 on stopped predictions, weighted by the ramped w when
      `s4gan.disc_weight_ramp` (the code: it is its `loss_unsup` x weight_u).
  G:  CE + lambda_fm * |mean features(ground truth) - mean features(prediction)|_1 (feature
      matching, the mean over the batch and then the channels) + lambda_st * CE(p_u, argmax p_u)
      over the unlabeled pairs whose sigmoid(D) > st_threshold (self-training).
The s4GAN branch has no multi-label classifier branch (the paper's MLMT filter): the self-training
filter is the discriminator's score alone, as here. One code detail differs from the paper's
setup: the official branch trains D with the network's optimizer (SGD 1e-2, poly) and the
weighted loss; the paper uses Adam 1e-4 for D. `gan.disc_*` picks it (configs: paper's).
"""
import jax
import jax.numpy as jnp

from jaxcd.errors import ConfigError
from jaxcd.methods import adversarial as adv
from jaxcd.models.discriminators import Discriminator


def minmax(x: jax.Array) -> jax.Array:
  """(x - min) / (max - min) over the whole batch (the official code's image scaling)."""
  lo, hi = jnp.min(x), jnp.max(x)
  return (x - lo) / jnp.maximum(hi - lo, 1e-12)


class S4GAN(adv.SemiAdversarial):
  name = "s4gan"

  def check_method_config(self) -> None:
    if not 0 <= self.config.s4gan.st_threshold <= 1:
      raise ConfigError(f"config.s4gan.st_threshold must be in [0, 1], got "
                        f"{self.config.s4gan.st_threshold}")

  def discriminators(self):
    bands = int(self.config.data.num_bands)
    return {"d": (Discriminator(int(self.config.gan.ndf), head="fc", dropout=0.5), 2 + 2 * bands)}

  def d_input(self, maps_BxHxWx2, v, labeled: bool) -> jax.Array:
    a, b = v.images(labeled)
    return jnp.concatenate([maps_BxHxWx2, minmax(a), minmax(b)], axis=-1)

  def generator_loss(self, disc_params, v, w, rng):
    s = self.config.s4gan
    k_u, k_gt = jax.random.split(rng)
    ignore = self.config.loss.ignore_label
    out_u = self.disc_apply(disc_params, "d", self.d_input(v.probs_u, v, False), k_u)
    gt = self.d_input(adv.one_hot_labels(v.labels_l, ignore), v, True)
    out_gt = self.disc_apply(disc_params, "d", gt, k_gt)
    fm = jnp.mean(jnp.abs(jnp.mean(out_gt["features"], 0) - jnp.mean(out_u["features"], 0)))
    keep = jax.nn.sigmoid(jax.lax.stop_gradient(out_u["logits"][:, 0])) > s.st_threshold
    pseudo = jnp.argmax(v.logits_u, axis=-1)
    st = adv.masked_ce(v.logits_u, pseudo, jnp.broadcast_to(keep[:, None, None], pseudo.shape))
    return s.lambda_fm * fm + s.lambda_st * st, {
        "fm": fm, "st": st, "st_pairs": jnp.mean(keep.astype(jnp.float32))}

  def discriminator_loss(self, disc_params, v, w, rng):
    s = self.config.s4gan
    k_f, k_r = jax.random.split(rng)
    ignore = self.config.loss.ignore_label
    fake = self.disc_apply(disc_params, "d", self.d_input(v.probs_u, v, False), k_f)["logits"]
    gt = self.d_input(adv.one_hot_labels(v.labels_l, ignore), v, True)
    real = self.disc_apply(disc_params, "d", gt, k_r)["logits"]
    loss_fake, loss_real = adv.bce_logits(fake, 0.0), adv.bce_logits(real, 1.0)
    scale = w * s.unsup_weight if s.disc_weight_ramp else 1.0
    return scale * (loss_fake + loss_real) / 2, {"d_fake": loss_fake, "d_real": loss_real}


METHOD = S4GAN
