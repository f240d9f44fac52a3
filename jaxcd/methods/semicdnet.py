"""SemiCDNet (Peng et al., TGRS 2020): semi-supervised change detection with a segmentation-map
discriminator Ds and an entropy-map discriminator De, the RCL paper's rival in Table IV
(../shared/papers/rcl.txt), as the official SemiCD code's `SemiCDNet(TGRS21)` branch (github
wgcban/SemiCD) sets it up. Batches and the two-optimizer step: `jaxcd.methods.adversarial`.

Both discriminators are `Discriminator(head="gap", num_outputs=2)` (ndf `gan.ndf`): real/fake
logits of a whole map, 2-class CE. The entropy map is the code's p * log(p + 1e-6) per class.
  Ds: real = the labeled pairs' ground-truth map (1 channel), fake = the unlabeled pairs' change
      map; De: real = the labeled pairs' entropy maps, fake = the unlabeled pairs'.
      The discriminators' loss (the four CE terms) is weighted by the ramped weight w when
      `semicdnet.disc_weight_ramp` (the code: they are its `loss_unsup` x weight_u).
  G:  CE + w * semicdnet.unsup_weight * (CE(Ds(p1_u), real) + CE(De(E_u), real)): the
      generator learns to make the unlabeled pairs' maps and entropies pass as the labeled ones'
      (the paper's adversarial losses), with the change probability p1 as Ds's soft input.
The official branch feeds Ds the argmax of the prediction and detaches every input, so no
adversarial gradient reaches the network (only the discriminators learn):
`semicdnet.code_detached` = True reproduces that.
"""
import jax
import jax.numpy as jnp

from jaxcd.methods import adversarial as adv
from jaxcd.models.discriminators import Discriminator


def entropy_map(probs_BxHxWxK: jax.Array) -> jax.Array:
  """p * log(p + 1e-6) per class (the official code's E, a negative entropy per class)."""
  return probs_BxHxWxK * jnp.log(probs_BxHxWxK + 1e-6)


class SemiCDNet(adv.SemiAdversarial):
  name = "semicdnet"

  def discriminators(self):
    ndf = int(self.config.gan.ndf)
    return {"seg": (Discriminator(ndf, head="gap", num_outputs=2), 1),
            "ent": (Discriminator(ndf, head="gap", num_outputs=2), 2)}

  def change_map(self, v, labeled: bool = False) -> jax.Array:
    """Ds's fake input: the change probability (paper) or the argmax (code), BxHxWx1."""
    logits = v.logits_l if labeled else v.logits_u
    if self.config.semicdnet.code_detached:
      return jnp.argmax(logits, axis=-1)[..., None].astype(jnp.float32)
    return jax.nn.softmax(logits, axis=-1)[..., 1:2]

  def logits(self, disc_params, name, x, rng):
    return self.disc_apply(disc_params, name, x, rng)["logits"]

  def generator_loss(self, disc_params, v, w, rng):
    s = self.config.semicdnet
    if s.code_detached:
      return jnp.float32(0.0), {}
    k_s, k_e = jax.random.split(rng)
    adv_seg = adv.class_ce(self.logits(disc_params, "seg", self.change_map(v), k_s), 1)
    adv_ent = adv.class_ce(self.logits(disc_params, "ent", entropy_map(v.probs_u), k_e), 1)
    return w * s.unsup_weight * (adv_seg + adv_ent), {"adv_seg": adv_seg, "adv_ent": adv_ent}

  def discriminator_loss(self, disc_params, v, w, rng):
    s = self.config.semicdnet
    ks = jax.random.split(rng, 4)
    ignore = self.config.loss.ignore_label
    gt = jnp.where(v.labels_l == ignore, 0, v.labels_l)[..., None].astype(jnp.float32)
    loss_seg = (adv.class_ce(self.logits(disc_params, "seg", gt, ks[0]), 1)
                + adv.class_ce(self.logits(disc_params, "seg", self.change_map(v), ks[1]), 0))
    loss_ent = (adv.class_ce(self.logits(disc_params, "ent", entropy_map(v.probs_l), ks[2]), 1)
                + adv.class_ce(self.logits(disc_params, "ent", entropy_map(v.probs_u), ks[3]), 0))
    scale = w * s.unsup_weight if s.disc_weight_ramp else 1.0
    return scale * (loss_seg + loss_ent), {"d_seg": loss_seg, "d_ent": loss_ent}


METHOD = SemiCDNet
