"""A PyTorch ChangeFormerV6 written for parity tests, from the official architecture
(wgcban/ChangeFormer, `models/ChangeFormer.py`: ChangeFormerV6, EncoderTransformer_v3,
DecoderTransformer_v3, OverlapPatchEmbed, Block, Attention, Mlp, DWConv, MLP, conv_diff,
make_prediction; `models/ChangeFormerBaseNetworks.py`: ConvLayer, UpsampleConvLayer,
ResidualBlock).

Module names are the official ones (Tenc_x2.{patch_embedN.{proj,norm}, blockN.i.{norm1,
attn.{q,kv,sr,norm,proj}, norm2, mlp.{fc1,dwconv.dwconv,fc2}}, normN}, TDec_x2.{linear_cN.proj,
diff_cN.{0,2,3}, make_pred_cN.{0,2,3}, linear_fuse.{0,1}, convd2x.conv2d, dense_2x.0.conv{1,2}.conv2d,
convd1x.conv2d, dense_1x.0..., change_probability.conv2d}), so `state_dict()` stands in for an
official checkpoint; the forward is our own. Dropout and DropPath are left out: the reference
runs in eval mode, where they are the identity. Imported only by tests, after
`pytest.importorskip("torch")`.
"""
import torch
import torch.nn.functional as F
from torch import nn


class OverlapPatchEmbed(nn.Module):
  def __init__(self, cin: int, c: int, kernel: int, stride: int):
    super().__init__()
    self.proj = nn.Conv2d(cin, c, kernel, stride, padding=kernel // 2)
    self.norm = nn.LayerNorm(c)  # eps 1e-5: the official builds it without norm_layer

  def forward(self, x):
    x = self.proj(x)
    h, w = x.shape[2:]
    return self.norm(x.flatten(2).transpose(1, 2)), h, w


class Attention(nn.Module):
  def __init__(self, dim: int, heads: int, sr: int):
    super().__init__()
    self.heads, self.sr_ratio = heads, sr
    self.q = nn.Linear(dim, dim)
    self.kv = nn.Linear(dim, 2 * dim)
    self.proj = nn.Linear(dim, dim)
    if sr > 1:
      self.sr = nn.Conv2d(dim, dim, sr, sr)
      self.norm = nn.LayerNorm(dim)

  def forward(self, x, h, w):
    b, n, c = x.shape
    e = c // self.heads
    q = self.q(x).reshape(b, n, self.heads, e).transpose(1, 2)
    m = x
    if self.sr_ratio > 1:
      m = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
      m = self.norm(m)
    k, v = self.kv(m).reshape(b, -1, 2, self.heads, e).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) * e ** -0.5, dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
  def __init__(self, dim: int):
    super().__init__()
    self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

  def forward(self, x, h, w):
    b, n, c = x.shape
    return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1, self.dwconv, self.fc2 = nn.Linear(dim, hidden), DWConv(hidden), nn.Linear(hidden, dim)

  def forward(self, x, h, w):
    return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
  def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int = 4):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = Attention(dim, heads, sr)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = Mlp(dim, mlp_ratio * dim)

  def forward(self, x, h, w):
    x = x + self.attn(self.norm1(x), h, w)
    return x + self.mlp(self.norm2(x), h, w)


class EncoderTransformer_v3(nn.Module):
  def __init__(self, in_chans, embed_dims, depths, num_heads, sr_ratios, patch_size=7):
    super().__init__()
    cin = in_chans
    for s in range(4):
      setattr(self, f"patch_embed{s + 1}",
              OverlapPatchEmbed(cin, embed_dims[s], 7 if s == 0 else patch_size, 4 if s == 0 else 2))
      setattr(self, f"block{s + 1}", nn.ModuleList(
          [Block(embed_dims[s], num_heads[s], sr_ratios[s]) for _ in range(depths[s])]))
      setattr(self, f"norm{s + 1}", nn.LayerNorm(embed_dims[s], eps=1e-6))
      cin = embed_dims[s]

  def forward(self, x):
    outs = []
    for s in range(1, 5):
      x, h, w = getattr(self, f"patch_embed{s}")(x)
      for blk in getattr(self, f"block{s}"):
        x = blk(x, h, w)
      x = getattr(self, f"norm{s}")(x)
      x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
      outs.append(x)
    return outs


