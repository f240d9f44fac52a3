"""RCR: revisiting consistency regularization for semi-supervised change detection (Bandara &
Patel 2022; official code github wgcban/SemiCD, branch main, read for facts; the RCL paper's
rival, ../shared/papers/rcl.txt Tables III, IV, VII).

Split: `rcr.label_fraction` of the training split is labeled, drawn as RCL's (`jaxcd.data.semi`,
WORKDIR/splits/), so the same fraction and seed give the same pairs; the rest is unlabeled.
Every step takes `input.batch_size` labeled + `rcr.unlabeled_batch_size` unlabeled pairs from
two grain streams (the code: 8 + 8; an epoch is one pass over the unlabeled pairs). The network
(`rcr`, jaxcd/models/rcr.py) runs on the labeled and on the unlabeled pairs in two calls (each
with its own BatchNorm statistics, as the code). Its PSP features z of the unlabeled pairs feed
`rcr.decoders` auxiliary decoders (the model's `aux_decoders_<i>`, the code's order: VAT, dropout,
guided cutout, context masking, object masking, feature drop, feature noise), each on its own
perturbation of z (`jaxcd.models.perturbations`). The loss is

  CE(main logits of the labeled pairs) + w(t) * mean_i MSE(softmax(aux_i), softmax(main))

on the unlabeled pairs, the main decoder's softmax detached, w(t) = `rcr.unsup_weight` x
exp(-5 (1 - t/T)^2), T = `rcr.rampup` x the run's steps (the code: 30, 0.1). Evaluation and
prediction use the main decoder only. Optimiser: `config.optim`; `rcr.backbone_lr_mult` gives the
backbone its own SGD learning rate (the code: lr / 10, `jaxcd.optim.with_group_lr`).
"""
import logging
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcd import losses, optim, parallel, state as state_lib, steps as steps_lib
from jaxcd.data import pipeline, semi
from jaxcd.errors import ConfigError
from jaxcd.methods import base
from jaxcd.models import perturbations as pert
from jaxcd.models.rcr import aux_decoder

# The code's perturbation names (configs/config_*.json), in its decoder order.
KINDS = ("vat", "drop", "cutout", "context_masking", "object_masking", "feature_drop",
         "feature_noise")


def rcr_fields() -> ml_collections.ConfigDict:
  """The `rcr` block with the official code's values (configs/config_LEVIR.json)."""
  r = ml_collections.ConfigDict()
  r.label_fraction = 0.05  # labeled share of the training split (paper: 0.05/0.1/0.2/0.4)
  r.unlabeled_batch_size = 8  # unlabeled pairs per step, beside input.batch_size labeled ones
  r.unsup_weight = 30.0  # final weight of the consistency loss
  r.rampup = 0.1  # sigmoid ramp-up of that weight over this share of the run's steps
  r.epochs = 80.0  # run length in passes over the unlabeled pairs, when config.num_steps is 0
  # Auxiliary decoders per perturbation (26 in all).
  r.decoders = ml_collections.ConfigDict(dict(vat=2, drop=5, cutout=5, context_masking=2,
                                              object_masking=2, feature_drop=5, feature_noise=5))
  r.xi = 1e-6  # VAT: finite-difference step
  r.eps = 2.0  # VAT: norm of the adversarial perturbation (per sample)
  r.vat_iterations = 1  # VAT: power iterations
  # VAT's power step: "hessian" (exact Hessian-vector product, the method's intent) or
  # "finite_difference" (the code's: in float32 at xi 1e-6 its r_adv is near 0, see `pert.vat`).
  r.vat_direction = "hessian"
  r.drop_rate = 0.5  # Dropout2d rate
  r.erase = 0.4  # guided cutout: box side as a share of the component's bounding box
  r.cutout_min_boundary = 50  # guided cutout: components with more boundary pixels are cut
  r.uniform_range = 0.3  # feature noise: z + z * U(-r, r)
  r.backbone_lr_mult = 1.0  # SGD only: lr multiplier of the backbone (code: 0.1)
  r.backbone_params = "backbone"  # top-level parameter collection that multiplier applies to
  r.evals = 20  # validations in the run when config.eval_every is 0
  return r


