"""What the adversarial semi-supervised methods share (AdvNet, s4GAN, SemiCDNet: the rivals of
the RCL paper's Table IV, ../shared/papers/rcl.txt; official code github wgcban/SemiCD, one
branch per method). Not a method itself: each method file subclasses `SemiAdversarial`.

Data: the labeled/unlabeled split of RCL (`semi.labeled_split`: the same fraction and seed give
the same labeled pairs, so Sup. only, RCL and these rows train on one split). Every batch is
`gan.n_labeled` labeled pairs and `input.batch_size - gan.n_labeled` unlabeled ones, from two
grain streams (`pipeline.Streams`: each device holds its share of both), both with the weak
augmentation `input.augment`. The labels of the unlabeled pairs ride along in the batch and are
never read.

One jitted step, two optimizers (`state.AdversarialState`): the network (the generator) goes
through the whole batch once; its loss is CE on the labeled pairs plus the method's adversarial
terms, which see the discriminators' parameters as constants; then the discriminators are
updated by their own optimizer (`gan.disc_*`) on the same step's predictions, stopped. The
unsupervised weight ramps up as the official code's `consistency_weight` (sigmoid ramp over the
first `gan.ramp_up` share of the steps).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcd import losses, optim, parallel, state as state_lib
from jaxcd.data import pipeline, semi
from jaxcd.errors import ConfigError
from jaxcd.methods import base, rcl
from jaxcd.models.discriminators import Discriminator


# --- pieces of the losses ------------------------------------------------------------------------

def sigmoid_rampup(step: jax.Array, ramp_steps: float) -> jax.Array:
  """exp(-5 (1 - t / T)^2) for t < T, then 1 (the official code's `sigmoid_rampup`)."""
  if ramp_steps <= 0:
    return jnp.float32(1.0)
  t = jnp.clip(step.astype(jnp.float32), 0.0, ramp_steps)
  phase = 1.0 - t / ramp_steps
  return jnp.exp(-5.0 * phase * phase)


def bce_logits(logits: jax.Array, target: float, mask: jax.Array | None = None) -> jax.Array:
  """Mean binary cross-entropy of logits against a constant target (over `mask` if given)."""
  loss = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                            jnp.full(logits.shape, target, jnp.float32))
  if mask is None:
    return jnp.mean(loss)
  mask = jnp.broadcast_to(mask, loss.shape).astype(jnp.float32)
  return jnp.sum(loss * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def class_ce(logits_BxK: jax.Array, target: int) -> jax.Array:
  """Mean CE of per-image logits against one class for the whole batch (torch's CrossEntropy)."""
  labels = jnp.full(logits_BxK.shape[:1], target, jnp.int32)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      logits_BxK.astype(jnp.float32), labels))


def masked_ce(logits_BxHxWxK: jax.Array, labels_BxHxW: jax.Array,
              mask_BxHxW: jax.Array) -> jax.Array:
  """Mean pixel CE over the pixels of `mask` (0 when it selects none)."""
  logp = jax.nn.log_softmax(logits_BxHxWxK.astype(jnp.float32), axis=-1)
  nll = -losses.label_log_prob(logp, labels_BxHxW.astype(jnp.int32))
  m = mask_BxHxW.astype(jnp.float32)
  return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)


def one_hot_labels(labels_BxHxW: jax.Array, ignore_label: int) -> jax.Array:
  """BxHxWx2 one-hot ground truth; ignored pixels are all zero (as the official `one_hot`)."""
  y = jnp.where(labels_BxHxW == ignore_label, -1, labels_BxHxW.astype(jnp.int32))
  return jax.nn.one_hot(y, 2, dtype=jnp.float32)


