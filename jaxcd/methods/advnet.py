"""AdvNet: adversarial learning for semi-supervised segmentation (Hung et al., BMVC 2018), the
RCL paper's rival in Table IV (../shared/papers/rcl.txt), for change detection as the official
SemiCD code's `AdvNet` branch (github wgcban/SemiCD) sets it up. Batches and the two-optimizer
step: `jaxcd.methods.adversarial`.

A fully convolutional discriminator D (`Discriminator(head="map")`, ndf `gan.ndf`) maps a 2-class
probability map to a confidence logit per cell, upsampled (bilinear) to the image size.
  D:  BCE(D(one-hot ground truth), 1) on the labeled pairs' valid pixels and
      BCE(D(softmax(prediction)), 0) on all pairs' stopped predictions, halved.
  G:  CE + lambda_adv_l * BCE(D(p_l), 1) + lambda_adv_u * BCE(D(p_u), 1)
         + lambda_semi * CE(p_u, argmax p_u) over the pixels where sigmoid(D(p_u)) > mask_T,
      the self-training term from `advnet.semi_start` of the steps on (paper: 5k of 20k).
The official branch differs: its adversarial and self-training terms are numpy copies (no
gradient reaches the network), the discriminator is never updated, the self-training target is
unmasked, and the sum is weighted by the ramped `unsupervised_w` (1.0). `advnet.code_detached`
= True reproduces that: the run then trains as Sup. only, with the terms only logged.
"""
import jax
import jax.numpy as jnp

from jaxcd.errors import ConfigError
from jaxcd.methods import adversarial as adv
from jaxcd.models.discriminators import Discriminator


class AdvNet(adv.SemiAdversarial):
  name = "advnet"

  def check_method_config(self) -> None:
    a = self.config.advnet
    if not 0 <= a.mask_threshold <= 1 or not 0 <= a.semi_start <= 1:
      raise ConfigError(f"config.advnet.mask_threshold and semi_start must be in [0, 1], got "
                        f"{a.mask_threshold} and {a.semi_start}")

  def discriminators(self):
    return {"d": (Discriminator(int(self.config.gan.ndf), head="map"), 2)}

  def confidence(self, disc_params, probs_BxHxWx2, rng) -> jax.Array:
    """BxHxW logits of D, upsampled to the prediction's size."""
    m = self.disc_apply(disc_params, "d", probs_BxHxWx2, rng)["logits"]
    b, h, w, _ = probs_BxHxWx2.shape
    return jax.image.resize(m, (b, h, w, 1), "bilinear")[..., 0]

  def generator_loss(self, disc_params, v, w, rng):
    a = self.config.advnet
    k_l, k_u = jax.random.split(rng)
    d_u = self.confidence(disc_params, v.probs_u, k_u)
    adv_u = adv.bce_logits(d_u, 1.0)
    pseudo = jnp.argmax(v.logits_u, axis=-1)
    if a.code_detached:
      semi = adv.masked_ce(v.logits_u, pseudo, jnp.ones_like(pseudo))
      unsup = jax.lax.stop_gradient(w * a.unsup_weight * (adv_u + semi))
      return unsup, {"adv_u": adv_u, "semi": semi}
    valid = v.labels_l != self.config.loss.ignore_label
    adv_l = adv.bce_logits(self.confidence(disc_params, v.probs_l, k_l), 1.0, valid)
    mask = jax.nn.sigmoid(jax.lax.stop_gradient(d_u)) > a.mask_threshold
    semi = adv.masked_ce(v.logits_u, pseudo, mask)
    on = (v.step >= a.semi_start * self.total_steps).astype(jnp.float32)
    loss = a.lambda_adv_l * adv_l + a.lambda_adv_u * adv_u + on * a.lambda_semi * semi
    return loss, {"adv_l": adv_l, "adv_u": adv_u, "semi": semi,
                  "semi_pixels": jnp.mean(mask.astype(jnp.float32))}

  def discriminator_loss(self, disc_params, v, w, rng):
    if self.config.advnet.code_detached:
      return jnp.float32(0.0), {}
    k_f, k_r = jax.random.split(rng)
    ignore = self.config.loss.ignore_label
    fake = self.confidence(disc_params, v.probs, k_f)  # all pairs, each device's own
    real = self.confidence(disc_params, adv.one_hot_labels(v.labels_l, ignore), k_r)
    loss_fake = adv.bce_logits(fake, 0.0)
    loss_real = adv.bce_logits(real, 1.0, v.labels_l != ignore)
    return (loss_fake + loss_real) / 2, {"d_fake": loss_fake, "d_real": loss_real}


METHOD = AdvNet
