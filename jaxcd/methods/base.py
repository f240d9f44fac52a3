"""The method interface: what a training algorithm hands the one loop in `jaxcd.trainer`.

A method is a `Method` subclass in its own file under `jaxcd/methods/`. The defaults are plain
supervised training of `config.model` on `config.data` (one stage of `config.num_steps`), so a
method overrides only what differs:

  set-up      `check_config`, `build_model` (the trained network), `stages` (named stretches
              with their own state, schedule and checkpoint directory, at global step offsets),
              `optimizer`, `init_state`, `train_step` (`make_step`), `data` (a
              `pipeline.Streams` of host batches)
  hooks       `restore` (method state from a checkpoint), `start` (before a stage's first step),
              `eval_now`, `before_eval`, `after_step` (e.g. re-clustering), `row_fields`,
              `checkpoint_extra` (host arrays saved with a checkpoint)
  inference   `head` (arrays a checkpoint's change map needs), `classes` and `change_score` of
              the logits, `load_predictor` (what `jaxcd.evaluate` and `jaxcd.predict` call)

The loop calls the hooks with a `Run` (what every stage shares) and a `Loop` (the stage in
progress: state, data, metadata). Method state small enough for JSON lives in
`Loop.meta.method`; larger arrays go through `checkpoint_extra` / `restore`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcd import checkpointing, losses, metrics as metrics_lib, optim, parallel, state as state_lib
from jaxcd import steps
from jaxcd.data import pipeline
from jaxcd.data.normalize import make_normalizer


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stretch of training with one train state, schedule and checkpoint directory. Its local
  steps 1..steps are global steps offset+1..offset+steps (rows and checkpoints use those)."""
  name: str
  steps: int
  offset: int = 0
  directory: str = ""  # checkpoints under WORKDIR/<directory> ("" = the workdir itself)
  eval_every: int = 0  # validation every N local steps; 0 = only at the stage's end
  fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # columns of its rows
  final: bool = True  # its best checkpoint is evaluated on `eval_splits` at the end

  @property
  def last(self) -> int:
    return self.offset + self.steps


@dataclasses.dataclass
class RunMeta:
  """Saved with every checkpoint (as flat JSON): the best validation F1 so far, where it was,
  the row fields at that step (e.g. CDCluster's phase, RCL's stage), and the method's own
  JSON-sized state (e.g. CDCluster's cluster-to-change map)."""
  best_f1: float = -1.0
  best_step: int | None = None
  best_fields: dict[str, Any] = dataclasses.field(default_factory=dict)
  method: dict[str, Any] = dataclasses.field(default_factory=dict)

  _OWN = ("best_f1", "best_step", "best_fields")

  def to_json(self) -> dict[str, Any]:
    return {"best_f1": self.best_f1, "best_step": self.best_step,
            "best_fields": dict(self.best_fields), **self.method}

  @classmethod
  def from_json(cls, d: Mapping[str, Any] | None) -> "RunMeta":
    d = dict(d or {})
    return cls(best_f1=float(d.get("best_f1", -1.0)), best_step=d.get("best_step"),
               best_fields=dict(d.get("best_fields") or {}),
               method={k: v for k, v in d.items() if k not in cls._OWN})


@dataclasses.dataclass
class Run:
  """What every stage of a run shares; built once by the trainer."""
  config: Any
  workdir: str
  mesh: Any
  model: Any
  normalize: Callable[[jax.Array], jax.Array]
  train_src: Any
  val_src: Any
  sample_shape: tuple[int, ...]
  writer: Any
  inference: "ModelInference"

  @property
  def is_main(self) -> bool:
    return jax.process_index() == 0


@dataclasses.dataclass
class Loop:
  """The stage in progress. Hooks may replace `state`, `data` and `meta`; `sync()` reads the
  pending step's metrics (stopping on a non-finite loss) and must precede any save; `save(step)`
  writes a latest checkpoint of all of it now."""
  stage: Stage
  state: Any
  data: Iterator[dict[str, np.ndarray]]
  meta: RunMeta
  checkpointer: checkpointing.Checkpointer
  sync: Callable[[], None]
  save: Callable[[int], None]


class Predictor(Protocol):
  """A trained model (or a training-free method) ready for `jaxcd.evaluate` / `jaxcd.predict`."""
  info: dict[str, Any]  # checkpoint, step and the best checkpoint's row fields

  def evaluate(self, source, desc: str) -> dict: ...

  def change_score(self, a_BxHxWxC: np.ndarray, b_BxHxWxC: np.ndarray) -> Any:
    """BxHxW change score in [0, 1]; > 0.5 exactly where the pixel is classed as change."""