@dataclasses.dataclass(frozen=True)
class Views:
  """One step's tensors the adversarial terms read: the network's logits of all pairs (each
  device's rows in place) and of the labeled and unlabeled ones, the labeled pairs' labels, the
  normalised images, and the step."""
  logits: jax.Array
  labels_l: jax.Array
  a: jax.Array
  b: jax.Array
  split: Callable[[jax.Array], list[jax.Array]]  # a batch's rows -> [labeled, unlabeled]
  step: jax.Array

  def stopped(self) -> "Views":
    return dataclasses.replace(self, logits=jax.lax.stop_gradient(self.logits))

  @property
  def logits_l(self) -> jax.Array:
    return self.split(self.logits)[0]

  @property
  def logits_u(self) -> jax.Array:
    return self.split(self.logits)[1]

  @property
  def probs(self) -> jax.Array:
    return jax.nn.softmax(self.logits, axis=-1)

  @property
  def probs_l(self) -> jax.Array:
    return jax.nn.softmax(self.logits_l, axis=-1)

  @property
  def probs_u(self) -> jax.Array:
    return jax.nn.softmax(self.logits_u, axis=-1)

  def images(self, labeled: bool) -> tuple[jax.Array, jax.Array]:
    i = 0 if labeled else 1
    return self.split(self.a)[i], self.split(self.b)[i]


# --- the discriminators' optimizer ---------------------------------------------------------------

def disc_optimizer(g, num_steps: int) -> optax.GradientTransformation:
  """`gan.disc_optim` ("adam" with `disc_b2`, or "sgd" with `disc_momentum`), `disc_lr` with
  poly (`disc_poly_power`) decay over the run, torch-style L2 `disc_weight_decay`."""
  o = ml_collections.ConfigDict(dict(
      lr=g.disc_lr, schedule="poly" if g.disc_poly_power else "constant",
      poly_power=g.disc_poly_power, warmup_steps=0))
  sched = optim.make_schedule(o, num_steps)
  parts = [optax.add_decayed_weights(g.disc_weight_decay)] if g.disc_weight_decay else []
  if g.disc_optim == "adam":
    parts.append(optax.adam(sched, b1=0.9, b2=g.disc_b2))
  else:
    parts.append(optax.sgd(sched, momentum=g.disc_momentum or None))
  return optax.chain(*parts)


# --- the method ----------------------------------------------------------------------------------

