"""Weight import from PyTorch checkpoints: the official Dsfer-Net and SemiCD/RCL networks,
torchvision's VGG16 and ResNet, the deep-stem ResNet-50 of CCT/SemiCD.

  python -m jaxcd.convert dsfernet --torch CKPT --workdir W [--config configs/dsfernet_levir.py]

writes the converted official model as the `best` checkpoint of W, which `jaxcd.evaluate` and
`jaxcd.predict` load with the same --config. `init_backbone_variables` loads ImageNet weights
(`config.init.backbone`) into a model's encoder before training.

State dicts are plain `{name: np.ndarray}` maps (see `load_state_dict`), so only reading `.pth`
needs torch. Conversion is strict: an unknown, missing or mis-shaped entry raises `DataError`
naming it. Layouts: conv OIHW -> HWIO, Linear (out, in) -> (in, out), LayerNorm (C, H, W) ->
(H, W, C), BatchNorm running statistics -> the `batch_stats` collection.
"""
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.errors import ConfigError, DataError, one_line
from jaxcd.models.vgg import CONV_NAMES, TORCHVISION_CONV_INDICES, VGG16_WIDTHS

Variables = dict[str, Any]
_Rule = tuple[str, tuple[str, ...], Callable[[np.ndarray], np.ndarray]]  # collection, path, transform

_same = lambda w: w
_conv = lambda w: np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO
_linear = lambda w: np.transpose(w)  # (out, in) -> (in, out)
_chw = lambda w: np.transpose(w, (1, 2, 0))  # (C, H, W) -> (H, W, C)

# The official decoder's SingleConv3 blocks and 1x1 heads.
_DSFERNET_DECODER = ("dec5", "dec51", "dec4", "dec41", "dec3", "dec31", "dec2", "dec21",
                     "dec1", "dec11")
_DSFERNET_HEADS = ("out4", "out5", "outc")


def _vgg_rules(prefix: str, target: tuple[str, ...]) -> dict[str, _Rule]:
  rules = {}
  for idx, name in zip(TORCHVISION_CONV_INDICES, CONV_NAMES):
    rules[f"{prefix}{idx}.weight"] = ("params", target + (name, "kernel"), _conv)
    rules[f"{prefix}{idx}.bias"] = ("params", target + (name, "bias"), _same)
  return rules


def _dsfernet_rules() -> dict[str, _Rule]:
  rules = _vgg_rules("base.feats.", ("base",))
  for level in ("hopf4", "hopf5"):
    for x in "qkv":
      rules[f"{level}.linear_{x}.linear_qkv.weight"] = ("params", (level, f"W{x}"), _linear)
  for ln in ("layernorm1", "layernorm2"):
    rules[f"{ln}.weight"] = ("params", (ln, "scale"), _chw)
    rules[f"{ln}.bias"] = ("params", (ln, "bias"), _chw)
  for dec in _DSFERNET_DECODER:
    p = f"{dec}.single_conv."
    rules[p + "0.weight"] = ("params", (dec, "conv", "kernel"), _conv)
    rules[p + "0.bias"] = ("params", (dec, "conv", "bias"), _same)
    rules[p + "1.weight"] = ("params", (dec, "bn", "scale"), _same)
    rules[p + "1.bias"] = ("params", (dec, "bn", "bias"), _same)
    rules[p + "1.running_mean"] = ("batch_stats", (dec, "bn", "mean"), _same)
    rules[p + "1.running_var"] = ("batch_stats", (dec, "bn", "var"), _same)
  for head in _DSFERNET_HEADS:
    rules[f"{head}.conv.weight"] = ("params", (head, "kernel"), _conv)
    rules[f"{head}.conv.bias"] = ("params", (head, "bias"), _same)
  return rules


def _is_dropped(key: str) -> bool:
  return key.endswith("num_batches_tracked")  # a training counter; Flax BatchNorm has none


