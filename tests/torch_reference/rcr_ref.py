"""A PyTorch RCR/RCL network written for parity tests, from the spec (reference/methods.md, RCL).

Two modules whose `state_dict()` names stand in for real checkpoints; the forward passes are our own:
  - `ResNet50`: the ImageNet classifier's names. Deep stem: the CSAIL / CCT
    `3x3resnet50-imagenet.pth` names (conv1, bn1, conv2, bn2, conv3, bn3, layerN.i.*, fc), which
    SemiCD loads under torchcv's `prefix.`; standard stem: torchvision's `resnet50` names.
    Dilated to output stride 8 the torchcv way (`_nostride_dilate`: strided convs of layer3/4 get
    stride 1, the 3x3 one dilation d/2, the other 3x3 convs dilation d; d = 2, 4).
  - `CDModel`: the names of the official SemiCD / RCL `CD_Model` (encoder.base.0.0.<stem>,
    encoder.base.<1-4>.<block>, encoder.psp.stages.k.{1,2}, encoder.psp.bottleneck.{0,1},
    main_decoder.upsample.{0,3}), plus with `aux_decoders` > 0 RCR's training-only auxiliary
    decoders (aux_decoders.<i>.upsample.{0,3}: each of SemiCD's VAT/DropOut/CutOut/...Decoder
    classes holds one `upsample()` stack like the main decoder's, and nothing else with weights).
`width` scales every width by width/64 as `jaxcd.models.rcr`. Imported only by tests, after
`pytest.importorskip("torch")`.
"""
from collections import OrderedDict

import torch
from torch import nn

BLOCKS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(4 * planes)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _nostride_dilate(layer: nn.Module, dilate: int) -> None:
  for m in layer.modules():
    if isinstance(m, nn.Conv2d):
      if m.stride == (2, 2):
        m.stride = (1, 1)
        if m.kernel_size == (3, 3):
          m.dilation, m.padding = (dilate // 2,) * 2, (dilate // 2,) * 2
      elif m.kernel_size == (3, 3):
        m.dilation, m.padding = (dilate,) * 2, (dilate,) * 2


class ResNet50(nn.Module):
  """ImageNet ResNet-50 (deep or standard stem) dilated to output stride 8; forward -> layer4."""

  def __init__(self, deep_stem: bool = True, width: int = 64, bands: int = 3, num_classes: int = 1000):
    super().__init__()
    w = width
    self.deep_stem = deep_stem
    if deep_stem:
      self.conv1 = nn.Conv2d(bands, w, 3, stride=2, padding=1, bias=False)
      self.bn1 = nn.BatchNorm2d(w)
      self.conv2 = nn.Conv2d(w, w, 3, padding=1, bias=False)
      self.bn2 = nn.BatchNorm2d(w)
      self.conv3 = nn.Conv2d(w, 2 * w, 3, padding=1, bias=False)
      self.bn3 = nn.BatchNorm2d(2 * w)
      inplanes = 2 * w
    else:
      self.conv1 = nn.Conv2d(bands, w, 7, stride=2, padding=3, bias=False)
      self.bn1 = nn.BatchNorm2d(w)
      inplanes = w
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    for s, blocks in enumerate(BLOCKS):
      planes, stride = w * 2 ** s, 1 if s == 0 else 2
      down = nn.Sequential(nn.Conv2d(inplanes, 4 * planes, 1, stride=stride, bias=False),
                           nn.BatchNorm2d(4 * planes))
      layers = [Bottleneck(inplanes, planes, stride, down)]
      layers += [Bottleneck(4 * planes, planes) for _ in range(blocks - 1)]
      setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
      inplanes = 4 * planes
    self.fc = nn.Linear(inplanes, num_classes)  # in the checkpoints; unused by the encoder
    _nostride_dilate(self.layer3, 2)
    _nostride_dilate(self.layer4, 4)

  def stem_modules(self) -> OrderedDict:
    if not self.deep_stem:
      return OrderedDict(conv1=self.conv1, bn1=self.bn1, relu=self.relu)
    return OrderedDict(conv1=self.conv1, bn1=self.bn1, relu1=nn.ReLU(), conv2=self.conv2,
                       bn2=self.bn2, relu2=nn.ReLU(), conv3=self.conv3, bn3=self.bn3, relu3=nn.ReLU())

  def forward(self, x):
    for m in self.stem_modules().values():
      x = m(x)
    x = self.maxpool(x)
    for s in range(1, 5):
      x = getattr(self, f"layer{s}")(x)
    return x


class PSP(nn.Module):
  def __init__(self, channels: int, bins=(1, 2, 3, 6)):
    super().__init__()
    out = channels // len(bins)
    self.stages = nn.ModuleList(
        [nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(channels, out, 1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU()) for b in bins])
    self.bottleneck = nn.Sequential(nn.Conv2d(channels + len(bins) * out, out, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(out), nn.ReLU())

  def forward(self, x):
    h, w = x.shape[2:]
    pyr = [x] + [nn.functional.interpolate(s(x), size=(h, w), mode="bilinear", align_corners=False)
                 for s in self.stages]
    return self.bottleneck(torch.cat(pyr, dim=1))


class Encoder(nn.Module):
  def __init__(self, resnet: ResNet50):
    super().__init__()
    prefix = nn.Sequential(resnet.stem_modules())
    self.base = nn.Sequential(nn.Sequential(prefix, resnet.maxpool), resnet.layer1, resnet.layer2,
                              resnet.layer3, resnet.layer4)
    self.psp = PSP(resnet.layer4[-1].conv3.out_channels)

  def forward(self, a, b):
    return self.psp(torch.abs(self.base(a) - self.base(b)))


class MainDecoder(nn.Module):
  def __init__(self, channels: int, mid: int, num_classes: int):
    super().__init__()
    self.upsample = nn.Sequential(nn.Conv2d(channels, mid, 3, padding=1, bias=False), nn.ReLU(),
                                  nn.Upsample(scale_factor=8, mode="bilinear"),
                                  nn.Conv2d(mid, num_classes, 1, bias=False))

  def forward(self, x):
    return self.upsample(x)


class CDModel(nn.Module):
  """Siamese ResNet-50 -> |fA - fB| -> PSP -> decoder, with the official state_dict names."""

  def __init__(self, deep_stem: bool = True, width: int = 64, bands: int = 3, num_classes: int = 2,
               aux_decoders: int = 0):
    super().__init__()
    self.encoder = Encoder(ResNet50(deep_stem, width, bands))
    self.main_decoder = MainDecoder(8 * width, width // 2, num_classes)
    if aux_decoders:
      self.aux_decoders = nn.ModuleList(
          [MainDecoder(8 * width, width // 2, num_classes) for _ in range(aux_decoders)])

  def forward(self, a, b):
    return self.main_decoder(self.encoder(a, b))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights everywhere plus non-trivial BatchNorm affines and running statistics."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
      elif isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
  return model
