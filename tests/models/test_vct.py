"""VcT (official Reliable_Transformer): parameter count against the official architecture (a torch
re-statement with the official module names) and Dsfer-Net's Table II; the kNN graph, graph
scores and k-means against plain numpy; shapes; numerical parity with the torch reference
after converting its random parameters, with the plain cross-entropy the official trainer uses;
a jitted training step; ImageNet ResNet-18 import and the official checkpoint wrapping.

The official graph edge lists (indice0.txt / indice1.txt) are not published: the graph tested
here, in the model and in the reference, is our reading of them (jaxcd/models/vct.py docstring:
the 9 nearest grid pixels, self included). The parity test therefore checks the code against
the official forward given that graph, not the graph itself."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcd import losses, weights
from jaxcd.errors import DataError
from jaxcd.models import get_model
from jaxcd.models.layers import count_params
from jaxcd.models.vct import cluster_means, graph_scores, grid_knn, kmeans_assign

from .variables import abstract_variables, random_variables

TORCH_REASON = "torch not installed (pip install 'jaxcd[torch]'); parity needs the PyTorch reference"
OURS = 3_500_386  # the parameters the official forward uses
# Registered by the official module, unused by its forward: torchvision's layer4 (8,393,728) and
# fc (513,000) (the trunk stops after layer3, as BiT's) and the GCN bias (1, never added).
UNUSED = 8_393_728 + 513_000 + 1
OFFICIAL = 12_407_115  # sum of the official module's parameters(): Dsfer-Net Table II, 12.41 M


@pytest.fixture(scope="module")
def abstract():
  """The variables' shapes (top_k and the input size do not change them): traced once."""
  return abstract_variables(get_model("vct"))


def reference(k_nums: int = 100):
  """The torch reference (seed 0, random weights and BatchNorm statistics, eval mode). The
  default top_k is 100 of the 16x16 = 256 feature pixels of a 64x64 input (official: 1000 of the
  64x64 of a 256x256 input); top_k changes no weight."""
  import torch
  from tests.torch_reference import randomize_batch_norm
  from tests.torch_reference.vct_ref import Reliable_Transformer
  torch.manual_seed(0)
  net = Reliable_Transformer(k_nums=k_nums)
  randomize_batch_norm(net)
  return net.eval()


@pytest.fixture(scope="module")
def ref():
  """`reference()`, built once."""
  pytest.importorskip("torch", reason=TORCH_REASON)
  return reference()


def test_param_count_matches_the_official_code_and_paper(abstract):
  v = abstract
  assert count_params(v["params"]["backbone"]) == 2_782_784  # ResNet-18 to layer3 (test_bit)
  assert count_params(v["params"]) == OURS
  assert OURS + UNUSED == OFFICIAL
  assert round(OFFICIAL / 1e6, 2) == 12.41  # Dsfer-Net Table II (it counts the unused ones)


def test_param_count_matches_the_torch_reference(ref):
  assert sum(p.numel() for p in ref.parameters()) == OFFICIAL
  unused = [p.numel() for n, p in ref.named_parameters() if n.startswith(("resnet.layer4.", "resnet.fc."))]
  assert sum(unused) + ref.gc1.bias.numel() == UNUSED