class MLP(nn.Module):
  def __init__(self, cin: int, e: int):
    super().__init__()
    self.proj = nn.Linear(cin, e)

  def forward(self, x):
    return self.proj(x.flatten(2).transpose(1, 2))


def conv_diff(cin: int, c: int):
  return nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c),
                       nn.Conv2d(c, c, 3, padding=1), nn.ReLU())


def make_prediction(cin: int, c: int):
  return nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c),
                       nn.Conv2d(c, c, 3, padding=1))


class ConvLayer(nn.Module):
  def __init__(self, cin: int, c: int, k: int, stride: int, padding: int):
    super().__init__()
    self.conv2d = nn.Conv2d(cin, c, k, stride, padding)

  def forward(self, x):
    return self.conv2d(x)


class UpsampleConvLayer(nn.Module):
  def __init__(self, cin: int, c: int, k: int, stride: int):
    super().__init__()
    self.conv2d = nn.ConvTranspose2d(cin, c, k, stride=stride, padding=1)

  def forward(self, x):
    return self.conv2d(x)


class ResidualBlock(nn.Module):
  def __init__(self, c: int):
    super().__init__()
    self.conv1, self.conv2 = ConvLayer(c, c, 3, 1, 1), ConvLayer(c, c, 3, 1, 1)

  def forward(self, x):
    return x + 0.1 * self.conv2(torch.relu(self.conv1(x)))


class DecoderTransformer_v3(nn.Module):
  def __init__(self, in_channels, embedding_dim: int, output_nc: int):
    super().__init__()
    e = embedding_dim
    for s in range(1, 5):
      setattr(self, f"linear_c{s}", MLP(in_channels[s - 1], e))
      setattr(self, f"diff_c{s}", conv_diff(2 * e, e))
      setattr(self, f"make_pred_c{s}", make_prediction(e, output_nc))
    self.linear_fuse = nn.Sequential(nn.Conv2d(4 * e, e, 1), nn.BatchNorm2d(e))
    self.convd2x = UpsampleConvLayer(e, e, 4, 2)
    self.dense_2x = nn.Sequential(ResidualBlock(e))
    self.convd1x = UpsampleConvLayer(e, e, 4, 2)
    self.dense_1x = nn.Sequential(ResidualBlock(e))
    self.change_probability = ConvLayer(e, output_nc, 3, 1, 1)

  def forward(self, fa, fb):
    outputs, diffs, below = [], [], None
    size1 = fa[0].shape[2:]
    for s in (4, 3, 2, 1):
      lin = getattr(self, f"linear_c{s}")
      xa, xb = fa[s - 1], fb[s - 1]
      n, _, h, w = xa.shape
      pa = lin(xa).permute(0, 2, 1).reshape(n, -1, h, w)
      pb = lin(xb).permute(0, 2, 1).reshape(n, -1, h, w)
      d = getattr(self, f"diff_c{s}")(torch.cat((pa, pb), 1))
      if below is not None:
        d = d + F.interpolate(below, scale_factor=2, mode="bilinear")
      outputs.append(getattr(self, f"make_pred_c{s}")(d))
      diffs.append(d if s == 1 else F.interpolate(d, size=size1, mode="bilinear", align_corners=False))
      below = d
    x = self.linear_fuse(torch.cat(diffs, 1))
    x = self.dense_1x(self.convd1x(self.dense_2x(self.convd2x(x))))
    outputs.append(self.change_probability(x))
    return outputs


class ChangeFormerV6(nn.Module):
  """The official constructor (input_nc, output_nc, decoder_softmax, embed_dim); the keyword-only
  encoder sizes exist for the tests' small variant and default to the official values."""

  def __init__(self, input_nc: int = 3, output_nc: int = 2, decoder_softmax: bool = False,
               embed_dim: int = 256, *, embed_dims=(64, 128, 320, 512), depths=(3, 3, 4, 3),
               num_heads=(1, 2, 4, 8), sr_ratios=(8, 4, 2, 1)):
    super().__init__()
    assert not decoder_softmax  # the official default; the sigmoid option is not re-stated
    self.Tenc_x2 = EncoderTransformer_v3(input_nc, list(embed_dims), list(depths), list(num_heads),
                                         list(sr_ratios))
    self.TDec_x2 = DecoderTransformer_v3(list(embed_dims), embed_dim, output_nc)

  def forward(self, x1, x2):
    return self.TDec_x2(self.Tenc_x2(x1), self.Tenc_x2(x2))
