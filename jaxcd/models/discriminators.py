"""Discriminators of the adversarial semi-supervised methods (jaxcd/methods/{advnet,s4gan,
semicdnet}.py): four 4x4 stride-2 convolutions (ndf, 2ndf, 4ndf, 8ndf channels, LeakyReLU 0.2),
then a head. Parameter names follow the official code (github wgcban/SemiCD, branches AdvNet,
s4GAN and SemiCDNet(TGRS21)) so a torch state dict maps by name.

  head="map"   AdvNet's FCDiscriminator: a fifth 4x4 stride-2 convolution `classifier` to one
               logit per cell (H/32 x W/32).
  head="gap"   SemiCDNet's FCDiscriminator: global average pooling, a 1x1 convolution `FC` to
               `num_outputs` logits.
  head="fc"    s4GAN's discriminator: spatial dropout after conv1-conv3, global average pooling
               (also returned as `features`, for feature matching), a dense `fc` to one logit
               (the code applies the sigmoid inside; here the losses take logits).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv

HEADS = ("map", "gap", "fc")


def _conv(features: int, name: str) -> nn.Conv:
  # torch Conv2d(k=4, s=2, p=1): the same output size and taps as explicit (1, 1) padding.
  return Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), name=name)


class Discriminator(nn.Module):
  """x_BxHxWxC -> {"logits": B x h x w x 1 (map) or B x num_outputs, "features": B x 8ndf}."""
  ndf: int = 64
  head: str = "map"
  num_outputs: int = 1
  dropout: float = 0.0  # spatial dropout after conv1-conv3 (s4GAN: 0.5)

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if self.head not in HEADS:
      raise ValueError(f"discriminator head must be one of {HEADS}, got {self.head!r}")
    x = x_BxHxWxC.astype(jnp.float32)
    for i, mult in enumerate((1, 2, 4, 8)):
      x = nn.leaky_relu(_conv(self.ndf * mult, f"conv{i + 1}")(x), 0.2)
      if self.dropout and i < 3:
        # Dropout2d: whole channels, one draw per sample and channel.
        x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
    features = jnp.mean(x, axis=(1, 2))
    if self.head == "map":
      logits = _conv(1, "classifier")(x)
    elif self.head == "gap":
      logits = Conv(self.num_outputs, (1, 1), name="FC")(features[:, None, None, :])[:, 0, 0]
    else:
      logits = nn.Dense(1, name="fc")(features)
    return {"logits": logits, "features": features}
