"""A PyTorch VcT (`Reliable_Transformer`) written for parity tests, from the official architecture
(Event-AHU/VcT_Remote_Sensing_Change_Detection, `VcT_code/models/networks.py`, `help_funcs.py`,
`gcnlayers.py`, `kmeans.py`, `resnet.py`).

Module names are the official ones (resnet.* with torchvision's layer4 and fc, conv_pred,
classifier.{0,1,3}, pos_embedding, transformer / transformerCross / transformer_decoder
.layers.i.{0,1}.fn.{norm,fn.*}, gc1.{weight,bias}), so `state_dict()` and `parameters()` stand
in for the official module's; the forward is our own restatement of the official one: dense
adjacency from sparse edge lists (`knngraph`), `normalize_adj`, `GraphConvolution` (bias unused),
`topk(largest=False)`, the official k-means loop and scatter means, the transformers.

Departures, all forced: the official edge lists `indice0.txt`/`indice1.txt` are not published;
`edge_lists` builds lists of the same format from a full N x N distance sort (the 9 nearest grid
pixels, self included, ties by index; the reading of jaxcd/models/vct.py, computed another
way). The k-means initialisation tiles its rows over the actual batch, where the official code
hard-codes 8. torch_scatter's `scatter_mean` is restated with `index_add_`. Imported only by
tests, after `pytest.importorskip("torch")`.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
  """BIT_CD's BasicBlock: it ignores the dilation it is given (so none is ever applied)."""

  def __init__(self, cin: int, c: int, stride: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c)
    self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(c)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                       if stride != 1 or cin != c else None)

  def forward(self, x):
    out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
  """resnet18(replace_stride_with_dilation=[False, True, True]) of the official models/resnet.py:
  layer3 and layer4 at stride 1; fc and layer4 registered, layer4 unused by VcT."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
    self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
    self.layer3 = nn.Sequential(BasicBlock(128, 256, 1), BasicBlock(256, 256))
    self.layer4 = nn.Sequential(BasicBlock(256, 512, 1), BasicBlock(512, 512))
    self.fc = nn.Linear(512, 1000)


class Residual(nn.Module):
  def __init__(self, fn):
    super().__init__()
    self.fn = fn

  def forward(self, x, *m):
    return self.fn(x, *m) + x


class PreNorm(nn.Module):
  """PreNorm / PreNorm2 of help_funcs.py: one LayerNorm, applied to the memory too if given."""

  def __init__(self, dim, fn):
    super().__init__()
    self.norm = nn.LayerNorm(dim)
    self.fn = fn

  def forward(self, x, *m):
    return self.fn(self.norm(x), *(self.norm(t) for t in m))


class FeedForward(nn.Module):
  def __init__(self, dim, hidden):
    super().__init__()
    self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0),
                             nn.Linear(hidden, dim), nn.Dropout(0.0))

  def forward(self, x):
    return self.net(x)


def _heads(t, h):
  b, n, d = t.shape
  return t.reshape(b, n, h, d // h).transpose(1, 2)


def _attend(q, k, v, heads, scale):
  attn = (torch.einsum("bhid,bhjd->bhij", _heads(q, heads), _heads(k, heads)) * scale).softmax(-1)
  out = torch.einsum("bhij,bhjd->bhid", attn, _heads(v, heads))
  return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


class Attention(nn.Module):  # help_funcs.Attention: fused qkv, scale dim**-0.5
  def __init__(self, dim, heads, dim_head):
    super().__init__()
    self.heads, self.scale = heads, dim ** -0.5
    self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
    self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(0.0))

  def forward(self, x):
    q, k, v = self.to_qkv(x).chunk(3, dim=-1)
    return self.to_out(_attend(q, k, v, self.heads, self.scale))


class Cross_Attention(nn.Module):  # the decoder's: separate q, k, v projections
  def __init__(self, dim, heads, dim_head):
    super().__init__()
    self.heads, self.scale = heads, dim ** -0.5
    inner = heads * dim_head
    self.to_q = nn.Linear(dim, inner, bias=False)
    self.to_k = nn.Linear(dim, inner, bias=False)
    self.to_v = nn.Linear(dim, inner, bias=False)
    self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

  def forward(self, x, m):
    return self.to_out(_attend(self.to_q(x), self.to_k(m), self.to_v(m), self.heads, self.scale))


class Cross_Attention1(nn.Module):  # TransformerCross's: no parameters at all
  def __init__(self, dim, heads):
    super().__init__()
    self.heads, self.scale = heads, dim ** -0.5

  def forward(self, x, m):
    return _attend(x, m, m, self.heads, self.scale)


class Layers(nn.Module):
  """Transformer / TransformerCross / TransformerDecoder: `layers.i.{0,1}`."""

  def __init__(self, depth, attention, dim, mlp_dim):
    super().__init__()
    self.layers = nn.ModuleList([nn.ModuleList([Residual(PreNorm(dim, attention())),
                                                Residual(PreNorm(dim, FeedForward(dim, mlp_dim)))])
                                 for _ in range(depth)])

  def forward(self, x, *m):
    for attn, ff in self.layers:
      x = ff(attn(x, *m))
    return x


class GraphConvolution(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.weight = nn.Parameter(torch.empty(cin, cout).uniform_(-1, 1))
    self.bias = nn.Parameter(torch.empty(cout).uniform_(-1, 1))  # registered, never added

  def forward(self, x, adj):
    return torch.matmul(adj, torch.matmul(x, self.weight))


def edge_lists(b: int, h: int, w: int, k: int = 9):
  """(indice0, indice1) in the official format: indice0 = (global i, global j) over b*n nodes,
  indice1 = (global i, local j); each node's k nearest grid pixels, itself included."""
  n = h * w
  yx = np.stack(np.divmod(np.arange(n), w), 1)
  d2 = ((yx[:, None, :] - yx[None, :, :]) ** 2).sum(-1)
  nbr = np.argsort(d2, axis=1, kind="stable")[:, :k]  # ties: lower index first
  rows = np.repeat(np.arange(b * n), k)
  local = np.tile(nbr.reshape(-1), b)
  cols = local + np.repeat(np.arange(b) * n, n * k)
  return (torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(np.stack([rows, local])))


