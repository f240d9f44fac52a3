"""A PyTorch SNUNet-CD (ECAM) written for parity tests, from the official architecture.

The official repository (likuan6/SNUNet-CD, `models/Models.py` class `SNUNet_ECAM`) had no
snapshot here; its structure was read from forks that carry the file unchanged. The module names
below are the official ones (conv{i}_{j}.{conv1,bn1,conv2,bn2}, Up{i}_{j}.up, ca/ca1.{fc1,fc2},
conv_final), so `state_dict()` stands in for an official checkpoint; the forward is our own.
`width` is the official hard-coded n1 (32). Imported only by tests, after
`pytest.importorskip("torch")`.
"""
import torch
from torch import nn


class NestedBlock(nn.Module):
  def __init__(self, cin: int, mid: int, out: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, mid, 3, padding=1)
    self.bn1 = nn.BatchNorm2d(mid)
    self.conv2 = nn.Conv2d(mid, out, 3, padding=1)
    self.bn2 = nn.BatchNorm2d(out)

  def forward(self, x):
    x = self.conv1(x)
    y = self.bn2(self.conv2(torch.relu(self.bn1(x))))
    return torch.relu(y + x)


class Up(nn.Module):
  def __init__(self, c: int):
    super().__init__()
    self.up = nn.ConvTranspose2d(c, c, 2, stride=2)

  def forward(self, x):
    return self.up(x)


class ChannelAttention(nn.Module):
  def __init__(self, c: int, ratio: int):
    super().__init__()
    self.fc1 = nn.Conv2d(c, c // ratio, 1, bias=False)
    self.fc2 = nn.Conv2d(c // ratio, c, 1, bias=False)

  def forward(self, x):
    mlp = lambda v: self.fc2(torch.relu(self.fc1(v)))  # noqa: E731
    return torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))


class SNUNetECAM(nn.Module):
  def __init__(self, in_ch: int = 3, out_ch: int = 2, width: int = 32):
    super().__init__()
    f = [width * 2 ** i for i in range(5)]
    self.pool = nn.MaxPool2d(2, 2)
    for i in range(5):
      self.add_module(f"conv{i}_0", NestedBlock(in_ch if i == 0 else f[i - 1], f[i], f[i]))
    for i in range(4):  # node X^{i,j} (j >= 1): j + 1 same-level maps and one upsampled map
      for j in range(1, 5 - i):
        self.add_module(f"conv{i}_{j}", NestedBlock(f[i] * (j + 1) + f[i + 1], f[i], f[i]))
        self.add_module(f"Up{i + 1}_{j - 1}", Up(f[i + 1]))
    self.ca = ChannelAttention(f[0] * 4, 16)
    self.ca1 = ChannelAttention(f[0], 4)
    self.conv_final = nn.Conv2d(f[0] * 4, out_ch, 1)

  def forward(self, xa, xb):
    m = dict(self.named_children())
    a, b = [m["conv0_0"](xa)], [m["conv0_0"](xb)]
    for i in range(1, 5):
      if i < 4:  # date A's level 4 is not computed in the official forward
        a.append(m[f"conv{i}_0"](self.pool(a[-1])))
      b.append(m[f"conv{i}_0"](self.pool(b[-1])))
    x = {(i, 0): None for i in range(5)}
    for d in range(1, 5):
      for i in reversed(range(d)):
        j = d - i
        below = b[i + 1] if j == 1 else x[(i + 1, j - 1)]
        same = [x[(i, k)] for k in range(1, j)]
        x[(i, j)] = m[f"conv{i}_{j}"](torch.cat([a[i], b[i], *same, m[f"Up{i + 1}_{j - 1}"](below)], 1))
    outs = [x[(0, j)] for j in range(1, 5)]
    out = torch.cat(outs, 1)
    intra = self.ca1(torch.stack(outs).sum(0))
    out = self.ca(out) * (out + intra.repeat(1, 4, 1, 1))
    return self.conv_final(out)
