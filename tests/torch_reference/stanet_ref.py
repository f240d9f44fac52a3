"""A PyTorch STANet written for parity tests, from the official architecture (justchenhao/STANet,
`models/backbone.py` define_F/CDSA, `mynet3.py`, `PAM2.py`, `BAM.py`, `CDFA_model.py` forward).

Module names are the official ones, so the state dicts stand in for an official checkpoint's
two files: `netF` (F_mynet3: module.backbone.*, module.decoder.*) and `netA` (CDSA:
Self_Att.stages.i.{f_key,f_query}.{0,1}, .f_value, Self_Att.conv_bn.0 for PAM;
Self_Att.{query,key,value}_conv, gamma for BAM). The backbone and decoder are DSAMNet's
(tests/torch_reference/dsamnet_ref.py) at output stride 32. The forward is our own: PAM loops
over the official region bounds (the official stacks them into one batch, which needs sides
divisible by the scale; where it runs the two agree). Imported only by tests, after
`pytest.importorskip("torch")`.
"""
import torch
import torch.nn.functional as F
from torch import nn

from tests.torch_reference.dsamnet_ref import Backbone, Decoder


class MyNet3(nn.Module):
  def __init__(self, in_c: int = 3, f_c: int = 64):
    super().__init__()
    self.backbone = Backbone(in_c, stem_stride=2, layer4_stride=2, layer4_dilations=(1, 2, 4))
    self.decoder = Decoder(f_c)

  def forward(self, x):
    return self.decoder(self.backbone(x))


class F_mynet3(nn.Module):  # noqa: N801 (the official name; its attribute `module` names the keys)
  def __init__(self, in_c: int = 3, f_c: int = 64):
    super().__init__()
    self.module = MyNet3(in_c, f_c)

  def forward(self, x):
    return self.module(x)


def _bounds(n: int, s: int) -> list[tuple[int, int]]:
  step = n // s
  return [(i * step, n if i == s - 1 else (i + 1) * step) for i in range(s)]


class PAMBlock(nn.Module):
  def __init__(self, c: int, kc: int, vc: int, scale: int, ds: int = 1):
    super().__init__()
    self.scale, self.ds, self.kc, self.vc = scale, ds, kc, vc
    self.f_key = nn.Sequential(nn.Conv2d(c, kc, 1), nn.BatchNorm2d(kc))
    self.f_query = nn.Sequential(nn.Conv2d(c, kc, 1), nn.BatchNorm2d(kc))
    self.f_value = nn.Conv2d(c, vc, 1)

  def forward(self, x):
    if self.ds != 1:
      x = F.avg_pool2d(x, self.ds)
    b, _, h, w2 = x.shape
    w = w2 // 2
    q, k, v = self.f_query(x), self.f_key(x), self.f_value(x)
    out = torch.zeros(b, self.vc, h, w2, dtype=x.dtype)
    for h0, h1 in _bounds(h, self.scale):
      for w0, w1 in _bounds(w, self.scale):
        if h1 == h0 or w1 == w0:
          continue
        # The region at (h0:h1, w0:w1) of date A and of date B: one set of tokens.
        tok = lambda t: torch.cat([t[:, :, h0:h1, w0:w1],  # noqa: E731
                                   t[:, :, h0:h1, w + w0:w + w1]], 3)
        qt, kt, vt = (tok(t).flatten(2) for t in (q, k, v))  # B x C x N
        attn = torch.softmax(qt.transpose(1, 2) @ kt * self.kc ** -0.5, dim=-1)  # B x Nq x Nk
        ctx = (vt @ attn.transpose(1, 2)).view(b, self.vc, h1 - h0, 2 * (w1 - w0))
        out[:, :, h0:h1, w0:w1] = ctx[..., :w1 - w0]
        out[:, :, h0:h1, w + w0:w + w1] = ctx[..., w1 - w0:]
    if self.ds != 1:
      out = F.interpolate(out, [h * self.ds, w2 * self.ds])  # nearest
    return out


