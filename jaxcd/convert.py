"""Converts an official PyTorch checkpoint into a jaxcd workdir:

  python -m jaxcd.convert MODEL --torch CKPT --workdir W --config C
  python -m jaxcd.convert dsfernet --torch model.pth --workdir runs/dsfer --config configs/dsfernet_levir.py

MODEL is one of `OFFICIAL` (every network with an official-weights converter in jaxcd.weights:
dsfernet, rcr, snunet, dsamnet, stanet, changeformer, vct). STANet's two files go together,
`--torch N_net_F.pth,N_net_A.pth`.
Writes the converted model as the `best` checkpoint of W (step 0), which `jaxcd.evaluate` and
`jaxcd.predict` load with the same --config. Before converting, the config is checked against
what the weights imply (model name, input bands, classes, Dsfer-Net's input size); after, the
converted tree against the model the config builds. The conversion itself (and the ImageNet
backbones of `config.init.backbone`) is the library `jaxcd.weights`; this module is its
command line.
"""
import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxcd import weights
from jaxcd.errors import ConfigError, DataError
from jaxcd.weights.rules import _check_fits


@dataclasses.dataclass(frozen=True)
class Official:
  """How one official network's state dict converts and what it says about the config."""
  convert: Callable[..., weights.Variables]  # (state_dict, expected, source) -> variables
  stem: str  # state-dict key of the first conv, (out, bands, kh, kw): the input bands
  head: tuple[str, int] | None  # (key, axis) of the class dimension; None: a distance, 2 classes
  example: str  # a config the weights fit
  input_size: Callable[[Mapping[str, Any]], int] | None = None  # for models built per size


def _dsfernet(sd, expected, source):
  del expected  # dsfernet_from_torch reads the shapes from the state dict
  return weights.dsfernet_from_torch(sd, source=source)


OFFICIAL = {
    "dsfernet": Official(_dsfernet, "base.feats.0.weight", ("outc.conv.weight", 0),
                         "configs/dsfernet_levir.py",
                         input_size=lambda sd: 16 * np.shape(sd["layernorm1.weight"])[1]),
    "rcr": Official(weights.rcr_from_official, "encoder.base.0.0.conv1.weight",
                    ("main_decoder.upsample.3.weight", 0), "configs/rcl_whu.py"),
    "snunet": Official(weights.snunet_from_official, "conv0_0.conv1.weight",
                       ("conv_final.weight", 0), "configs/snunet.py"),
    "dsamnet": Official(weights.dsamnet_from_official, "backbone.conv1.weight",
                        ("ds_lyr2.outconv.weight", 1), "configs/dsamnet.py"),  # ConvTranspose
    "stanet": Official(weights.stanet_from_official, "module.backbone.conv1.weight", None,
                       "configs/stanet_levir.py"),
    "changeformer": Official(weights.changeformer_from_official, "Tenc_x2.patch_embed1.proj.weight",
                             ("TDec_x2.change_probability.conv2d.weight", 0),
                             "configs/changeformer_levir.py"),
    "vct": Official(weights.vct_from_official, "resnet.conv1.weight", ("classifier.3.weight", 0),
                    "configs/vct_levir.py"),
}


def _entry(sd: Mapping[str, Any], key: str, source: str) -> np.ndarray:
  for k in (key, f"module.{key}", key.removeprefix("module.")):
    if k in sd:
      return np.asarray(sd[k])
  raise DataError(f"{source}: missing key {key!r}: not an official checkpoint of this model")


def load_merged(paths: str) -> dict[str, Any]:
  """One state dict from comma-separated files (STANet saves net_F and net_A apart); a key in
  two files is an error."""
  sd: dict[str, Any] = {}
  for path in paths.split(","):
    part = weights.load_state_dict(path)
    both = sorted(set(sd) & set(part))
    if both:
      raise DataError(f"{path}: key {both[0]!r} is also in an earlier --torch file")
    sd.update(part)
  return sd


def check_implied(model: str, sd: Mapping[str, Any], config, source: str) -> int:
  """Raises ConfigError where the config disagrees with what the weights imply; returns the
  input size the abstract model is built at."""
  from jaxcd.sliding import fixed_input_size
  spec = OFFICIAL[model]
  bands = _entry(sd, spec.stem, source).shape[1]
  if bands != config.data.num_bands:
    raise ConfigError(f"{source}: the weights take {bands} bands but "
                      f"config.data.num_bands={config.data.num_bands}")
  if spec.head is not None:
    key, axis = spec.head
    classes = _entry(sd, key, source).shape[axis]
    if classes != config.model.num_classes:
      raise ConfigError(f"{source}: the weights have {classes} classes but "
                        f"config.model.num_classes={config.model.num_classes}")
  size = fixed_input_size(config)
  if spec.input_size is not None:
    if config.model.get("layernorm", "chw") != "chw":
      raise ConfigError("config.model.layernorm must be 'chw': the official weights hold (C,H,W) "
                        "LayerNorms")
    implied = spec.input_size(sd)
    if implied != size:
      raise ConfigError(f"{source}: the weights are for {implied}x{implied} inputs but "
                        f"config.model.input_size={size} (set it to {implied})")
  return size or 64  # the other models' parameters do not depend on the input size


