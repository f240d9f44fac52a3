"""A PyTorch Dsfer-Net written for parity tests, from the spec (reference/methods.md, the paper).

Its parameter and buffer names are those of the official `MyNet` (github ShizhenChang/Dsfer-Net,
model/Networks.py) so that its `state_dict()` stands in for an official checkpoint; the forward
pass is our own. `input_size` sizes the (C,H,W) LayerNorms (the official code fixes 256).
Imported only by tests, after `pytest.importorskip("torch")`.
"""
import torch
import torch.nn.functional as F
from torch import nn

# torchvision vgg16().features; 'M' = 2x2 max-pool. The official trunk keeps the first 30 layers.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")
TAP_INDICES = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def vgg16_layers(num_layers: int = 31) -> list[nn.Module]:
  layers, c = [], 3
  for v in VGG16_LAYOUT:
    if v == "M":
      layers.append(nn.MaxPool2d(2, 2))
    else:
      layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
      c = v
  return layers[:num_layers]


class TorchvisionVGG16(nn.Module):
  """Only the `features` part of torchvision's VGG16, with its state_dict names."""

  def __init__(self):
    super().__init__()
    self.features = nn.Sequential(*vgg16_layers())

  def taps(self, x):
    out = []
    for i, layer in enumerate(self.features):
      x = layer(x)
      if i in TAP_INDICES:
        out.append(x)
    return out


class Trunk(nn.Module):
  def __init__(self):
    super().__init__()
    self.feats = nn.ModuleList(vgg16_layers(30))

  def forward(self, x):
    out = []
    for i, layer in enumerate(self.feats):
      x = layer(x)
      if i in TAP_INDICES:
        out.append(x)
    return out


class Projection(nn.Module):
  def __init__(self, dim: int):
    super().__init__()
    self.linear_qkv = nn.Linear(dim, dim, bias=False)

  def forward(self, x):
    return self.linear_qkv(x)


class Hopfield(nn.Module):
  """softmax(s (q Wq)(k Wk)^T)(v Wv), s = (beta // heads) ** -0.5."""

  def __init__(self, dim: int, beta: float, num_heads: int = 1):
    super().__init__()
    self.linear_q, self.linear_k, self.linear_v = Projection(dim), Projection(dim), Projection(dim)
    self.num_heads, self.scale = num_heads, (beta // num_heads) ** -0.5

  def forward(self, q, k, v):
    h = self.num_heads
    split = lambda t: t.unflatten(-1, (h, t.shape[-1] // h)).transpose(1, 2)  # B,h,N,E
    q, k, v = split(self.linear_q(q)), split(self.linear_k(k)), split(self.linear_v(v))
    attn = torch.softmax(self.scale * q @ k.transpose(-1, -2), dim=-1)
    return (attn @ v).transpose(1, 2).flatten(2)


class ConvBNReLU(nn.Module):
  def __init__(self, c_in: int, c_out: int):
    super().__init__()
    self.single_conv = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                                     nn.ReLU())

  def forward(self, x):
    return self.single_conv(x)


class Head(nn.Module):
  def __init__(self, c_in: int, n_classes: int):
    super().__init__()
    self.conv = nn.Conv2d(c_in, n_classes, 1)

  def forward(self, x):
    return self.conv(x)


class MyNet(nn.Module):
  def __init__(self, n_classes: int = 2, beta: float = 512.0, num_heads: int = 1,
               input_size: int = 256):
    super().__init__()
    s5, s4 = input_size // 16, input_size // 8
    self.base = Trunk()
    self.hopf4 = Hopfield(512, beta, num_heads)
    self.hopf5 = Hopfield(512, beta, num_heads)
    # Declaration order = the official state_dict() key order.
    self.dec5, self.layernorm1 = ConvBNReLU(1024, 512), nn.LayerNorm([512, s5, s5])
    self.dec51, self.out5 = ConvBNReLU(512, 512), Head(512, n_classes)
    self.dec4, self.layernorm2 = ConvBNReLU(1024, 512), nn.LayerNorm([512, s4, s4])
    self.dec41, self.out4 = ConvBNReLU(1024, 256), Head(512, n_classes)
    self.dec3, self.dec31 = ConvBNReLU(512, 256), ConvBNReLU(512, 128)
    self.dec2, self.dec21 = ConvBNReLU(256, 128), ConvBNReLU(256, 64)
    self.dec1, self.dec11 = ConvBNReLU(128, 64), ConvBNReLU(128, 32)
    self.outc = Head(32, n_classes)

  @staticmethod
  def _up(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

  @staticmethod
  def _retrieve(fa, fb, norm, hop):
    za, zb = norm(fa), norm(fb)
    tokens = lambda t: t.flatten(2).transpose(1, 2)  # B, HW, C
    q = tokens((za - zb).abs())
    h = hop(q, tokens(zb), tokens(zb)) + hop(q, tokens(za), tokens(za))
    return torch.sigmoid(h.transpose(1, 2).reshape(fa.shape))

  def forward(self, xa, xb):
    a1, a2, a3, a4, a5 = self.base(xa)
    b1, b2, b3, b4, b5 = self.base(xb)
    x5 = self._retrieve(a5, b5, self.layernorm1, self.hopf5)
    x = self._up(self.dec51(x5 * self.dec5(torch.cat([a5, b5], 1))))
    x4 = self._retrieve(a4, b4, self.layernorm2, self.hopf4)
    x = self._up(self.dec41(torch.cat([x4 * self.dec4(torch.cat([a4, b4], 1)), x], 1)))
    x = self._up(self.dec31(torch.cat([self.dec3(torch.cat([a3, b3], 1)), x], 1)))
    x = self._up(self.dec21(torch.cat([self.dec2(torch.cat([a2, b2], 1)), x], 1)))
    x = self.dec11(torch.cat([self.dec1(torch.cat([a1, b1], 1)), x], 1))
    return self.outc(x), self.out4(x4), self.out5(x5)


def dice_loss(logits, onehot, smooth: float = 1.0):
  """Dice of the official utils/DiceLoss.py, written from its definition: softmax over classes,
  per sample and class 1 - (sum p t + s) / (sum p^2 + t^2 + s), mean over batch, mean over classes."""
  p = torch.softmax(logits, dim=1).flatten(2)
  t = onehot.flatten(2)
  per = 1 - ((p * t).sum(-1) + smooth) / ((p ** 2 + t ** 2).sum(-1) + smooth)  # B, K
  return per.mean()


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights everywhere plus non-trivial BatchNorm/LayerNorm affines and running stats."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        # He-normal keeps activations O(1) through 13 convs, so every layer matters in a parity check.
        fan_in = m.weight[0].numel()
        gain = 2.0 if isinstance(m, nn.Conv2d) else 1.0
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (gain / fan_in) ** 0.5)
    for name, p in model.named_parameters():
      if "layernorm" in name or ".1." in name:  # norm affines: near 1 (weight) / 0 (bias)
        base = 1.0 if name.endswith("weight") else 0.0
        p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
    for name, b in model.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.1 * torch.randn(b.shape, generator=g))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))
  return model