def _apply_rules(state_dict: Mapping[str, Any], rules: Mapping[str, _Rule], expected: Variables,
                 source: str, what: str, ignore: Callable[[str], bool]) -> Variables:
  unknown = sorted(k for k in state_dict if k not in rules and not ignore(k))
  if unknown:
    more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
    raise DataError(f"{source}: unexpected key {unknown[0]!r}{more} for {what}")
  missing = [k for k in rules if k not in state_dict]
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise DataError(f"{source}: missing key {missing[0]!r}{more} for {what}")
  out: Variables = {}
  for key, (collection, path, transform) in rules.items():
    value = transform(np.asarray(state_dict[key], np.float32))
    want = expected[collection]
    for p in path:
      want = want[p]
    if tuple(value.shape) != tuple(want.shape):
      raise DataError(f"{source}: {key!r} has shape {tuple(np.shape(state_dict[key]))}, which does "
                      f"not fit {what} ({'/'.join((collection,) + path)} wants {tuple(want.shape)})")
    node = out.setdefault(collection, {})
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  return out


def dsfernet_from_torch(state_dict: Mapping[str, Any], *, source: str = "state_dict") -> Variables:
  """Official `MyNet.state_dict()` (as numpy) -> {'params', 'batch_stats'} for `DsferNet`.

  The input size and class count are read from the LayerNorm and classifier shapes; build the
  model as `DsferNet(num_classes=K, input_size=S)` (S = 256 for the official weights).
  """
  from jaxcd.models.dsfernet import DsferNet  # keeps `import jaxcd.convert` light
  what = "the official Dsfer-Net MyNet"
  ln, head = "layernorm1.weight", "outc.conv.weight"
  for key in (ln, head):
    if key not in state_dict:
      raise DataError(f"{source}: missing key {key!r} for {what}")
  ln_shape, head_shape = np.shape(state_dict[ln]), np.shape(state_dict[head])
  if len(ln_shape) != 3 or ln_shape[1] != ln_shape[2] or len(head_shape) != 4:
    raise DataError(f"{source}: {ln!r} {ln_shape} / {head!r} {head_shape} are not MyNet's shapes")
  size = 16 * ln_shape[1]
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  model = DsferNet(num_classes=head_shape[0], input_size=size)
  expected = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)
  return _apply_rules(state_dict, _dsfernet_rules(), expected, source, what, _is_dropped)


def vgg16_from_torchvision(state_dict: Mapping[str, Any], *, source: str = "state_dict") -> dict[str, Any]:
  """torchvision `vgg16` state dict (`features.0.weight`, ...) -> `VGG16Features` params.

  The classifier is not part of the encoder and is skipped; anything else unknown is an error
  (e.g. a `vgg16_bn` checkpoint, whose conv indices differ).
  """
  expected: dict[str, Any] = {}
  c_in = 3
  for name, width in zip(CONV_NAMES, (w for ws in VGG16_WIDTHS for w in ws)):
    expected[name] = {"kernel": jax.ShapeDtypeStruct((3, 3, c_in, width), jnp.float32),
                      "bias": jax.ShapeDtypeStruct((width,), jnp.float32)}
    c_in = width
  ignore = lambda k: k.startswith("classifier.")
  out = _apply_rules(state_dict, _vgg_rules("features.", ()), {"params": expected}, source,
                     "torchvision's VGG16", ignore)
  return out["params"]