def share(part: int, whole: int, pairs: int, multiple: int = 1) -> int:
  """`part`'s share of `whole` scaled to `pairs`, in multiples of `multiple` (the devices, which
  each take an equal share of every stream), leaving at least one multiple on either side."""
  units = pairs // multiple
  return multiple * max(1, min(units - 1, round(units * part / whole)))


class Method:
  """Supervised training; subclasses override what their algorithm changes."""
  name = "supervised"
  trains = True  # False: nothing to train (e.g. CVA); the loop only runs the final evaluation

  def __init__(self, config):
    self.config = config

  # --- set-up ----------------------------------------------------------------------------------

  def check_config(self) -> None:
    """Raises ConfigError for the method's own fields (the loop's fields are checked by it)."""

  def build_model(self):
    """The network the state holds (it may carry training-only parameters, e.g. RCR's auxiliary
    decoders); `jaxcd.evaluate` and `jaxcd.predict` restore checkpoints into it too."""
    return state_lib.build_model(self.config)

  def stages(self, run: Run) -> list[Stage]:
    c = self.config
    return [Stage("train", int(c.num_steps), eval_every=int(c.eval_every))]

  def optimizer(self, run: Run, stage: Stage) -> tuple[optax.GradientTransformation, optax.Schedule]:
    return optim.make_optimizer(self.config.optim, stage.steps)

  def abstract_state(self, model, tx, sample_shape, mesh) -> Any:
    """ShapeDtypeStructs of the state this method's checkpoints hold: the target the final
    evaluation and `load_predictor` restore into (a method with more state overrides it)."""
    return state_lib.create_state(model, tx, sample_shape, self.config.seed, mesh, abstract=True)

  def init_state(self, run: Run, stage: Stage, tx) -> state_lib.TrainState:
    state = state_lib.create_state(run.model, tx, run.sample_shape, self.config.seed, run.mesh)
    return state_lib.init_pretrained(state, self.config)

  def train_step(self, run: Run, stage: Stage, state, tx) -> Callable:
    return self.make_step(run.model, tx, run.normalize, run.mesh, shardings_of(state), stage.steps)

  def batch_rows(self) -> int:
    """Pairs in one training batch (all streams)."""
    return int(self.config.input.batch_size)

  def resize_batch(self, pairs: int, multiple: int = 1) -> None:
    """Sets the config to `pairs` pairs per training batch (`batch_rows`), every stream keeping
    its share in multiples of `multiple` (the devices): how `jaxcd.bench --aot` sizes the step
    to a slice."""
    self.config.input.batch_size = int(pairs)

  def make_step(self, model, tx, normalize, mesh, state_shardings, steps_in_stage: int) -> Callable:
    """The jitted train step of a stage (also what `jaxcd.bench --method` times)."""
    return steps.make_train_step(model, tx, losses.from_config(self.config.loss), normalize,
                                 jax.random.key(self.config.seed), mesh, state_shardings)

  def data(self, run: Run, stage: Stage) -> pipeline.Streams:
    return pipeline.Streams({"train": train_stream(self.config, run.train_src,
                                                   self.config.input.batch_size,
                                                   self.config.seed)})

  # --- hooks -----------------------------------------------------------------------------------

  def restore(self, run: Run, loop: Loop, extra: dict[str, np.ndarray] | None) -> None:
    """After a resumed stage's state and meta are restored, before its data state is."""

  def start(self, run: Run, loop: Loop, resumed: bool) -> None:
    """Before the stage's first step; `resumed`: its state came from a checkpoint."""

  def eval_now(self, stage: Stage, step: int) -> bool:
    """Extra validation points besides every `stage.eval_every` steps and the stage's end."""
    return False

  def before_eval(self, run: Run, loop: Loop, step: int) -> dict[str, Any]:
    """Runs before each validation; returns extra columns for its row."""
    return {}

  def after_step(self, run: Run, loop: Loop, step: int) -> bool:
    """After step `step` (local) and its validation; True if it saved a checkpoint itself."""
    return False

  def row_fields(self, stage: Stage, step: int) -> dict[str, Any]:
    """Columns of the stage's train and val rows at global `step`."""
    return dict(stage.fields)

  def checkpoint_extra(self, loop: Loop, best: bool) -> dict[str, np.ndarray] | None:
    return None

  def close(self) -> None:
    """At the end of a run, also after an error (e.g. close a method's own checkpointers)."""

  # --- inference -------------------------------------------------------------------------------

  @property
  def eval_classes(self) -> int:
    """Classes of the evaluation's confusion matrix."""
    return int(self.config.model.num_classes)

  def head(self, meta: RunMeta) -> Any:
    """Arrays (a pytree) from a checkpoint's meta that `classes`/`change_score` need."""
    return None

  def classes(self, logits_BxHxWxK: jax.Array, head: Any) -> jax.Array:
    """BxHxW evaluated class of each pixel (traced under jit)."""
    return jnp.argmax(logits_BxHxWxK, axis=-1)

  def change_score(self, logits_BxHxWxK: jax.Array, head: Any) -> jax.Array:
    """BxHxW change score in [0, 1], > 0.5 where `classes` is change (traced under jit)."""
    return jax.nn.softmax(logits_BxHxWxK.astype(jnp.float32), axis=-1)[..., 1]

  def final_splits(self) -> tuple[str, ...]:
    return tuple(self.config.eval_splits)

  def load_predictor(self, workdir: str, sample_shape: tuple[int, ...],
                     checkpoint: str = checkpointing.BEST) -> Predictor:
    """The trained model of `workdir` (its best checkpoint, or the latest one)."""
    c = self.config
    mesh = parallel.make_mesh()
    model = self.build_model()
    tx, _ = optim.make_optimizer(c.optim, max(int(c.num_steps), 1))
    abstract = self.abstract_state(model, tx, sample_shape, mesh)
    st, meta, step, which = checkpointing.restore_for_inference(workdir, abstract, checkpoint)
    meta = RunMeta.from_json(meta)
    inf = ModelInference(self, model, make_normalizer(c), mesh)
    info = {"checkpoint": which, "step": int(step),
            **(meta.best_fields if which == checkpointing.BEST else {})}
    return inf.bind(st.params, st.batch_stats, self.head(meta), info)


