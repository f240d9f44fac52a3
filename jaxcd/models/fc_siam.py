"""FC-EF, FC-Siam-conc and FC-Siam-diff (Daudt, Le Saux & Boulch, ICIP 2018).

Four-level U-Nets with 16/32/64/128 channels, BatchNorm, ReLU and Dropout2d(0.2) after every
conv but the last. FC-EF stacks A and B as one 2C-band input; the siamese variants share one
encoder between the dates and feed the decoder with concatenated (conc) or absolute-difference
(diff) skips. As in the authors' code, the siamese decoders start from date B's bottleneck
(`bottleneck="b"`); `bottleneck="diff"` uses |A-B| there instead.
Parameters (3-band input, 2 classes; BatchNorm scale/bias counted, running statistics not):
FC-EF 1,350,578, FC-Siam-conc 1,545,986, FC-Siam-diff 1,350,146 (papers: 1.35 M, 1.55 M, 1.35 M).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv
from jaxcd.models.layers import ConvBNReLU, UpConv, max_pool2, pad_to
from jaxcd.models.registry import register

_ENC = ((16, 2), (32, 2), (64, 3), (128, 3))  # (width, convs) per level


class Encoder(nn.Module):
  dropout: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[list[jax.Array], jax.Array]:
    skips = []
    for level, (width, n) in enumerate(_ENC, start=1):
      for i in range(n):
        x = ConvBNReLU(width, dropout=self.dropout, dtype=self.dtype, name=f"conv{level}{i + 1}")(x, train)
      skips.append(x)
      x = max_pool2(x)
    return skips, x


class Decoder(nn.Module):
  num_classes: int = 2
  dropout: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skips: list[jax.Array], train: bool) -> jax.Array:
    # Level widths mirror the encoder; each level: upconv, concat skip, convs narrowing to the next.
    for level in (4, 3, 2, 1):
      width, n = _ENC[level - 1]
      skip = skips[level - 1]
      x = UpConv(x.shape[-1], dtype=self.dtype, name=f"upconv{level}")(x)
      x = jnp.concatenate([pad_to(x, skip.shape[1:3]), skip], axis=-1)
      for i in range(n, 0, -1):
        last = i == 1
        out = (_ENC[level - 2][0] if level > 1 else self.num_classes) if last else width
        if level == 1 and last:
          x = Conv(out, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name=f"conv{level}{i}d")(x)
        else:
          x = ConvBNReLU(out, dropout=self.dropout, dtype=self.dtype, name=f"conv{level}{i}d")(x, train)
    return x


class _FCBase(nn.Module):
  num_classes: int = 2
  dropout: float = 0.2
  dtype: Any = jnp.float32


@register("fc_ef")
class FCEF(_FCBase):
  """Early fusion: one U-Net over the 2C-band stack [A, B]."""

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    x = jnp.concatenate([a, b], axis=-1).astype(self.dtype)
    skips, x = Encoder(self.dropout, self.dtype, name="encoder")(x, train)
    logits = Decoder(self.num_classes, self.dropout, self.dtype, name="decoder")(x, skips, train)
    return {"logits": logits.astype(jnp.float32)}


class _FCSiam(_FCBase):
  fusion: str = "diff"
  bottleneck: str = "b"

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    enc = Encoder(self.dropout, self.dtype, name="encoder")
    skips_a, bot_a = enc(a.astype(self.dtype), train)
    skips_b, bot_b = enc(b.astype(self.dtype), train)
    if self.fusion == "diff":
      skips = [jnp.abs(sa - sb) for sa, sb in zip(skips_a, skips_b)]
    else:
      skips = [jnp.concatenate([sa, sb], axis=-1) for sa, sb in zip(skips_a, skips_b)]
    x = bot_b if self.bottleneck == "b" else jnp.abs(bot_a - bot_b)
    logits = Decoder(self.num_classes, self.dropout, self.dtype, name="decoder")(x, skips, train)
    return {"logits": logits.astype(jnp.float32)}


@register("fc_siam_diff")
class FCSiamDiff(_FCSiam):
  fusion: str = "diff"


@register("fc_siam_conc")
class FCSiamConc(_FCSiam):
  fusion: str = "conc"