def _to_numpy(key: str, value: Any, path: Path) -> np.ndarray:
  import torch
  if not isinstance(value, torch.Tensor):
    raise DataError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
  value = value.detach().cpu()
  if value.is_floating_point():
    value = value.float()  # numpy has no bfloat16
  return value.numpy()


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
  """Reads a state dict from `.pth`/`.pt` (needs torch), `.safetensors` or `.npz` as numpy arrays."""
  path = Path(path)
  if not path.is_file():
    raise DataError(f"{path}: checkpoint file not found")
  suffix = path.suffix.lower()
  if suffix in (".pth", ".pt"):
    try:
      import torch
    except ImportError:
      raise DataError(f"{path}: reading a .pth checkpoint needs PyTorch: "
                      "pip install 'jaxcd[torch]'") from None
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or foreign files
      raise DataError(f"{path}: not a readable PyTorch checkpoint: {one_line(e)[:300]}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
      obj = obj["state_dict"]  # common {'state_dict': ..., 'epoch': ...} wrapping
    if not isinstance(obj, Mapping):
      raise DataError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {k: _to_numpy(k, v, path) for k, v in obj.items()}
  if suffix == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise DataError(f"{path}: reading .safetensors needs safetensors: "
                      "pip install 'jaxcd[torch]'") from None
    try:
      return dict(load_file(str(path)))
    except Exception as e:
      raise DataError(f"{path}: not a readable safetensors file: {one_line(e)[:300]}") from None
  if suffix == ".npz":
    try:
      with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
    except Exception as e:
      raise DataError(f"{path}: not a readable .npz file: {one_line(e)[:300]}") from None
  raise DataError(f"{path}: unknown checkpoint format {suffix!r}; use .pth, .safetensors or .npz")


# ---------------------------------------------------------------------------------------------
# torchvision ResNet -> jaxcd.models.resnet.ResNet


def _resnet_rules(expected_params: Mapping[str, Any], prefix: str = "") -> dict[str, _Rule]:
  """Rules for every module present in a `ResNet` params tree (torchvision names)."""
  def bn(torch_name: str, path: tuple[str, ...]) -> dict[str, _Rule]:
    return {f"{prefix}{torch_name}.weight": ("params", path + ("scale",), _same),
            f"{prefix}{torch_name}.bias": ("params", path + ("bias",), _same),
            f"{prefix}{torch_name}.running_mean": ("batch_stats", path + ("mean",), _same),
            f"{prefix}{torch_name}.running_var": ("batch_stats", path + ("var",), _same)}

  rules: dict[str, _Rule] = {}
  for name, sub in expected_params.items():
    if name.startswith("conv"):  # stem conv1 (conv2, conv3 with a deep stem)
      rules[f"{prefix}{name}.weight"] = ("params", (name, "kernel"), _conv)
    elif name.startswith("bn"):
      rules.update(bn(name, (name,)))
    elif name.startswith("layer"):
      torch_block = name.replace("_", ".")  # layer2_0 -> layer2.0
      for child in sub:
        if child == "downsample_conv":
          rules[f"{prefix}{torch_block}.downsample.0.weight"] = ("params", (name, child, "kernel"), _conv)
        elif child == "downsample_bn":
          rules.update(bn(f"{torch_block}.downsample.1", (name, child)))
        elif child.startswith("conv"):
          rules[f"{prefix}{torch_block}.{child}.weight"] = ("params", (name, child, "kernel"), _conv)
        else:
          rules.update(bn(f"{torch_block}.{child}", (name, child)))
  return rules


def resnet_from_torchvision(state_dict: Mapping[str, Any], expected: Variables, *,
                            source: str = "state_dict") -> Variables:
  """torchvision `resnet*` state dict -> {'params', 'batch_stats'} of a `ResNet` whose variables
  (arrays or ShapeDtypeStructs) are `expected`. Stages beyond the model's (a truncated trunk)
  and the classifier `fc` are skipped; anything else unknown is an error."""
  num_stages = sum(1 for k in expected["params"] if k.startswith("layer") and k.endswith("_0"))
  unused = tuple(f"layer{s}." for s in range(num_stages + 1, 5)) + ("fc.",)
  ignore = lambda k: _is_dropped(k) or k.startswith(unused)
  return _apply_rules(state_dict, _resnet_rules(expected["params"]), expected, source,
                      "torchvision's ResNet", ignore)


# ---------------------------------------------------------------------------------------------
# ImageNet backbones for training (config.init.backbone)


def _shape_tree(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.float32), tree)


def _check_fits(new: Any, old: Any, source: str, what: str) -> None:
  new_leaves = jax.tree_util.tree_leaves_with_path(new)
  old_leaves = dict(jax.tree_util.tree_leaves_with_path(old))
  for path, x in new_leaves:
    want = old_leaves.get(path)
    if want is None or np.shape(want) != np.shape(x):
      name = jax.tree_util.keystr(path)
      got = "nothing" if want is None else str(tuple(np.shape(want)))
      raise DataError(f"{source}: {what} {name} has shape {tuple(np.shape(x))} but the model has "
                      f"{got} (check config.data.num_bands and config.model)")


