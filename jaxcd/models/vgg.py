"""VGG16 feature encoder (torchvision's `vgg16().features[:30]`: 13 3x3 convs + ReLU, no BatchNorm).

Returns the five taps relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (64@H, 128@H/2, 256@H/4,
512@H/8, 512@H/16); the final max-pool (torchvision index 30) is not part of it. Convs are named
`conv{stage}_{i}`; `TORCHVISION_CONV_INDICES` maps them to torchvision's `features.{k}` names.
Parameters: 14,714,688.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcd.models.conv import Conv
from jaxcd.models.layers import max_pool2

Dtype = Any

VGG16_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
CONV_NAMES = tuple(f"conv{s}_{i}" for s, widths in enumerate(VGG16_WIDTHS, start=1)
                   for i in range(1, len(widths) + 1))
# Index of each conv in torchvision's vgg16().features (ReLUs and max-pools sit in between).
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

# torchvision's VGG init (`VGG._initialize_weights`, what `vgg16(weights=None)` gives):
# kaiming_normal(mode="fan_out", nonlinearity="relu"), zero bias. PyTorch's plain Conv2d default
# (U(+-1/sqrt(fan_in))) shrinks the activation variance ~6x per layer: through 13 convs without
# BatchNorm the signal vanishes and a randomly initialised encoder barely trains.
vgg_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class VGG16Features(nn.Module):
  """Siamese-friendly VGG16 trunk; call it on A and B stacked on the batch axis to share weights."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, ...]:
    x = x_BxHxWxC.astype(self.dtype)
    taps = []
    for stage, widths in enumerate(VGG16_WIDTHS, start=1):
      if stage > 1:
        x = max_pool2(x)
      for i, width in enumerate(widths, start=1):
        x = Conv(width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                 kernel_init=vgg_kernel_init, bias_init=nn.initializers.zeros,
                 name=f"conv{stage}_{i}")(x)
        x = nn.relu(x)
      taps.append(x)
    return tuple(taps)