def convert_to_workdir(model: str, config, torch_ckpt: str | Path,
                       workdir: str | Path) -> dict[str, Any]:
  """Converts an official `model` checkpoint and saves it as W's best checkpoint (step 0)."""
  import os

  from jaxcd import checkpointing, parallel
  from jaxcd.models.layers import count_params
  from jaxcd.optim import make_optimizer
  from jaxcd.state import TrainState, build_model, create_state
  if model not in OFFICIAL:
    raise ConfigError(f"no official-weights converter for {model!r}; choose from "
                      f"{', '.join(sorted(OFFICIAL))}")
  if config.model.name != model:
    raise ConfigError(f"config.model.name is {config.model.name!r}; converting {model} weights "
                      f"needs a {model} config (e.g. {OFFICIAL[model].example})")
  workdir = os.path.abspath(workdir)
  for sub in (checkpointing.BEST, checkpointing.LATEST):
    d = os.path.join(workdir, sub)
    if os.path.isdir(d) and os.listdir(d):
      raise DataError(f"{d}: the workdir already holds checkpoints; convert into an empty --workdir")
  torch_ckpt = ",".join(os.path.abspath(p) for p in str(torch_ckpt).split(","))
  sd = load_merged(torch_ckpt)
  size = check_implied(model, sd, config, torch_ckpt)

  mesh = parallel.make_mesh()
  net = build_model(config)
  tx, _ = make_optimizer(config.optim, config.num_steps)
  abstract = create_state(net, tx, (1, size, size, config.data.num_bands), config.seed, mesh,
                          abstract=True)
  expected = {"params": abstract.params, "batch_stats": abstract.batch_stats}
  variables = OFFICIAL[model].convert(sd, expected, source=torch_ckpt)
  variables.setdefault("batch_stats", {})
  for coll in ("params", "batch_stats"):
    want = jax.tree_util.tree_structure(expected[coll])
    if jax.tree_util.tree_structure(variables[coll]) != want:
      raise DataError(f"{torch_ckpt}: converted {coll} do not match the model built from the config")
    _check_fits(variables[coll], expected[coll], torch_ckpt, f"converted {coll}")
  put = lambda tree: jax.device_put(tree, parallel.replicated(mesh))
  params, batch_stats = put(variables["params"]), put(variables["batch_stats"])
  # A fresh optimizer state for these params (Adam's moments start at zero, as after init).
  opt_state = jax.jit(tx.init, out_shardings=jax.tree_util.tree_map(lambda x: x.sharding,
                                                                      abstract.opt_state))(params)
  state = TrainState(step=put(np.zeros((), np.int32)), params=params,
                     batch_stats=batch_stats, opt_state=opt_state)
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(0, state, None, {"best_f1": -1, "best_step": 0, "converted_from": torch_ckpt}, best=True)
  ckpt.close()
  return {"model": model, "workdir": workdir, "converted_from": torch_ckpt, "input_size": size,
          "num_classes": int(config.model.num_classes), "params": count_params(variables["params"])}


def _define_flags() -> None:
  # Defined only when run as a program, so that importing this module defines no flags.
  from absl import flags

  from jaxcd import cli
  cli.define_config_flag("Config the checkpoint is for (e.g. configs/dsfernet_levir.py).")
  flags.DEFINE_string("torch", None, "Official checkpoint: .pth (needs torch), .safetensors or "
                      ".npz; comma-separated files are merged (STANet: net_F,net_A).")
  flags.DEFINE_string("workdir", None, "Run directory to write the checkpoint into (empty or new).")
  flags.mark_flags_as_required(["torch", "workdir"])


def main(argv: list[str]) -> None:
  from absl import flags

  from jaxcd import cli
  f = flags.FLAGS

  def run():
    if len(argv) != 2 or argv[1] not in OFFICIAL:
      raise ConfigError(f"usage: python -m jaxcd.convert MODEL --torch CKPT --workdir W "
                        f"--config C, MODEL one of {', '.join(sorted(OFFICIAL))}; got "
                        f"{' '.join(argv[1:]) or 'no model'}")
    return convert_to_workdir(argv[1], f.config, f.torch, f.workdir)

  cli.print_json(cli.run_guarded(run))


if __name__ == "__main__":
  from jaxcd import cli
  _define_flags()
  cli.run_app(main)