def init_backbone_variables(config, params: Any, batch_stats: Any = None) -> tuple[Any, Any]:
  """(params, batch_stats) with the encoder replaced by the weights in `config.init.backbone`.

  dsfernet: torchvision `vgg16` into params['base'] (VGG16 has no BatchNorm);
  bit: torchvision `resnet18` (layer1-3; layer4 and fc skipped) into params['backbone'], and its
  ImageNet running statistics into batch_stats['backbone'] when `batch_stats` is given;
  rcr: a ResNet-50 the same way, the deep-stem `3x3resnet50-imagenet.pth` of CCT/SemiCD for
  config.model.stem='deep', torchvision `resnet50` for 'standard' (`rcr_backbone_from_imagenet`).
  Trees are numpy (host) pytrees; the inputs are not modified.
  """
  path = config.init.backbone
  name = config.model.name
  if name not in ("dsfernet", "bit", "rcr"):
    raise ConfigError(f"config.init.backbone: no ImageNet backbone import for model {name!r} "
                      "(supported: dsfernet <- vgg16, bit <- resnet18, rcr <- resnet50)")
  state_dict = load_state_dict(path)
  params = dict(params)
  if name == "dsfernet":
    base = vgg16_from_torchvision(state_dict, source=str(path))
    _check_fits(base, params["base"], str(path), "torchvision VGG16")
    params["base"] = base
    return params, batch_stats
  expected = {"params": _shape_tree(params["backbone"]),
              "batch_stats": _shape_tree((batch_stats or {}).get("backbone", {}))}
  if not batch_stats:  # running statistics not wanted: shapes from the matching BN scales
    expected["batch_stats"] = _bn_stats_like(expected["params"])
  if name == "rcr":
    new = rcr_backbone_from_imagenet(state_dict, expected, stem=config.model.get("stem", "deep"),
                                     source=str(path))
  else:
    new = resnet_from_torchvision(state_dict, expected, source=str(path))
  params["backbone"] = new["params"]
  if batch_stats:
    batch_stats = dict(batch_stats)
    batch_stats["backbone"] = new["batch_stats"]
  return params, batch_stats


def _bn_stats_like(resnet_params: Mapping[str, Any]) -> dict[str, Any]:
  def walk(node):
    out = {}
    for k, v in node.items():
      if isinstance(v, Mapping) and "scale" in v:
        out[k] = {"mean": v["scale"], "var": v["scale"]}
      elif isinstance(v, Mapping):
        sub = walk(v)
        if sub:
          out[k] = sub
    return out
  return walk(resnet_params)


# ---------------------------------------------------------------------------------------------
# The RCR / RCL network (jaxcd.models.rcr): ImageNet ResNet-50 encoders, official checkpoints


def _stem_kind(state_dict: Mapping[str, Any]) -> str | None:
  if "conv2.weight" in state_dict:
    return "deep"
  return "standard" if "conv1.weight" in state_dict else None


def rcr_backbone_from_imagenet(state_dict: Mapping[str, Any], expected: Variables, *,
                               stem: str = "deep", source: str = "state_dict") -> Variables:
  """ImageNet ResNet-50 -> {'params', 'batch_stats'} of `RCRNet`'s backbone, whose variables
  (arrays or ShapeDtypeStructs) are `expected`.

  stem='deep': the CSAIL / CCT `3x3resnet50-imagenet.pth` that SemiCD and RCL load: `conv1.weight`
  (64, 3, 3, 3), `bn1.*`, `conv2.*`, `bn2.*`, `conv3.weight` (128, 64, 3, 3), `bn3.*`, then
  torchvision's `layerN.i.*` and `fc.*`; torchcv's `prefix.conv1.weight` spelling is accepted.
  stem='standard': torchvision `resnet50` (`conv1.weight` (64, 3, 7, 7), `bn1.*`, ...).
  `fc` is skipped; a checkpoint of the other stem is an error naming the config.model.stem it needs.
  """
  sd = {k.removeprefix("prefix."): v for k, v in state_dict.items()}
  found = _stem_kind(sd)
  if found is not None and found != stem:
    kind = ("deep-stem (3x3 conv1-conv3)" if found == "deep" else "standard-stem (7x7 conv1, "
            "no conv2.weight)")
    raise DataError(f"{source}: a {kind} ResNet checkpoint, but config.model.stem={stem!r}; "
                    f"set config.model.stem={found!r}")
  what = (f"the rcr encoder (stem={stem!r}; ImageNet weights need config.model.width=64 and "
          "3 bands)")
  ignore = lambda k: _is_dropped(k) or k.startswith("fc.")
  return _apply_rules(sd, _resnet_rules(expected["params"]), expected, source, what, ignore)


