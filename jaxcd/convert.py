"""Converts the official Dsfer-Net PyTorch checkpoint into a jaxcd workdir:

  python -m jaxcd.convert dsfernet --torch CKPT --workdir W --config configs/dsfernet_levir.py

writes the converted official model as the `best` checkpoint of W, which `jaxcd.evaluate` and
`jaxcd.predict` load with the same --config. The conversion itself (and the ImageNet backbones
of `config.init.backbone`) is the library `jaxcd.weights`; this module is its command line.
"""
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcd.errors import ConfigError, DataError
from jaxcd.weights import dsfernet_from_torch, load_state_dict
from jaxcd.weights.rules import _check_fits


def convert_dsfernet_to_workdir(config, torch_ckpt: str | Path, workdir: str | Path) -> dict[str, Any]:
  """Converts an official Dsfer-Net checkpoint and saves it as W's best checkpoint (step 0)."""
  import os

  from jaxcd import checkpointing, parallel
  from jaxcd.models.layers import count_params
  from jaxcd.optim import make_optimizer
  from jaxcd.state import TrainState, build_model, create_state
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
  model = build_model(config)
  tx, _ = make_optimizer(config.optim, config.num_steps)
  abstract = create_state(model, tx, (1, size, size, 3), config.seed, mesh, abstract=True)
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
  state = TrainState(step=put(np.zeros((), np.int32)), params=params,
                     batch_stats=batch_stats, opt_state=opt_state)
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(0, state, None, {"best_f1": -1, "best_step": 0, "converted_from": torch_ckpt}, best=True)
  ckpt.close()
  return {"workdir": workdir, "converted_from": torch_ckpt, "input_size": size,
          "num_classes": classes, "params": count_params(variables["params"])}


def _define_flags() -> None:
  # Defined only when run as a program, so that importing this module defines no flags.
  from absl import flags

  from jaxcd import cli
  cli.define_config_flag("Config the checkpoint is for (e.g. configs/dsfernet_levir.py).")
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
                        f"--config C; got {' '.join(argv[1:]) or 'no model'}")
    return convert_dsfernet_to_workdir(f.config, f.torch, f.workdir)

  cli.print_json(cli.run_guarded(run))


if __name__ == "__main__":
  from jaxcd import cli
  _define_flags()
  cli.run_app(main)
