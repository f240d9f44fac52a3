"""CDCluster network (Bergamasco et al., "CDCluster", see ../shared/papers/cdcluster.txt).

Input: every band plus frozen Sobel edges of the mean band (RGB + magnitude = the paper's 4
channels; single-band SAR gives 2). A siamese encoder of three blocks conv3x3 -> BN -> ReLU ->
conv3x3 -> ReLU [-> max-pool]. The paper's "256x256x4 -> 64x64x64" needs exactly two poolings,
so blocks 1 and 2 pool and block 3 does not: H x W x 16 | H/2 x W/2 x 32 | H/4 x W/4 x 64.
At each block the BatchNorm outputs of A and B are subtracted (one BN for both dates: A and B are
encoded as one 2B batch, so the difference compares identically normalised features) and the
difference goes through CBAM as a skip connection. The bottom is block 3's A - B (H/4 x W/4 x 64).
Decoder: [bottom, skip3] -> ConvBNReLU(64) -> up x2 -> [., skip2] -> ConvBNReLU(32) -> up x2 ->
[., skip1] -> ConvBNReLU(16) -> conv3x3 -> BN = the clustered features (H x W x `features`).
The features end at BatchNorm, not ReLU: as in DeepCluster (which clusters the pre-ReLU output
and re-adds the ReLU before the top layer), half-zero rectified features make k-means degenerate.
Head (the paper's MLP of two dense layers, as 1x1 convs): ReLU -> Dense(features) -> ReLU ->
Dense(k). `reinit_head` re-initialises the last Dense after each clustering.

Parameters for RGB, Sobel magnitude, widths (16, 32, 64), features 16, k 20 (BatchNorm scale and
bias counted, running statistics not): 196,695 (derived layer by layer in the tests).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.errors import ConfigError
from jaxcd.models.attention import CBAM, Sobel
from jaxcd.models.conv import Conv
from jaxcd.models.layers import ConvBNReLU, UpConv, batch_norm, max_pool2, pad_to, pair, unpair
from jaxcd.models.registry import register

Dtype = Any
HEAD = "head"  # parameter collection key of the MLP head
TOP = "fc2"  # the head's last layer, re-initialised after every clustering


class EncoderBlock(nn.Module):
  """conv -> BN (tapped for the A-B difference) -> ReLU -> conv -> ReLU [-> max-pool]."""
  width: int
  pool: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    conv = lambda name: Conv(self.width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                             name=name)
    normed = batch_norm(train, self.dtype, name="bn")(conv("conv1")(x_BxHxWxC))
    x = nn.relu(conv("conv2")(nn.relu(normed)))
    return normed, (max_pool2(x) if self.pool else x)


class Head(nn.Module):
  """ReLU -> 1x1 conv -> ReLU -> 1x1 conv to k logits (DeepCluster's ReLU before the top layer)."""
  hidden: int
  num_clusters: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feat_BxHxWxD: jax.Array) -> jax.Array:
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(nn.relu(feat_BxHxWxD)))
    return nn.Dense(self.num_clusters, dtype=self.dtype, name=TOP,
                    kernel_init=nn.initializers.normal(0.01))(x)