def _rcr_official_rules(expected_params: Mapping[str, Any]) -> dict[str, _Rule]:
  def bn(torch_name: str, path: tuple[str, ...]) -> dict[str, _Rule]:
    return {f"{torch_name}.weight": ("params", path + ("scale",), _same),
            f"{torch_name}.bias": ("params", path + ("bias",), _same),
            f"{torch_name}.running_mean": ("batch_stats", path + ("mean",), _same),
            f"{torch_name}.running_var": ("batch_stats", path + ("var",), _same)}

  rules: dict[str, _Rule] = {}
  # SemiCD's encoder.base = Sequential(Sequential(prefix, maxpool), layer1, ..., layer4).
  for key, (coll, path, fn) in _resnet_rules(expected_params["backbone"]).items():
    if key.startswith("layer"):
      key = f"encoder.base.{key[len('layer')]}.{key[len('layerN.'):]}"
    else:
      key = f"encoder.base.0.0.{key}"
    rules[key] = (coll, ("backbone",) + path, fn)
  psp = expected_params["psp"]
  for i in range(sum(1 for k in psp if k.startswith("stage") and k.endswith("_conv"))):
    rules[f"encoder.psp.stages.{i}.1.weight"] = ("params", ("psp", f"stage{i}_conv", "kernel"), _conv)
    rules.update(bn(f"encoder.psp.stages.{i}.2", ("psp", f"stage{i}_bn")))
  rules["encoder.psp.bottleneck.0.weight"] = ("params", ("psp", "bottleneck_conv", "kernel"), _conv)
  rules.update(bn("encoder.psp.bottleneck.1", ("psp", "bottleneck_bn")))
  rules["main_decoder.upsample.0.weight"] = ("params", ("decoder", "conv1", "kernel"), _conv)
  rules["main_decoder.upsample.3.weight"] = ("params", ("decoder", "conv2", "kernel"), _conv)
  return rules


def rcr_from_official(state_dict: Mapping[str, Any], expected: Variables, *,
                      source: str = "state_dict") -> Variables:
  """Official SemiCD (RCR) / RC-Change-Detection (RCL) model state dict (`encoder.base.*`,
  `encoder.psp.*`, `main_decoder.upsample.*`) -> {'params', 'batch_stats'} of the `RCRNet` whose
  variables are `expected`. A DataParallel `module.` prefix is removed; RCR's `aux_decoders.*`
  (training-only) are skipped."""
  sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
  ignore = lambda k: _is_dropped(k) or k.startswith("aux_decoders.")
  return _apply_rules(sd, _rcr_official_rules(expected["params"]), expected, source,
                      "the official SemiCD/RCL CD_Model", ignore)


# ---------------------------------------------------------------------------------------------
# python -m jaxcd.convert dsfernet --torch CKPT --workdir W [--config C]

DEFAULT_DSFERNET_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dsfernet_levir.py"


