"""Every config file in configs/ builds: its model (shapes only), its method, the loop's and the
method's config checks, its loss, normaliser and optimizer, and its data block declares exactly
its source's options (so each is settable from the command line, and an option of another source
such as --config.data.num_train on LEVIR-CD fails)."""
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from jaxcd import config_base, losses, optim, state as state_lib, trainer
from jaxcd.data import list_sources, source_options
from jaxcd.data.registry import PIPELINE_FIELDS, check_options
from jaxcd.data.normalize import make_normalizer
from jaxcd.errors import ConfigError
from jaxcd.methods import base, list_methods

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def _load(path):
  return config_base.sibling(str(path), path.stem)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_its_model_and_method(path):
  c = _load(path)
  assert c.lock() is not None  # config_flags locks it: no field added later by code
  method = trainer.check_config(c)  # the loop's fields and the method's own
  assert isinstance(method, base.Method) and method.name == c.method
  assert c.data.name in list_sources()
  declared = set(source_options(c.data.name))
  fields = set(c.data.keys()) - set(PIPELINE_FIELDS)
  assert fields == declared, (f"{path.name}: not {c.data.name}'s: {sorted(fields - declared)}; "
                              f"undeclared: {sorted(declared - fields)}")
  check_options(c.data.name, {k: c.data[k] for k in fields})  # and of the declared types
  make_normalizer(c)  # mean/std agree with num_bands
  if not method.trains:
    return
  optim.make_optimizer(c.optim, max(c.num_steps, 1))
  model = state_lib.build_model(c)  # every model field is a constructor argument
  s = c.model.get("input_size") or c.data.get("image_size") or 64
  x = jax.ShapeDtypeStruct((2, s, s, c.data.num_bands), jnp.float32)
  v = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, a), x)
  out = jax.eval_shape(lambda v, a: model.apply(v, a, a), v, x)
  assert out["logits"].shape[:3] == (2, s, s)
  # The change map of the method's evaluation and prediction has the images' shape.
  head = method.head(base.RunMeta())
  assert jax.eval_shape(method.classes, out["logits"], head).shape == (2, s, s)
  assert jax.eval_shape(method.change_score, out["logits"], head).shape == (2, s, s)
  if c.method == "supervised":  # the others build their losses from their own fields
    labels = jax.ShapeDtypeStruct((2, s, s), jnp.uint8)
    loss, aux = jax.eval_shape(losses.from_config(c.loss), out, labels)
    assert loss.shape == () and isinstance(aux, dict)


def test_every_method_module_has_a_config():
  assert set(list_methods()) == {_load(p).method for p in CONFIGS}


@pytest.mark.parametrize("field,value", [("eval_every", -1), ("checkpoint_every", -2),
                                         ("log_every", -3), ("num_steps", -1)])
def test_loop_fields_are_checked_once_with_one_line_errors(field, value):
  c = _load(CONFIGS[0])
  with c.unlocked():
    c[field] = value
  with pytest.raises(ConfigError, match=f"config.{field} must be an integer >= 0") as e:
    trainer.check_config(c)
  assert "\n" not in str(e.value)


def test_unknown_method_names_the_known_ones():
  c = _load(CONFIGS[0])
  c.method = "no_such_method"
  with pytest.raises(ConfigError, match="config.method: unknown method 'no_such_method'.*rcl"):
    trainer.check_config(c)


def test_on_dataset_drops_synthetic_fields():
  c = config_base.base_config()
  config_base.on_dataset(c, "sztaki", "/data/sztaki")
  assert (c.data.name, c.data.data_dir) == ("sztaki", "/data/sztaki")
  assert not {"image_size", "num_train", "max_shift", "nuisance"} & set(c.data.keys())
  assert c.data.mean == (127.5, 127.5, 127.5)  # pipeline fields stay
  assert (c.data.split_seed, c.data.label_encoding, c.data.tile_size) == (0, "auto", 256)
  c.data.label_encoding = "1_2"  # declared as a string: settable, and typed
  with pytest.raises(TypeError):
    c.data.tile_size = "512"


def test_source_options_are_checked():
  from jaxcd.data import make_source
  with pytest.raises(ConfigError, match=r"config.data.tile_sise: not an option of source 'levir_cd' "
                                        r"\(did you mean 'tile_size'\?\); its options: cache_size"):
    make_source("levir_cd", "train", data_dir="/x", tile_sise=512)
  with pytest.raises(ConfigError, match="config.data.tile_size: expected an integer for source "
                                        "'levir_cd', got '512'"):
    make_source("levir_cd", "train", data_dir="/x", tile_size="512")
