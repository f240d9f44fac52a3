"""A PyTorch DSAMNet written for parity tests, from the official architecture (liumency/DSAMNet,
`model/dsamnet.py`, `backbone.py`, `decoder.py`, `utils.py`).

Module names are the official ones (backbone.{conv1,bn1,layerN.i.*}, decoder.{drK.{conv1,bn1},
last_conv.{0,1,4,5}}, cbam{0,1}.{ca.fc1,ca.fc2,sa.conv1}, ds_lyr{2,3}.{dsconv,bn,outconv}), so
`state_dict()` stands in for an official checkpoint; the forward is our own. Imported only by
tests, after `pytest.importorskip("torch")`.
"""
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
  def __init__(self, cin: int, c: int, stride: int = 1, dilation: int = 1, downsample: bool = False):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, c, 3, stride, padding=dilation, dilation=dilation, bias=False)
    self.bn1 = nn.BatchNorm2d(c)
    self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(c)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                       if downsample else None)

  def forward(self, x):
    out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class Backbone(nn.Module):
  """The official ResNet-18 + multi-grid layer4; DSAMNet's (output stride 16) by default, STANet's
  (output stride 32) with stem_stride=2, layer4_stride=2, layer4_dilations=(1, 2, 4)."""

  def __init__(self, in_c: int = 3, stem_stride: int = 1, layer4_stride: int = 1,
               layer4_dilations: tuple[int, ...] = (2, 4, 8)):
    super().__init__()
    self.conv1 = nn.Conv2d(in_c, 64, 7, stem_stride, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
    self.layer2 = nn.Sequential(BasicBlock(64, 128, 2, downsample=True), BasicBlock(128, 128))
    self.layer3 = nn.Sequential(BasicBlock(128, 256, 2, downsample=True), BasicBlock(256, 256))
    d1, d2, d3 = layer4_dilations
    self.layer4 = nn.Sequential(BasicBlock(256, 512, layer4_stride, d1, downsample=True),
                                BasicBlock(512, 512, 1, d2), BasicBlock(512, 512, 1, d3))

  def forward(self, x):
    x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    feats = []
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      x = layer(x)
      feats.append(x)
    return feats


class DR(nn.Module):
  def __init__(self, cin: int, c: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, c, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c)

  def forward(self, x):
    return torch.relu(self.bn1(self.conv1(x)))


class Decoder(nn.Module):
  def __init__(self, fc: int = 64):
    super().__init__()
    self.dr2, self.dr3, self.dr4, self.dr5 = DR(64, 96), DR(128, 96), DR(256, 96), DR(512, 96)
    self.last_conv = nn.Sequential(nn.Conv2d(384, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                                   nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(256, fc, 1, bias=False),
                                   nn.BatchNorm2d(fc), nn.ReLU())

  def forward(self, feats):
    l1, l2, l3, l4 = feats
    up = lambda x: F.interpolate(x, size=l1.shape[2:], mode="bilinear",  # noqa: E731
                                 align_corners=True)
    x = torch.cat([up(self.dr5(l4)), self.dr2(l1), up(self.dr3(l2)), up(self.dr4(l3))], 1)
    return self.last_conv(x)


class ChannelAttention(nn.Module):
  def __init__(self, c: int, ratio: int):
    super().__init__()
    self.fc1 = nn.Conv2d(c, c // ratio, 1, bias=False)
    self.fc2 = nn.Conv2d(c // ratio, c, 1, bias=False)

  def forward(self, x):
    mlp = lambda v: self.fc2(torch.relu(self.fc1(v)))  # noqa: E731
    return torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))


class SpatialAttention(nn.Module):
  def __init__(self, k: int):
    super().__init__()
    self.conv1 = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)

  def forward(self, x):
    return torch.sigmoid(self.conv1(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))


class CBAM(nn.Module):
  def __init__(self, c: int, ratio: int, k: int):
    super().__init__()
    self.ca, self.sa = ChannelAttention(c, ratio), SpatialAttention(k)

  def forward(self, x):
    x = self.ca(x) * x
    return self.sa(x) * x


class DSLayer(nn.Module):
  def __init__(self, cin: int, c: int, stride: int, output_padding: int, n_class: int):
    super().__init__()
    self.dsconv = nn.ConvTranspose2d(cin, c, 3, stride, padding=1, output_padding=output_padding)
    self.bn = nn.BatchNorm2d(c)
    self.dropout = nn.Dropout2d(0.2)
    self.outconv = nn.ConvTranspose2d(c, n_class, 3, padding=1)

  def forward(self, x):
    return self.outconv(self.dropout(torch.relu(self.bn(self.dsconv(x)))))


class DSAMNet(nn.Module):
  def __init__(self, n_class: int = 2, in_c: int = 3):
    super().__init__()
    self.backbone, self.decoder = Backbone(in_c), Decoder(64)
    self.cbam0, self.cbam1 = CBAM(64, 8, 7), CBAM(64, 8, 7)
    self.ds_lyr2 = DSLayer(64, 32, 2, 1, n_class)
    self.ds_lyr3 = DSLayer(128, 32, 4, 3, n_class)

  def forward(self, a, b):
    fa, fb = self.backbone(a), self.backbone(b)
    xa, xb = self.cbam0(self.decoder(fa)), self.cbam1(self.decoder(fb))
    dist = F.pairwise_distance(xa.transpose(1, 3), xb.transpose(1, 3), keepdim=True).transpose(1, 3)
    dist = F.interpolate(dist, size=a.shape[2:], mode="bilinear", align_corners=True)
    return dist, self.ds_lyr2(torch.abs(fa[0] - fb[0])), self.ds_lyr3(torch.abs(fa[1] - fb[1]))
