"""Variables of a model without running `model.init` (a minute for the larger rivals on a busy
2-core CPU): shapes from `jax.eval_shape`, values drawn here; and a torchvision-named ResNet-18
state dict of random arrays, for the ImageNet backbone imports."""
import jax
import jax.numpy as jnp
import numpy as np


def abstract_variables(model, hw=(64, 64), bands: int = 3):
  x = jax.ShapeDtypeStruct((1, *hw, bands), jnp.float32)
  return jax.eval_shape(lambda a, b: model.init(jax.random.key(0), a, b, train=False), x, x)


def random_variables(model, seed: int = 0, abstract=None):
  """N(0, 0.1) weights; BatchNorm variances and scales 1 (so eval mode stays well scaled).
  `abstract`: the model's `abstract_variables`, if the caller has them already."""
  rng = np.random.default_rng(seed)
  fill = lambda path, s: (np.ones(s.shape, np.float32) if path[-1].key in ("var", "scale")  # noqa: E731
                          else 0.1 * rng.standard_normal(s.shape).astype(np.float32))
  return jax.tree_util.tree_map_with_path(fill, abstract if abstract is not None else abstract_variables(model))


def torchvision_resnet18_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """Random arrays with torchvision resnet18's names and OIHW shapes (incl. layer4 and fc)."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(name, cin, cout, k):
    sd[name + ".weight"] = rng.standard_normal((cout, cin, k, k)).astype(np.float32) / (k * k * cin) ** 0.5

  def bn(name, c):
    sd[name + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[name + ".bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[name + ".running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[name + ".running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[name + ".num_batches_tracked"] = np.array(7, np.int64)

  conv("conv1", 3, 64, 7)
  bn("bn1", 64)
  cin = 64
  for s, w in enumerate((64, 128, 256, 512), start=1):
    for i in range(2):
      p = f"layer{s}.{i}"
      conv(p + ".conv1", cin if i == 0 else w, w, 3)
      bn(p + ".bn1", w)
      conv(p + ".conv2", w, w, 3)
      bn(p + ".bn2", w)
      if i == 0 and cin != w:
        conv(p + ".downsample.0", cin, w, 1)
        bn(p + ".downsample.1", w)
    cin = w
  sd["fc.weight"] = rng.standard_normal((1000, 512)).astype(np.float32)
  sd["fc.bias"] = np.zeros(1000, np.float32)
  return sd