def scatter_mean(x, index, num):
  """torch_scatter.scatter_mean(x, index, dim=1, dim_size=num) for x (B, K, C), index (B, K)."""
  b, _, c = x.shape
  sums = x.new_zeros(b, num, c).scatter_add_(1, index[..., None].expand(-1, -1, c), x)
  counts = x.new_zeros(b, num).scatter_add_(1, index, torch.ones_like(index, dtype=x.dtype))
  return sums / counts.clamp(min=1)[..., None]


def kmeans(x, num_clusters, tol=1e-4):
  """kmeans.py's kmeans (euclidean) with its while-True loop; initial rows tiled over the
  actual batch (the official code tiles over 8)."""
  rows = np.tile(np.linspace(0, x.shape[1] - 1, num=num_clusters, dtype=int), x.shape[0])
  cols = np.arange(x.shape[0]).repeat(num_clusters)
  state = x[cols, rows, :].reshape(x.shape[0], num_clusters, -1)
  while True:
    dis = ((x.unsqueeze(2) - state.unsqueeze(1)) ** 2.0).sum(-1)
    choice = torch.argmin(dis, dim=2)
    prev = state.clone()
    state = scatter_mean(x, choice, num_clusters)
    shift = torch.sum(torch.sqrt(torch.sum((state - prev) ** 2, dim=2)), 1)
    if torch.all(~(shift ** 2).gt(tol)):
      return choice


class Reliable_Transformer(nn.Module):
  def __init__(self, output_nc: int = 2, k_nums: int = 1000, cluster: int = 10, enc_depth: int = 1,
               dec_depth: int = 8, dim_head: int = 64, decoder_dim_head: int = 64):
    super().__init__()
    dim, mlp = 32, 64
    self.k, self.cluster_nums = k_nums, cluster
    self.resnet = ResNet18()
    self.conv_pred = nn.Conv2d(256, dim, 3, padding=1)
    self.classifier = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, bias=False), nn.BatchNorm2d(dim),
                                    nn.ReLU(), nn.Conv2d(dim, output_nc, 3, 1, 1))
    self.pos_embedding = nn.Parameter(torch.randn(1, cluster * 2, dim))
    self.transformer = Layers(enc_depth, lambda: Attention(dim, 8, dim_head), dim, mlp)
    self.transformerCross = Layers(enc_depth, lambda: Cross_Attention1(dim, 8), dim, mlp)
    self.transformer_decoder = Layers(dec_depth, lambda: Cross_Attention(dim, 8, decoder_dim_head),
                                      dim, mlp)
    self.gc1 = GraphConvolution(dim, 1)

  def forward_single(self, x):
    r = self.resnet
    x = F.max_pool2d(torch.relu(r.bn1(r.conv1(x))), 3, 2, 1)
    x = r.layer3(r.layer2(r.layer1(x)))
    return self.conv_pred(F.interpolate(x, scale_factor=2, mode="nearest"))

  def knngraph(self, a):
    b, c, h, w = a.shape
    n = h * w
    indice0, indice1 = edge_lists(b, h, w)
    a = a.permute(0, 2, 3, 1).reshape(-1, c)
    vals = torch.bmm(a[indice0[0]].unsqueeze(1), a[indice0[1]].unsqueeze(2)).reshape(-1)
    return torch.sparse_coo_tensor(indice1, vals, (b * n, n), check_invariants=False).to_dense().reshape(b, n, n)

  def forward(self, x1, x2):
    x1, x2 = self.forward_single(x1), self.forward_single(x2)
    b, c, h, w = x1.shape
    x3 = torch.abs(x1 - x2)
    x4 = x3.reshape(b, c, -1).transpose(1, 2)
    A = self.knngraph(x3)
    D = torch.diag_embed(torch.pow(A.sum(2).float(), -0.5))
    score = self.gc1(x4, torch.bmm(D, torch.bmm(A, D))).transpose(1, 2)  # normalize_adj, b 1 n
    _, index = score.topk(k=self.k, dim=2, largest=False)
    tokens = []
    for x in (x1, x2):
      t = torch.gather(x.reshape(b, c, -1), 2, index.repeat(1, c, 1)).transpose(1, 2)
      tokens.append(scatter_mean(t, kmeans(t.detach(), self.cluster_nums), self.cluster_nums))
    t = self.transformer(torch.cat(tokens, 1) + self.pos_embedding)
    t1, t2 = t.chunk(2, dim=1)
    t1_, t2_ = self.transformerCross(t1, t2), self.transformerCross(t2, t1)
    dec = lambda x, m: self.transformer_decoder(x.flatten(2).transpose(1, 2), m).transpose(1, 2)  # noqa: E731
    y1, y2 = dec(x1, t1_).reshape(b, c, h, w), dec(x2, t2_).reshape(b, c, h, w)
    x = F.interpolate(torch.abs(y1 - y2), scale_factor=4, mode="bilinear", align_corners=False)
    return self.classifier(x)
