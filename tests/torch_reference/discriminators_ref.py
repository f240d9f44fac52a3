"""PyTorch re-statements of the three discriminators of the official SemiCD code (github
wgcban/SemiCD): branch `AdvNet` models/AdvNet/discriminators.py `FCDiscriminator`, branch
`SemiCDNet(TGRS21)` models/SemiCDNet_TGRS21/discriminators.py `FCDiscriminator` (Ds with one
input channel, De with two), branch `s4GAN` models/s4GAN/discriminators.py `s4GAN_discriminator`.
Written from the architecture (layers, sizes, official parameter names), not copied; the forwards
return logits (the s4GAN code's sigmoid is left to the loss). Imported only by tests, after
`pytest.importorskip("torch")`.
"""
from torch import nn


class _Trunk(nn.Module):
  def __init__(self, cin: int, ndf: int, dropout: float = 0.0):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, ndf, kernel_size=4, stride=2, padding=1)
    self.conv2 = nn.Conv2d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1)
    self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1)
    self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1)
    self.leaky_relu = nn.LeakyReLU(negative_slope=0.2)
    self.drop = nn.Dropout2d(dropout) if dropout else nn.Identity()

  def trunk(self, x):
    for i, conv in enumerate((self.conv1, self.conv2, self.conv3, self.conv4)):
      x = self.leaky_relu(conv(x))
      if i < 3:
        x = self.drop(x)
    return x


class AdvNetDiscriminator(_Trunk):
  """AdvNet branch: a fifth 4x4 stride-2 conv `classifier` to one channel."""

  def __init__(self, num_classes: int = 2, ndf: int = 64):
    super().__init__(num_classes, ndf)
    self.classifier = nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=2, padding=1)

  def forward(self, x):
    return self.classifier(self.trunk(x))


class SemiCDNetDiscriminator(_Trunk):
  """SemiCDNet branch: global average pooling, a 1x1 conv `FC` to 2 logits."""

  def __init__(self, num_classes: int, ndf: int = 64):
    super().__init__(num_classes, ndf)
    self.gap = nn.AdaptiveAvgPool2d(1)
    self.FC = nn.Conv2d(ndf * 8, 2, kernel_size=1)

  def forward(self, x):
    return self.FC(self.gap(self.trunk(x)))


class S4GANDiscriminator(_Trunk):
  """s4GAN branch: Dropout2d(0.5) after conv1-3, global average pooling, Linear `fc` to 1."""

  def __init__(self, num_classes: int = 2, ndf: int = 64):
    super().__init__(num_classes + 6, ndf, dropout=0.5)
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(ndf * 8, 1)

  def forward(self, x):
    maps = self.avgpool(self.trunk(x))
    return self.fc(maps.flatten(1)), maps