def decoder_kinds(rc) -> list[str]:
  """One perturbation name per auxiliary decoder, in the code's order."""
  unknown = sorted(set(rc.decoders) - set(KINDS))
  if unknown:
    raise ConfigError(f"config.rcr.decoders: unknown perturbation {unknown[0]!r}; known: "
                      f"{', '.join(KINDS)}")
  kinds = []
  for k in KINDS:
    n = int(rc.decoders.get(k, 0))
    if n < 0:
      raise ConfigError(f"config.rcr.decoders.{k} must be >= 0, got {n}")
    kinds += [k] * n
  return kinds


def _check_config(config) -> None:
  rc = config.rcr
  if config.model.name != "rcr":
    raise ConfigError(f"config.model.name must be 'rcr' for RCR (its auxiliary decoders belong to "
                      f"that network), got {config.model.name!r}")
  if int(config.model.num_classes) != 2:
    raise ConfigError(f"config.model.num_classes must be 2 for RCR, got {config.model.num_classes}")
  if not 0 < rc.label_fraction < 1:
    raise ConfigError(f"config.rcr.label_fraction must be in (0, 1) (RCR needs unlabeled pairs), "
                      f"got {rc.label_fraction}")
  if rc.vat_direction not in ("hessian", "finite_difference"):
    raise ConfigError(f"config.rcr.vat_direction must be 'hessian' or 'finite_difference', got "
                      f"{rc.vat_direction!r}")
  if rc.unlabeled_batch_size <= 0:
    raise ConfigError(f"config.rcr.unlabeled_batch_size must be > 0, got {rc.unlabeled_batch_size}")
  if not decoder_kinds(rc):
    raise ConfigError("config.rcr.decoders: no auxiliary decoder (all counts are 0)")
  for name in ("unsup_weight", "xi", "eps", "erase", "uniform_range"):
    if rc[name] < 0:
      raise ConfigError(f"config.rcr.{name} must be >= 0, got {rc[name]}")
  if not 0 <= rc.rampup <= 1 or not 0 <= rc.drop_rate < 1 or rc.erase > 1:
    raise ConfigError("config.rcr: rampup must be in [0, 1], drop_rate in [0, 1), erase <= 1")
  if config.num_steps <= 0 and rc.epochs <= 0:
    raise ConfigError("config.num_steps or config.rcr.epochs must be > 0")
  if rc.evals <= 0 and config.eval_every <= 0:
    raise ConfigError("config.eval_every or config.rcr.evals must be > 0")
  if rc.backbone_lr_mult <= 0:
    raise ConfigError(f"config.rcr.backbone_lr_mult must be > 0, got {rc.backbone_lr_mult}")
  if rc.backbone_lr_mult != 1 and (config.optim.name != "sgd" or config.optim.grad_clip):
    raise ConfigError("config.rcr.backbone_lr_mult != 1 is a per-group learning rate only for "
                      "config.optim.name='sgd' without config.optim.grad_clip")


# --- the training step -------------------------------------------------------------------------

def perturb(kind: str, key: jax.Array, z_BxhxwxC: jax.Array, mask_BxHxW: jax.Array,
            decode: Callable[[jax.Array], jax.Array], rc, boxes=None) -> jax.Array:
  """The features an auxiliary decoder of perturbation `kind` sees; `decode` (features ->
  logits, that decoder without gradient to its weights) serves VAT, `boxes` guided cutout."""
  if kind == "vat":
    return pert.vat(key, z_BxhxwxC, decode, rc.xi, rc.eps, int(rc.vat_iterations),
                    rc.vat_direction)
  if kind == "drop":
    return pert.dropout2d(key, z_BxhxwxC, rc.drop_rate)
  if kind == "cutout":
    return pert.guided_cutout(key, z_BxhxwxC, mask_BxHxW, rc.erase, int(rc.cutout_min_boundary),
                              boxes)
  if kind == "context_masking":
    return pert.context_masking(z_BxhxwxC, mask_BxHxW)
  if kind == "object_masking":
    return pert.object_masking(z_BxhxwxC, mask_BxHxW)
  if kind == "feature_drop":
    return pert.feature_drop(key, z_BxhxwxC)
  if kind == "feature_noise":
    return pert.feature_noise(key, z_BxhxwxC, rc.uniform_range)
  raise ConfigError(f"config.rcr.decoders: unknown perturbation {kind!r}")


