"""Defaults shared by every config in `configs/`; each config file overrides a few fields.

Field groups: `data` (the source and its options), `input` (batching and augmentation),
`model`, `optim`, `loss`, the schedule (`num_steps`, `eval_every`, ...), and `method`.
"""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "supervised"  # jaxcd/methods/<method>.py: its METHOD plugs into jaxcd.trainer
  c.seed = 0  # seeds parameters, shuffling and augmentation

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic"  # a registered source: jaxcd.data.list_sources()
  c.data.data_dir = ""  # dataset root for on-disk sources; unused by 'synthetic'
  c.data.num_bands = 3  # bands per image; checked against the files
  # Bands fed to the network, as indices into the stored bands: () = as stored; (2, 1, 0) turns
  # RGB files into the BGR input of models trained with OpenCV (the official Dsfer-Net code).
  c.data.band_order = ()
  # Per-band normalisation in 0-255 space applied on device, after band_order (so mean/std are
  # in the fed order): x = (x[..., band_order] - mean) / std.
  c.data.mean = (127.5, 127.5, 127.5)
  c.data.std = (127.5, 127.5, 127.5)
  # The embedded synthetic scenes (no download): tile size and split sizes. Other sources ignore
  # these; configs of real datasets drop them with `on_dataset` (or replace `data` wholesale).
  c.data.image_size = 64
  c.data.num_train = 1000
  c.data.num_val = 100
  c.data.num_test = 200
  declare_options(c.data)

  c.input = ml_collections.ConfigDict()
  c.input.batch_size = 16  # global batch (summed over processes and devices)
  c.input.eval_batch_size = 32
  # Evaluation scores pairs larger than this window (and fixed-size models' inputs) with predict's
  # blended sliding window; `eval_overlap` is capped at a quarter of the window.
  c.input.eval_tile = 256
  c.input.eval_overlap = 64
  # Joint A/B/label augmentation: "none" | "flip_rot" | "flip_rot_crop" | "flip_rot_scale_crop";
  # "strong" adds RCL's photometric perturbations and cutout (jaxcd/data/augment.py).
  c.input.augment = "flip_rot"
  c.input.crop_size = 0  # random crop size for "flip_rot_crop" (0 = keep the size)
  c.input.worker_count = 0  # grain worker processes (0 = in-process)
  c.input.prefetch = 2  # host-side batches read ahead

  c.model = ml_collections.ConfigDict()
  c.model.name = "fc_siam_diff"  # a registered model: jaxcd.models.list_models()
  c.model.num_classes = 2

  c.init = ml_collections.ConfigDict()
  # Local file with ImageNet weights for the model's backbone (torchvision names; .pth needs the
  # `torch` extra, .safetensors/.npz do not). Empty = random initialisation. No download, ever.
  c.init.backbone = ""

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"  # "adam" | "adamw" | "sgd"
  c.optim.lr = 1e-3
  c.optim.schedule = "constant"  # "constant" | "poly" | "linear" | "cosine"
  c.optim.poly_power = 0.9
  c.optim.warmup_steps = 0
  c.optim.weight_decay = 0.0  # L2 added to the gradient (Adam/SGD) or decoupled (AdamW)
  c.optim.momentum = 0.9  # SGD only
  c.optim.grad_clip = 0.0  # global-norm clipping (0 = off)

  c.loss = ml_collections.ConfigDict()
  c.loss.class_weights = ()  # per-class CE weights; () = unweighted
  c.loss.ignore_label = 255

  c.dtype = "float32"  # compute dtype: "float32" | "bfloat16" (params stay float32)
  c.num_steps = 1000
  c.log_every = 50  # training-loss rows in metrics.jsonl
  c.eval_every = 250  # validation every N steps; the best val F1 is kept
  c.checkpoint_every = 250
  c.keep_checkpoints = 2  # latest checkpoints kept besides the best one
  # Checkpoint writes overlap the next steps (orbax's async save; read-backs wait for them).
  # False: each save returns once committed.
  c.async_checkpoints = True
  c.eval_splits = ("test",)  # splits evaluated with the best checkpoint at the end
  c.distributed = False  # call jax.distributed.initialize() (set by launch/ scripts)
  c.progress = True  # tqdm progress bar on process 0
  return c


def declare_options(data: ml_collections.ConfigDict) -> None:
  """Adds every option source `data.name` declares (`jaxcd.data.source_options`) that `data`
  lacks, with its typed default: each is then settable as `--config.data.X=...`, typed as
  declared (so `label_encoding=1_2` stays a string)."""
  from jaxcd.data import source_options
  for key, default in source_options(data.name).items():
    if key not in data:
      data[key] = default


def on_dataset(c: ml_collections.ConfigDict, name: str, data_dir: str = "") -> None:
  """Points `c.data` at source `name`: drops the previous source's options (so
  `--config.data.num_train=...` fails loudly instead of being ignored, and an option both take,
  e.g. `ratios`, gets the new source's default rather than the old one's value), sets data_dir
  and declares the new source's options. Pipeline fields (mean, std, band_order, num_bands) are
  kept."""
  from jaxcd.data import source_options
  from jaxcd.data.registry import PIPELINE_FIELDS
  source_options(name)  # an unknown name fails here, naming config.data.name
  keep = set(PIPELINE_FIELDS) | {"num_bands"}
  for k in list(c.data.keys()):
    if k not in keep:
      del c.data[k]
  c.data.name = name
  c.data.data_dir = data_dir
  declare_options(c.data)


def override_data(c: ml_collections.ConfigDict, items: list[tuple[str, str]]) -> None:
  """Applies command-line `--config.data.KEY=TEXT` overrides: `name` first (through `on_dataset`,
  so the new source's options exist and the old one's are gone), then each option typed as its
  declared default. An option the source does not declare is a one-line ConfigError."""
  from jaxcd.data import source_options
  from jaxcd.data.registry import parse_option, unknown_option
  with c.unlocked():
    for key, text in items:
      if key == "name" and text != c.data.name:
        source_options(text)  # an unknown name fails here, naming config.data.name
        on_dataset(c, text, c.data.data_dir)
    for key, text in items:
      flag = f"--config.data.{key}"
      if key not in c.data:
        declared = {k: c.data[k] for k in c.data}
        raise unknown_option(c.data.name, key, declared, flag)
      c.data[key] = parse_option(flag, text, c.data[key])


# The CPU budget the rival configs share with jaxcd.experiments.same_steps: 200 steps of 8 pairs
# (1.6 epochs of the synthetic training pairs). At 100 steps the models' F1 did not separate.
BUDGET_STEPS, BUDGET_BATCH = 200, 8


def step_budget(c: ml_collections.ConfigDict, steps: int = BUDGET_STEPS,
                batch: int = BUDGET_BATCH) -> None:
  """`steps` steps of `batch` pairs, one validation and one checkpoint at the end."""
  c.num_steps = steps
  c.input.batch_size = batch
  c.eval_every = steps
  c.checkpoint_every = steps


def sibling(config_file: str, name: str, *args):
  """`get_config(*args)` of configs/<name>.py next to `config_file`: variants start from a base
  config file and override a few fields (config files are not a package)."""
  import os
  return load(os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py"), *args)


def load(path: str, *args):
  """`get_config(*args)` of the config file at `path`."""
  import importlib.util
  import os
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"jaxcd_config_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(*args)