def test_grid_knn_is_the_nearest_pixels_by_brute_force():
  h, w, k = 5, 7, 9
  nbr = grid_knn(h, w, k)
  yx = np.stack(np.divmod(np.arange(h * w), w), 1)
  d2 = ((yx[:, None] - yx[None]) ** 2).sum(-1)
  for i in range(h * w):
    want = sorted(range(h * w), key=lambda j: (d2[i, j], j))[:k]
    assert list(nbr[i]) == want
  centre = 2 * w + 3  # an interior pixel: its 3x3 window, itself first
  assert nbr[centre][0] == centre
  assert set(nbr[centre]) == {centre + dy * w + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
  with pytest.raises(ValueError, match="graph_k"):
    grid_knn(2, 2, 5)


def test_graph_scores_match_the_dense_official_formula():
  rng = np.random.default_rng(0)
  h, w, c = 4, 5, 3
  d = np.abs(rng.standard_normal((2, h * w, c))).astype(np.float32)
  s = rng.standard_normal((2, h * w)).astype(np.float32)
  nbr = grid_knn(h, w, 9)
  adj = np.zeros((2, h * w, h * w), np.float32)
  for i in range(h * w):
    for j in nbr[i]:
      adj[:, i, j] = np.einsum("bc,bc->b", d[:, i], d[:, j])
  inv = adj.sum(2) ** -0.5  # normalize_adj: D^-1/2 A D^-1/2 with row sums
  want = np.einsum("bi,bij,bj,bj->bi", inv, adj, inv, s)
  np.testing.assert_allclose(graph_scores(jnp.asarray(d), jnp.asarray(s), nbr), want, rtol=1e-5)
  d[0, 3] = 0  # a pixel without change: zero degree scores 0 (the official code gives NaN)
  d[0, nbr[3]] = 0
  assert np.isfinite(np.asarray(graph_scores(jnp.asarray(d), jnp.asarray(s), nbr))).all()


def test_kmeans_matches_a_plain_lloyd_loop():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((3, 40, 4)).astype(np.float32)
  x[1] += 3 * (np.arange(40) % 3)[:, None]  # well-separated groups in one sample
  m = 5

  def lloyd(x):  # kmeans.py: evenly spaced initial rows, shift^2 <= tol for every sample
    c = x[:, np.linspace(0, x.shape[1] - 1, m).astype(int)]
    while True:
      ids = np.argmin(((x[:, :, None] - c[:, None]) ** 2).sum(-1), -1)
      new = np.stack([np.stack([x[b, ids[b] == j].mean(0) if (ids[b] == j).any() else np.zeros(4)
                                for j in range(m)]) for b in range(x.shape[0])])
      shift = np.sqrt(((new - c) ** 2).sum(-1)).sum(-1)
      c = new
      if (shift ** 2 <= 1e-4).all():
        return ids
  ids = np.asarray(jax.jit(kmeans_assign, static_argnums=(1, 2, 3))(jnp.asarray(x), m, 1e-4, 100))
  np.testing.assert_array_equal(ids, lloyd(x))
  means = np.asarray(cluster_means(jnp.asarray(x), jnp.asarray(ids), m))
  for b in range(3):
    for j in range(m):
      want = x[b, ids[b] == j].mean(0) if (ids[b] == j).any() else np.zeros(4)
      np.testing.assert_allclose(means[b, j], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hw,dtype", [((64, 64), jnp.float32), ((48, 80), jnp.bfloat16)])
def test_output_shapes(hw, dtype):
  model = get_model("vct", top_k=64, dtype=dtype)
  x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  out = jax.eval_shape(lambda a, b: model.init_with_output(jax.random.key(0), a, b)[0], x, x)
  assert out["logits"].shape == (2, *hw, 2) and out["logits"].dtype == jnp.float32
  with pytest.raises(ValueError, match="multiple of 8"):
    jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), jax.ShapeDtypeStruct((1, 44, 64, 3), jnp.float32))


# Max |jaxcd - torch| over the largest |torch|: float32 rounding.
PARITY_TOLERANCE = 1e-4


def parity_run(ref=None, abstract=None, batch: int = 2, hw: tuple[int, int] = (64, 64), rng=None):
  """`ref` (`reference()` if None) and jaxcd's model with its converted weights on the same
  random pair, drawn from `rng` (default_rng(0) if None)."""
  import torch
  from tests.torch_reference import ParityRun, random_pair
  ref = reference() if ref is None else ref
  model = get_model("vct", top_k=ref.k)
  abstract = abstract_variables(model, hw) if abstract is None else abstract
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  variables = weights.vct_from_official(sd, abstract)
  a, b = random_pair(batch, hw, rng)
  with torch.no_grad():
    want = ref(torch.from_numpy(a), torch.from_numpy(b))
  apply = jax.jit(model.apply)  # jittable end to end: no host callbacks in top-k or k-means
  got = apply(variables, a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1))
  return ParityRun(ref, {k: np.asarray(v) for k, v in got.items()},
                   {"logits": want.numpy().transpose(0, 2, 3, 1)}, (a, b), sd, variables, apply)