class PAM(nn.Module):
  def __init__(self, c: int = 64, sizes=(1, 2, 4, 8), ds: int = 1):
    super().__init__()
    self.stages = nn.ModuleList([PAMBlock(c, c // 8, c, s, ds) for s in sizes])
    self.conv_bn = nn.Sequential(nn.Conv2d(c * len(sizes), c, 1, bias=False))

  def forward(self, x):
    return self.conv_bn(torch.cat([stage(x) for stage in self.stages], 1))


class BAM(nn.Module):
  def __init__(self, c: int = 64, ds: int = 1):
    super().__init__()
    self.ds, self.kc = ds, c // 8
    self.query_conv = nn.Conv2d(c, c // 8, 1)
    self.key_conv = nn.Conv2d(c, c // 8, 1)
    self.value_conv = nn.Conv2d(c, c, 1)
    self.gamma = nn.Parameter(torch.zeros(1))  # official; unused by its forward

  def forward(self, inp):
    x = F.avg_pool2d(inp, self.ds) if self.ds != 1 else inp
    b, c, h, w = x.shape
    q = self.query_conv(x).flatten(2).transpose(1, 2)
    attn = torch.softmax(q @ self.key_conv(x).flatten(2) * self.kc ** -0.5, dim=-1)
    out = (self.value_conv(x).flatten(2) @ attn.transpose(1, 2)).view(b, c, h, w)
    return F.interpolate(out, [h * self.ds, w * self.ds]) + inp


class CDSA(nn.Module):
  def __init__(self, c: int = 64, ds: int = 1, mode: str = "PAM"):
    super().__init__()
    self.Self_Att = PAM(c, (1, 2, 4, 8), ds) if mode == "PAM" else BAM(c, ds)  # noqa: N815

  def forward(self, x1, x2):
    w = x1.shape[3]
    x = self.Self_Att(torch.cat([x1, x2], 3))
    return x[..., :w], x[..., w:]


class STANet(nn.Module):
  """CDFAModel's networks and forward: returns the full-resolution distance B x 1 x H x W."""

  def __init__(self, mode: str = "PAM", ds: int = 1, in_c: int = 3):
    super().__init__()
    self.netF, self.netA = F_mynet3(in_c, 64), CDSA(64, ds, mode)

  def forward(self, a, b):
    fa, fb = self.netA(self.netF(a), self.netF(b))
    # The official F.pairwise_distance(fa, fb, keepdim=True) on NCHW maps: the PyTorch of its
    # time reduced dim 1 (channels); today's reduces the last dim, so it is written out here.
    dist = torch.norm(fa - fb + 1e-6, p=2, dim=1, keepdim=True)
    return F.interpolate(dist, size=a.shape[2:], mode="bilinear", align_corners=True)

  def state_dicts(self) -> dict[str, torch.Tensor]:
    """The union of the official checkpoint's two files, `*_net_F.pth` and `*_net_A.pth`."""
    return {**self.netF.state_dict(), **self.netA.state_dict()}


def sharpen_attention(ref: STANet, qk_std: float = 2.0, fuse_std: float = 1.0) -> None:
  """Larger decoder-output scales and query/key/fusion weights (torch's global RNG), so that a
  parity test sees the attention: with torch's default initialisation the softmax is nearly
  uniform, PAM (no residual) gives both dates almost the same feature and the distance is mostly
  the 1e-6 eps."""
  att = ref.netA.Self_Att
  with torch.no_grad():
    # BAM adds its input back, so its distances need larger features to reach the threshold.
    lo = 2.0 if isinstance(att, PAM) else 4.0
    ref.netF.module.decoder.last_conv[5].weight.uniform_(lo, 2 * lo)
    if isinstance(att, PAM):
      for st in att.stages:
        st.f_query[0].weight.normal_(0, qk_std)
        st.f_key[0].weight.normal_(0, qk_std)
      att.conv_bn[0].weight.normal_(0, fuse_std)
    else:
      att.query_conv.weight.normal_(0, qk_std)
      att.key_conv.weight.normal_(0, qk_std)