class SemiAdversarial(base.Method):
  """One stage of `config.num_steps` (or `gan.epochs` of the unlabeled pairs when 0); subclasses
  name their discriminators and losses."""

  # --- what a method defines ---

  def discriminators(self) -> dict[str, tuple[Discriminator, int]]:
    """name -> (module, input channels)."""
    raise NotImplementedError

  def generator_loss(self, disc_params, v: Views, w: jax.Array, rng) -> tuple[jax.Array, dict]:
    """The adversarial / self-training terms added to the labeled CE (w: the ramped weight)."""
    raise NotImplementedError

  def discriminator_loss(self, disc_params, v: Views, w: jax.Array, rng) -> tuple[jax.Array, dict]:
    """The discriminators' loss on stopped predictions."""
    raise NotImplementedError

  def check_method_config(self) -> None:
    """Raises ConfigError for the method's own block."""

  # --- shared ---

  def check_config(self) -> None:
    c, g = self.config, self.config.gan
    if not 0 < g.label_fraction < 1:
      raise ConfigError(f"config.gan.label_fraction must be in (0, 1) (the method needs unlabeled "
                        f"pairs), got {g.label_fraction}")
    if not 0 < g.n_labeled < c.input.batch_size:
      raise ConfigError(f"config.gan.n_labeled must be in [1, input.batch_size - 1] "
                        f"(= [1, {c.input.batch_size - 1}]), got {g.n_labeled}")
    if int(c.model.num_classes) != 2:
      raise ConfigError(f"config.model.num_classes must be 2 for {self.name}, got "
                        f"{c.model.num_classes}")
    if not 0 <= g.ramp_up <= 1:
      raise ConfigError(f"config.gan.ramp_up must be in [0, 1], got {g.ramp_up}")
    if g.disc_optim not in ("adam", "sgd"):
      raise ConfigError(f"config.gan.disc_optim must be 'adam' or 'sgd', not {g.disc_optim!r}")
    if g.disc_lr <= 0 or g.ndf < 1:
      raise ConfigError(f"config.gan.disc_lr must be > 0 and config.gan.ndf >= 1, got "
                        f"{g.disc_lr} and {g.ndf}")
    self.check_method_config()

  @property
  def n_labeled(self) -> int:
    return int(self.config.gan.n_labeled)

  def resize_batch(self, pairs: int, multiple: int = 1) -> None:
    c = self.config
    c.gan.n_labeled = base.share(self.n_labeled, int(c.input.batch_size), pairs, multiple)
    c.input.batch_size = pairs

  def stages(self, run: base.Run) -> list[base.Stage]:
    c = self.config
    self.lab_idx, self.unl_idx = semi.labeled_split(run.workdir, run.train_src,
                                                    c.gan.label_fraction, c.seed,
                                                    write=run.is_main)
    if len(self.unl_idx) == 0:
      raise ConfigError(f"config.gan.label_fraction={c.gan.label_fraction} leaves no unlabeled "
                        "pair")
    parallel.check_batch_size(self.n_labeled, "gan.n_labeled")
    n_u = int(c.input.batch_size) - self.n_labeled
    parallel.check_batch_size(n_u, "input.batch_size - gan.n_labeled")
    # As the official code: an epoch is one pass over the unlabeled pairs.
    self.total_steps = (int(c.num_steps) if c.num_steps > 0 else
                        math.ceil(float(c.gan.epochs) * len(self.unl_idx) / n_u))
    every = base.eval_every_auto(c, self.total_steps, c.gan.evals)
    return [base.Stage("train", self.total_steps, eval_every=every)]

  def data(self, run, stage) -> pipeline.Streams:
    c, n_l = self.config, self.n_labeled
    n_u = int(c.input.batch_size) - n_l
    lab = pipeline.Subset(run.train_src, semi.tile_indices(self.lab_idx, n_l))
    unl = pipeline.Subset(run.train_src, semi.tile_indices(self.unl_idx, n_u))
    seed = lambda i: semi.stream_seed(c.seed, 1, i)  # noqa: E731
    return pipeline.Streams({"labeled": base.train_stream(c, lab, n_l, seed(0)),
                             "unlabeled": base.train_stream(c, unl, n_u, seed(1))},
                            groups=parallel.local_data_devices(run.mesh))

  def disc_tx(self, stage: base.Stage) -> optax.GradientTransformation:
    return disc_optimizer(self.config.gan, stage.steps)

  def _disc_init(self, sample_shape, tx, mesh, abstract: bool):
    h, w = sample_shape[1:3]
    discs = self.discriminators()

    def init(key):
      params = {}
      for i, (name, (module, channels)) in enumerate(sorted(discs.items())):
        k = jax.random.fold_in(key, i)
        x = jnp.zeros((1, h, w, channels), jnp.float32)
        params[name] = module.init({"params": k, "dropout": k}, x)["params"]
      return params, tx.init(params)

    return state_lib.replicated_init(init, jax.random.key(self.config.seed + 1000, impl="rbg"),
                                     mesh, abstract)

  def _with_disc(self, state, disc) -> state_lib.AdversarialState:
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state_lib.TrainState)}
    return state_lib.AdversarialState(**fields, disc_params=disc[0], disc_opt_state=disc[1])

  def init_state(self, run, stage, tx):
    state = super().init_state(run, stage, tx)
    return self._with_disc(state, self._disc_init(run.sample_shape, self.disc_tx(stage),
                                                  run.mesh, abstract=False))

  def abstract_state(self, model, tx, sample_shape, mesh):
    state = super().abstract_state(model, tx, sample_shape, mesh)
    steps = max(int(self.config.num_steps), 1)
    d_tx = disc_optimizer(self.config.gan, steps)
    return self._with_disc(state, self._disc_init(sample_shape, d_tx, mesh, abstract=True))

  def disc_apply(self, disc_params, name: str, x: jax.Array, rng) -> dict[str, jax.Array]:
    module = self.discriminators()[name][0]
    return module.apply({"params": disc_params[name]}, x, train=True, rngs={"dropout": rng})

  def train_step(self, run, stage, state, tx):
    c = self.config
    if c.rcl.backbone_lr_mult != 1:  # the rcr network's SGD with the backbone at lr / 10
      tx = rcl.with_group_lr(tx, rcl.backbone_multipliers(state.params, c.rcl.backbone_params,
                                                          c.rcl.backbone_lr_mult),
                             c.optim.weight_decay)
    return make_adversarial_step(self, run.model, tx, self.disc_tx(stage), run.normalize,
                                 jax.random.key(self.config.seed), run.mesh,
                                 base.shardings_of(state), ramp_steps=self.config.gan.ramp_up
                                 * stage.steps)