# --- inference on a model ------------------------------------------------------------------------

class ModelInference:
  """A model's jitted evaluation step (confusion matrix of `method.classes`) and change score,
  compiled once per run; the head arrays are arguments, so a new change map recompiles nothing."""

  def __init__(self, method: Method, model, normalize, mesh):
    self.method, self.mesh, self.config = method, mesh, method.config
    k, ignore = method.eval_classes, int(self.config.loss.ignore_label)

    def logits(params, batch_stats, a, b):
      out, _ = state_lib.apply_model(model, params, batch_stats, normalize(a), normalize(b),
                                     train=False)
      return out["logits"]

    def eval_step(params, batch_stats, head, batch):
      pred = method.classes(logits(params, batch_stats, batch["image_a"], batch["image_b"]), head)
      return metrics_lib.confusion_matrix(pred, batch["label"], k, ignore,
                                          valid=batch["valid"][:, None, None])

    self.logits = logits
    self.eval_step = jax.jit(eval_step, out_shardings=parallel.replicated(mesh))
    self.score = jax.jit(lambda p, bs, head, a, b: method.change_score(logits(p, bs, a, b), head))

  def evaluate(self, params, batch_stats, head, source, desc: str) -> dict:
    step = lambda p, bs, batch: self.eval_step(p, bs, head, batch)  # noqa: E731
    score = lambda a, b: self.score(params, batch_stats, head, a, b)  # noqa: E731
    return steps.evaluate(step, params, batch_stats, source, self.config, self.mesh, desc,
                          num_classes=self.method.eval_classes, score=score)

  def bind(self, params, batch_stats, head, info: dict | None = None) -> "BoundModel":
    return BoundModel(self, params, batch_stats, head, dict(info or {}))


@dataclasses.dataclass
class BoundModel:
  """A `Predictor`: a model's inference with one set of variables and head arrays."""
  inference: ModelInference
  params: Any
  batch_stats: Any
  head: Any
  info: dict[str, Any]

  def evaluate(self, source, desc: str) -> dict:
    return self.inference.evaluate(self.params, self.batch_stats, self.head, source, desc)

  def change_score(self, a_BxHxWxC, b_BxHxWxC):
    return self.inference.score(self.params, self.batch_stats, self.head, a_BxHxWxC, b_BxHxWxC)


# --- helpers methods share -----------------------------------------------------------------------

def shardings_of(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda x: x.sharding, tree)


def train_stream(config, source, batch_size: int, seed: int, augment: Any = None,
                 crop: bool = True) -> Iterator[dict[str, np.ndarray]]:
  """This process's infinite stream of augmented training batches of `source` (grain)."""
  i = config.input
  return iter(pipeline.train_dataset(
      source, global_batch_size=batch_size, seed=seed,
      augment=i.augment if augment is None else augment, crop_size=i.crop_size if crop else 0,
      process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=i.worker_count, prefetch=i.prefetch))


def eval_every_auto(config, steps: int, per_stage: int) -> int:
  """`config.eval_every` if > 0, else `per_stage` evaluations spread over `steps`."""
  if config.eval_every > 0:
    return int(config.eval_every)
  return max(1, steps // int(per_stage))