def test_parity_with_the_torch_reference_and_its_cross_entropy(ref, abstract):
  import torch
  import torch.nn.functional as F
  rng = np.random.default_rng(0)
  run = parity_run(ref, abstract, rng=rng)
  got, want_nhwc = run.got["logits"], run.want["logits"]
  np.testing.assert_allclose(got, want_nhwc, atol=PARITY_TOLERANCE * np.abs(want_nhwc).max(), rtol=0)
  # The official trainer's loss: plain CE with ignore_index 255 (jaxcd's "ce").
  y = (rng.uniform(size=(2, 64, 64)) > 0.8).astype(np.int64)
  y[0, :4] = 255
  loss_fn = losses.from_config(ml_collections.ConfigDict({"name": "ce", "class_weights": (),
                                                           "ignore_label": 255}))
  want = torch.from_numpy(np.ascontiguousarray(want_nhwc.transpose(0, 3, 1, 2)))  # the torch output
  ce = F.cross_entropy(want, torch.from_numpy(y), ignore_index=255).item()
  np.testing.assert_allclose(loss_fn({"logits": got}, y)[0], ce, rtol=1e-5)
  # Identical dates: no change anywhere, zero graph degrees; still finite (same compiled program).
  a = run.inputs[0].transpose(0, 2, 3, 1)
  same = np.asarray(run.apply(run.variables, a, a)["logits"])
  assert np.isfinite(same).all()


@pytest.mark.slow  # 20-40 s: compiling the backward pass on 2 cores; parity covers the forward
def test_train_step_gradients_and_batch_stats():
  model = get_model("vct", top_k=64)
  v = random_variables(model)
  a = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  labels = (jax.random.uniform(jax.random.key(3), (2, 64, 64)) > 0.8).astype(jnp.int32)
  loss_fn = losses.from_config(ml_collections.ConfigDict({"name": "ce", "class_weights": (),
                                                           "ignore_label": 255}))

  def f(params):
    out, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, a, a[::-1],
                           train=True, mutable=["batch_stats"])
    return loss_fn(out, labels)[0], upd
  (loss, upd), g = jax.jit(jax.value_and_grad(f, has_aux=True))(v["params"])
  assert np.isfinite(loss)
  assert set(upd["batch_stats"]) == set(v["batch_stats"])
  norm = lambda t: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(t)))  # noqa: E731
  # Tokens are cluster means of gathered features: gradients reach the encoder, the token
  # cross-attention and the position embedding; the GCN only ranks pixels, so gc1 gets none.
  for name in ("backbone", "conv_pred", "encoder_0", "cross_0", "decoder_7", "pos_embedding"):
    assert norm(g[name]) > 0, name
  assert norm(g["gc1"]) == 0


def test_init_backbone_loads_torchvision_resnet18_into_vct(tmp_path, abstract):
  from .test_bit import _bit_config
  from .variables import torchvision_resnet18_state_dict
  sd = torchvision_resnet18_state_dict()
  path = tmp_path / "resnet18-test.npz"
  np.savez(path, **sd)
  v = jax.tree_util.tree_map(lambda s: np.full(s.shape, 0.5, np.float32), abstract)
  params, stats = weights.init_backbone_variables(_bit_config(str(path), name="vct"), v["params"],
                                                  v["batch_stats"])
  bb = params["backbone"]
  np.testing.assert_array_equal(bb["conv1"]["kernel"], sd["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(stats["backbone"]["layer3_1"]["bn2"]["mean"], sd["layer3.1.bn2.running_mean"])
  assert "layer4_0" not in bb
  np.testing.assert_array_equal(params["gc1"]["kernel"], v["params"]["gc1"]["kernel"])


def test_official_checkpoint_wrapping_and_strict_keys(tmp_path, ref, abstract):
  import torch
  sd = ref.state_dict()
  path = tmp_path / "best_ckpt.pt"
  # The official trainer's _save_checkpoint layout (optimizer state left out here).
  torch.save({"epoch_id": 3, "best_val_acc": 0.5, "model_G_state_dict": sd}, path)
  loaded = weights.load_state_dict(path)
  expected = abstract
  v = weights.vct_from_official(loaded, expected)
  np.testing.assert_array_equal(v["params"]["decoder_3"]["attn"]["to_k"]["kernel"],
                                sd["transformer_decoder.layers.3.0.fn.fn.to_k.weight"].numpy().T)
  np.testing.assert_array_equal(v["params"]["gc1"]["kernel"], sd["gc1.weight"].numpy())
  with pytest.raises(DataError, match="unexpected key 'transformer.extra'"):
    weights.vct_from_official({**loaded, "transformer.extra": np.zeros(1)}, expected)
  del loaded["pos_embedding"]
  with pytest.raises(DataError, match="missing key 'pos_embedding'"):
    weights.vct_from_official(loaded, expected)