def consistency(params: Any, net, z_BxhxwxC: jax.Array, main_logits_BxHxWxK: jax.Array,
                kinds: list[str], rc, key: jax.Array) -> jax.Array:
  """Mean over the auxiliary decoders of `losses.consistency_mse` against the detached main
  prediction, each decoder on its perturbation of z. The decoders of one perturbation run in a
  `lax.scan` over their stacked parameters, so XLA compiles one decoder per kind, not 26."""
  logits = jax.lax.stop_gradient(main_logits_BxHxWxK.astype(jnp.float32))
  target, mask = jax.nn.softmax(logits, axis=-1), jnp.argmax(logits, axis=-1) > 0
  hw = main_logits_BxHxWxK.shape[1:3]
  dec = aux_decoder(net)
  total = jnp.zeros((), jnp.float32)
  for j, kind in enumerate(KINDS):
    idx = [i for i, k in enumerate(kinds) if k == kind]
    if not idx:
      continue
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x),
                                     *[params[f"aux_decoders_{i}"] for i in idx])
    boxes = None
    if kind == "cutout":  # one mask for all cutout decoders: its components once
      boxes = jax.vmap(lambda m: pert.component_boxes(m, int(rc.cutout_min_boundary)))(mask)

    def body(acc, pk, kind=kind, boxes=boxes):
      p, k = pk
      decode = lambda x, p=p: dec.apply({"params": p}, x, hw)  # noqa: E731
      fixed = lambda x, p=p: decode(x, jax.lax.stop_gradient(p))  # noqa: E731
      z_i = perturb(kind, k, z_BxhxwxC, mask, fixed, rc, boxes)
      return acc + losses.consistency_mse(decode(z_i), target), None

    keys = jax.random.split(jax.random.fold_in(key, j), len(idx))
    total, _ = jax.lax.scan(body, total, (stacked, keys))
  return total / len(kinds)


def make_apply(net, rc, kinds: list[str], n_l: int, n_u: int, rampup_steps: int, groups: int = 1):
  """`steps.make_train_step`'s `apply` for RCR: outputs `logits` (labeled pairs), `consistency`
  (the unweighted unsupervised loss) and `unsup_weight` (w(t) at this step). `groups`: the
  devices on the batch axis (`parallel.split_streams`)."""
  def apply(params, batch_stats, a, b, rng, step):
    (a_l, a_u), (b_l, b_u) = (parallel.split_streams(x, (n_l, n_u), groups) for x in (a, b))
    out_l, bs = state_lib.apply_model(net, params, batch_stats, a_l, b_l, train=True, rng=rng)
    out_u, bs = state_lib.apply_model(net, params, bs, a_u, b_u, train=True, rng=rng)
    cons = consistency(params, net, out_u["features"], out_u["logits"], kinds, rc,
                       jax.random.fold_in(rng, 1))
    w = rc.unsup_weight * losses.sigmoid_rampup(step, rampup_steps)
    return {"logits": out_l["logits"], "consistency": cons, "unsup_weight": w}, bs
  return apply