def convert_dsfernet_to_workdir(config, torch_ckpt: str | Path, workdir: str | Path) -> dict[str, Any]:
  """Converts an official Dsfer-Net checkpoint and saves it as W's best checkpoint (step 0)."""
  import os

  from jaxcd import checkpointing, parallel
  from jaxcd.methods import common
  from jaxcd.models.layers import count_params
  if config.model.name != "dsfernet":
    raise ConfigError(f"config.model.name is {config.model.name!r}; converting Dsfer-Net weights "
                      "needs a dsfernet config (e.g. configs/dsfernet_levir.py)")
  if config.model.get("layernorm", "chw") != "chw":
    raise ConfigError("config.model.layernorm must be 'chw': the official weights hold (C,H,W) "
                      "LayerNorms")
  if config.data.num_bands != 3:
    raise ConfigError(f"config.data.num_bands={config.data.num_bands}; the official Dsfer-Net "
                      "takes 3 bands")
  workdir = os.path.abspath(workdir)
  for sub in (checkpointing.BEST, checkpointing.LATEST):
    d = os.path.join(workdir, sub)
    if os.path.isdir(d) and os.listdir(d):
      raise DataError(f"{d}: the workdir already holds checkpoints; convert into an empty --workdir")
  torch_ckpt = os.path.abspath(torch_ckpt)
  variables = dsfernet_from_torch(load_state_dict(torch_ckpt), source=torch_ckpt)
  size = 16 * variables["params"]["layernorm1"]["scale"].shape[0]
  if size != config.model.input_size:
    raise ConfigError(f"{torch_ckpt}: the weights are for {size}x{size} inputs but "
                      f"config.model.input_size={config.model.input_size} (set it to {size})")
  classes = variables["params"]["outc"]["bias"].shape[0]
  if classes != config.model.num_classes:
    raise ConfigError(f"{torch_ckpt}: the weights have {classes} classes but "
                      f"config.model.num_classes={config.model.num_classes}")

  mesh = parallel.make_mesh()
  model = common.build_model(config)
  tx, _ = common.make_optimizer(config.optim, config.num_steps)
  abstract = common.create_state(model, tx, (1, size, size, 3), config.seed, mesh, abstract=True)
  for coll in ("params", "batch_stats"):
    want = jax.tree_util.tree_structure(getattr(abstract, coll))
    if jax.tree_util.tree_structure(variables[coll]) != want:
      raise DataError(f"{torch_ckpt}: converted {coll} do not match the model built from the config")
    _check_fits(variables[coll], getattr(abstract, coll), torch_ckpt, f"converted {coll}")
  put = lambda tree: jax.device_put(tree, parallel.replicated(mesh))
  params, batch_stats = put(variables["params"]), put(variables["batch_stats"])
  # A fresh optimizer state for these params (Adam's moments start at zero, as after init).
  opt_state = jax.jit(tx.init, out_shardings=jax.tree_util.tree_map(lambda x: x.sharding,
                                                                      abstract.opt_state))(params)
  state = common.TrainState(step=put(np.zeros((), np.int32)), params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(0, state, None, {"best_f1": -1, "best_step": 0, "converted_from": torch_ckpt}, best=True)
  ckpt.close()
  return {"workdir": workdir, "converted_from": torch_ckpt, "input_size": size,
          "num_classes": classes, "params": count_params(variables["params"])}


def _default_config():
  from jaxcd.config_base import sibling
  if not DEFAULT_DSFERNET_CONFIG.is_file():
    raise ConfigError(f"--config: default {DEFAULT_DSFERNET_CONFIG} not found; pass --config")
  return sibling(str(DEFAULT_DSFERNET_CONFIG), DEFAULT_DSFERNET_CONFIG.stem)


def _define_flags() -> None:
  # Defined only when run as a program: training imports this module next to its own flags.
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config the checkpoint is for (default "
                                  "configs/dsfernet_levir.py).", lock_config=True)
  flags.DEFINE_string("torch", None, "Official checkpoint: .pth (needs torch), .safetensors or .npz.")
  flags.DEFINE_string("workdir", None, "Run directory to write the checkpoint into (empty or new).")
  flags.mark_flags_as_required(["torch", "workdir"])


def main(argv: list[str]) -> None:
  from absl import flags

  from jaxcd import cli
  f = flags.FLAGS

  def run():
    if argv[1:] != ["dsfernet"]:
      raise ConfigError(f"usage: python -m jaxcd.convert dsfernet --torch CKPT --workdir W "
                        f"[--config C]; got {' '.join(argv[1:]) or 'no model'}")
    config = f.config if f.config is not None else _default_config()
    return convert_dsfernet_to_workdir(config, f.torch, f.workdir)

  cli.print_json(cli.run_guarded(run))


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