class CDCluster(nn.Module):
  """Siamese CBAM-difference U-Net with a k-way clustering head.

  `__call__(a, b, train)` -> {'logits': BxHxWxk (float32), 'features': BxHxWxD (float32)};
  `features(a, b, train)` -> BxHxWxD without computing the head
  (`model.apply(variables, a, b, train=False, method="features")`).
  """
  num_clusters: int = 20
  features_dim: int = 16
  widths: Sequence[int] = (16, 32, 64)
  sobel: str = "magnitude"  # "magnitude" (1 channel) | "gradients" (gx, gy) | "none"
  dtype: Dtype = jnp.float32

  def setup(self):
    if len(self.widths) != 3:
      raise ValueError(f"cdcluster needs 3 encoder widths, got {tuple(self.widths)}")
    self.sobel_filter = None if self.sobel == "none" else Sobel(self.sobel)
    self.blocks = [EncoderBlock(w, pool=i < 2, dtype=self.dtype, name=f"block{i + 1}")
                   for i, w in enumerate(self.widths)]
    self.cbams = [CBAM(dtype=self.dtype, name=f"cbam{i + 1}") for i in range(3)]
    w1, w2, w3 = self.widths
    self.dec3 = ConvBNReLU(w3, dtype=self.dtype, name="dec3")
    self.up2 = UpConv(w2, dtype=self.dtype, name="up2")
    self.dec2 = ConvBNReLU(w2, dtype=self.dtype, name="dec2")
    self.up1 = UpConv(w1, dtype=self.dtype, name="up1")
    self.dec1 = ConvBNReLU(w1, dtype=self.dtype, name="dec1")
    self.feat_conv = Conv(self.features_dim, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                          name="feat_conv")
    # layers.batch_norm's settings; the train/eval mode is given per call (setup cannot know it).
    self.feat_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="feat_bn")
    self.head = Head(self.features_dim, self.num_clusters, self.dtype, name=HEAD)

  def _inputs(self, x_BxHxWxC: jax.Array) -> jax.Array:
    if self.sobel_filter is None:
      return x_BxHxWxC.astype(self.dtype)
    x = x_BxHxWxC.astype(jnp.float32)
    return jnp.concatenate([x, self.sobel_filter(x)], axis=-1).astype(self.dtype)

  def features(self, a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
    """The clustered features, BxHxWxD float32."""
    # One 2B batch: A and B share weights and BatchNorm statistics.
    x = self._inputs(pair(a_BxHxWxC, b_BxHxWxC))
    diff = lambda x_2BxHxWxC: jnp.subtract(*unpair(x_2BxHxWxC))
    skips = []
    for block, cbam in zip(self.blocks, self.cbams):
      normed, x = block(x, train)
      skips.append(cbam(diff(normed), train))
    s1, s2, s3 = skips
    y = self.dec3(jnp.concatenate([diff(x), s3], axis=-1), train)
    y = self.dec2(jnp.concatenate([pad_to(self.up2(y), s2.shape[1:3]), s2], axis=-1), train)
    y = self.dec1(jnp.concatenate([pad_to(self.up1(y), s1.shape[1:3]), s1], axis=-1), train)
    f = self.feat_bn(self.feat_conv(y), use_running_average=not train)
    return f.astype(jnp.float32)

  def __call__(self, a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array,
               train: bool = False) -> dict[str, jax.Array]:
    f = self.features(a_BxHxWxC, b_BxHxWxC, train)
    logits = self.head(f.astype(self.dtype))
    return {"logits": logits.astype(jnp.float32), "features": f}


@register("cdcluster")
def cdcluster(num_clusters: int = 20, features: int = 16, widths: Sequence[int] = (16, 32, 64),
              sobel: str = "magnitude", dtype: Dtype = jnp.float32,
              num_classes: int = 2) -> CDCluster:
  """Registry factory. `num_classes` (the binary change map, from config.model) is accepted and
  ignored: the network has k outputs; the method maps clusters to change."""
  del num_classes
  if sobel not in ("magnitude", "gradients", "none"):
    raise ConfigError(
        f"config.model.sobel must be 'magnitude', 'gradients' or 'none', not {sobel!r}")
  for field, v in (("num_clusters", num_clusters), ("features", features)):
    if int(v) < 1:
        raise ConfigError(f"config.model.{field} must be >= 1, got {v}")
  if len(tuple(widths)) != 3:
    raise ConfigError(f"config.model.widths needs 3 values, got {tuple(widths)}")
  return CDCluster(num_clusters=int(num_clusters), features_dim=int(features),
                   widths=tuple(int(w) for w in widths), sobel=sobel, dtype=dtype)


def reinit_head(params: Any, rng: jax.Array, num_clusters: int | None = None) -> Any:
  """Params with the head's last layer re-initialised as DeepCluster does after each clustering:
  kernel ~ N(0, 0.01), bias 0 (optionally with a new number of clusters). Other leaves unchanged.
  The optimizer's moments for that layer are stale afterwards: reset them too."""
  top = params[HEAD][TOP]
  hidden, k = top["kernel"].shape
  k = k if num_clusters is None else int(num_clusters)
  new_top = {"kernel": (0.01 * jax.random.normal(rng, (hidden, k))).astype(top["kernel"].dtype),
             "bias": jnp.zeros((k,), top["bias"].dtype)}
  head = {**params[HEAD], TOP: new_top}
  return {**params, HEAD: head}