def make_loss(supervised, n_l: int, n_u: int, groups: int = 1):
  """(outputs, labels) -> (loss, parts): `supervised` (config.loss) on the labeled pairs plus the
  weighted consistency; the unlabeled pairs' labels are never read."""
  def loss_fn(outputs, labels):
    ce, parts = supervised(outputs, parallel.split_streams(labels, (n_l, n_u), groups)[0])
    w, cons = outputs["unsup_weight"], outputs["consistency"]
    return ce + w * cons, {**parts, "ce": ce, "consistency": cons, "unsup_weight": w}
  return loss_fn


# --- the method --------------------------------------------------------------------------------

class RCR(base.Method):
  name = "rcr"

  def check_config(self) -> None:
    _check_config(self.config)

  @property
  def kinds(self) -> list[str]:
    return decoder_kinds(self.config.rcr)

  def build_model(self):
    return state_lib.build_model(self.config, aux_decoders=len(self.kinds))

  def batch_rows(self) -> int:
    return int(self.config.input.batch_size) + int(self.config.rcr.unlabeled_batch_size)

  def resize_batch(self, pairs: int, multiple: int = 1) -> None:
    c = self.config
    c.input.batch_size = base.share(int(c.input.batch_size), self.batch_rows(), pairs, multiple)
    c.rcr.unlabeled_batch_size = pairs - c.input.batch_size

  def num_steps(self, unlabeled: int) -> int:
    """config.num_steps if > 0, else `rcr.epochs` passes over the unlabeled pairs."""
    c = self.config
    if c.num_steps > 0:
      return int(c.num_steps)
    return max(1, math.ceil(float(c.rcr.epochs) * unlabeled / int(c.rcr.unlabeled_batch_size)))

  def stages(self, run: base.Run) -> list[base.Stage]:
    c, rc = self.config, self.config.rcr
    self.lab_idx, self.unl_idx = semi.labeled_split(run.workdir, run.train_src, rc.label_fraction,
                                                    c.seed, write=run.is_main,
                                                    field="config.rcr.label_fraction")
    parallel.check_batch_size(int(rc.unlabeled_batch_size), "rcr.unlabeled_batch_size")
    steps = self.num_steps(len(self.unl_idx))
    logging.info("rcr: %d labeled / %d unlabeled pairs, %d auxiliary decoders, %d steps",
                 len(self.lab_idx), len(self.unl_idx), len(self.kinds), steps)
    return [base.Stage("train", steps, eval_every=base.eval_every_auto(c, steps, rc.evals))]

  def make_step(self, model, tx, normalize, mesh, state_shardings, steps_in_stage: int):
    c, rc = self.config, self.config.rcr
    if rc.backbone_lr_mult != 1:
      mult = optim.backbone_multipliers(state_shardings.params, rc.backbone_params,
                                        rc.backbone_lr_mult, "config.rcr")
      tx = optim.with_group_lr(tx, mult, c.optim.weight_decay)
    n_l, n_u, groups = int(c.input.batch_size), int(rc.unlabeled_batch_size), mesh.devices.size
    apply = make_apply(model, rc, self.kinds, n_l, n_u, int(rc.rampup * steps_in_stage), groups)
    loss_fn = make_loss(losses.from_config(c.loss), n_l, n_u, groups)
    return steps_lib.make_train_step(model, tx, loss_fn, normalize, jax.random.key(c.seed), mesh,
                                     state_shardings, apply=apply)

  def data(self, run, stage) -> pipeline.Streams:
    c = self.config
    streams = {}
    for i, (name, idx, batch) in enumerate((
        ("labeled", self.lab_idx, int(c.input.batch_size)),
        ("unlabeled", self.unl_idx, int(c.rcr.unlabeled_batch_size)))):
      src = pipeline.Subset(run.train_src, semi.tile_indices(np.asarray(idx), batch))
      streams[name] = base.train_stream(c, src, batch, semi.stream_seed(c.seed, 1, i))
    return pipeline.Streams(streams, groups=parallel.local_data_devices(run.mesh))


METHOD = RCR
FIELDS = {"rcr": rcr_fields}  # config blocks with defaults, for tools without a config file