def make_adversarial_step(method: SemiAdversarial, model, tx, d_tx, normalize, base_key, mesh,
                          state_shardings, ramp_steps: float):
  """Jitted (state, batch) -> (state, metrics): the generator's update, then the
  discriminators' on the same predictions; state donated, batch split over `data`."""
  c = method.config
  n_l, ignore = method.n_labeled, int(c.loss.ignore_label)
  # Each device's rows hold its labeled and unlabeled pairs (`pipeline.Streams`).
  split = functools.partial(parallel.split_streams, sizes=(n_l, int(c.input.batch_size) - n_l),
                            groups=mesh.devices.size)
  class_weights = tuple(c.loss.class_weights)
  key_data, key_impl = jax.device_get(jax.random.key_data(base_key)), jax.random.key_impl(base_key)

  def step(state: state_lib.AdversarialState, batch: dict):
    rng = jax.random.fold_in(jax.random.wrap_key_data(key_data, impl=key_impl), state.step)
    net_rng, g_rng, d_rng = jax.random.split(rng, 3)
    a, b = normalize(batch["image_a"]), normalize(batch["image_b"])
    labels_l = split(batch["label"])[0]
    w = sigmoid_rampup(state.step, ramp_steps)

    def g_loss(params):
      out, bs = state_lib.apply_model(model, params, state.batch_stats, a, b, train=True,
                                      rng=net_rng)
      logits = out["logits"]
      v = Views(logits, labels_l, a, b, split, state.step)
      sup = losses.cross_entropy(v.logits_l, labels_l, class_weights=class_weights,
                                 ignore_label=ignore)
      adv, parts = method.generator_loss(state.disc_params, v, w, g_rng)
      return sup + adv, (bs, logits, {"ce": sup, **parts})

    (loss, (bs, logits, parts)), grads = jax.value_and_grad(g_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    v = Views(logits, labels_l, a, b, split, state.step).stopped()
    (d_loss, d_parts), d_grads = jax.value_and_grad(
        lambda p: method.discriminator_loss(p, v, w, d_rng), has_aux=True)(
            state.disc_params)
    d_updates, d_opt_state = d_tx.update(d_grads, state.disc_opt_state, state.disc_params)
    disc_params = optax.apply_updates(state.disc_params, d_updates)

    new = state.replace(step=state.step + 1, params=params, batch_stats=bs, opt_state=opt_state,
                        disc_params=disc_params, disc_opt_state=d_opt_state)
    norm = optax.tree_utils.tree_norm
    # grad_norm / update_norm cover both networks: the loop stops on either going non-finite.
    return new, {"loss": loss, "d_loss": d_loss, "unsup_weight": w,
                 "grad_norm": norm((grads, d_grads)), "update_norm": norm((updates, d_updates)),
                 "d_grad_norm": norm(d_grads), **parts, **d_parts}

  return jax.jit(step, in_shardings=(state_shardings, parallel.data_sharded(mesh)),
                 out_shardings=(state_shardings, parallel.replicated(mesh)), donate_argnums=(0,))
