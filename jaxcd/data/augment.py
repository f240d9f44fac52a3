"""Per-record augmentations of bitemporal pairs (numpy and PIL, on the host).

Every transform is a callable `(record, rng) -> record` on records
`{'image_a': uint8 HxWxC, 'image_b': uint8 HxWxC, 'label': uint8 HxW, 'id': str}`,
the signature of grain's `MapDataset.random_map`; all randomness comes from the
`np.random.Generator` passed in, so a pipeline seeded the same way reproduces its batches.

Geometric transforms move image_a, image_b and label together (labels with nearest neighbour,
padding with the ignore label 255). Strong transforms (RCL) change the colours of A and B
independently and never their geometry; the cutout is shared by A and B and marks its region
as ignore in the label. Colour jitter and grayscale are defined for RGB only: on images whose band
count C is not 3 they are skipped (blur and cutout still apply), because the meaning of the bands
of a multispectral image is unknown here.

Transforms are small classes rather than closures so that grain can pickle them into worker
processes.
"""
import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from jaxcd.errors import ConfigError

Record = dict[str, Any]
Augment = Callable[[Record, np.random.Generator], Record]
Fill = float | Sequence[float]

IGNORE_LABEL = 255
AUGMENTS = ("none", "flip_rot", "flip_rot_crop", "flip_rot_scale_crop", "strong")


def _joint(record: Record, fn: Callable[[np.ndarray], np.ndarray]) -> Record:
  """Applies the same spatial op to A, B and label (label as HxWx1 so ops see one layout)."""
  out = dict(record)
  out["image_a"] = fn(record["image_a"])
  out["image_b"] = fn(record["image_b"])
  out["label"] = fn(record["label"][..., None])[..., 0]
  return out


# ---------------------------------------------------------------------------------------------
# Geometric (joint) transforms.


@dataclasses.dataclass(frozen=True)
class FlipRot:
  """Random horizontal flip, vertical flip and rot90 (k in 0..3), the dihedral group D4.

  keep_shape: a non-square pair is turned by 0 or 180 degrees only (the same draws), so it keeps
  its shape where no crop follows (a turned 64x96 pair would not batch with unturned ones).
  """
  keep_shape: bool = False

  def __call__(self, record: Record, rng: np.random.Generator) -> Record:
    hflip, vflip = rng.random(2) < 0.5
    k = int(rng.integers(0, 4))
    h, w = record["label"].shape
    if self.keep_shape and h != w:
      k &= 2

    def op(x_HxWxC: np.ndarray) -> np.ndarray:
      if hflip:
        x_HxWxC = x_HxWxC[:, ::-1]
      if vflip:
        x_HxWxC = x_HxWxC[::-1]
      return np.ascontiguousarray(np.rot90(x_HxWxC, k, axes=(0, 1)))

    return _joint(record, op)


def _pad_crop_offsets(size: int, target: int, rng: np.random.Generator) -> tuple[int, int]:
  """(padding before, crop start) along one axis: pad to >= target at a random place, then crop."""
  pad = max(target - size, 0)
  before = int(rng.integers(0, pad + 1))
  start = int(rng.integers(0, size + pad - target + 1))
  return before, start


def pad_crop(record: Record, height: int, width: int, rng: np.random.Generator,
             image_fill: Fill = 0) -> Record:
  """Random crop of A, B and label to height x width, padding first where the pair is smaller.

  Padded label pixels are 255 (ignore); padded image pixels are `image_fill` (a value or one
  per band, e.g. the data mean).
  """
  h, w = record["label"].shape
  pad_y, y0 = _pad_crop_offsets(h, height, rng)
  pad_x, x0 = _pad_crop_offsets(w, width, rng)

  def op(x_HxWxC: np.ndarray, fill: Fill) -> np.ndarray:
    if (h, w) != (height, width) or pad_y or pad_x:
      canvas = np.empty((max(h, height), max(w, width), x_HxWxC.shape[-1]), x_HxWxC.dtype)
      canvas[...] = np.round(np.asarray(fill, np.float64))  # broadcasts over bands
      canvas[pad_y:pad_y + h, pad_x:pad_x + w] = x_HxWxC
      x_HxWxC = canvas[y0:y0 + height, x0:x0 + width]
    return np.ascontiguousarray(x_HxWxC)

  out = dict(record)
  out["image_a"] = op(record["image_a"], image_fill)
  out["image_b"] = op(record["image_b"], image_fill)
  out["label"] = op(record["label"][..., None], IGNORE_LABEL)[..., 0]
  return out


@dataclasses.dataclass(frozen=True)
class RandomCrop:
  """Random crop to crop_size x crop_size (padding with 255 in the label if smaller)."""
  crop_size: int
  image_fill: Fill = 0

  def __call__(self, record: Record, rng: np.random.Generator) -> Record:
    return pad_crop(record, self.crop_size, self.crop_size, rng, self.image_fill)


def _per_band(x_HxWxC: np.ndarray, fn: Callable[[Image.Image], Image.Image]) -> np.ndarray:
  """Applies a PIL op to each band as an 8-bit image, so any band count works."""
  return np.stack([np.asarray(fn(Image.fromarray(x_HxWxC[..., c]))) for c in
                   range(x_HxWxC.shape[-1])], axis=-1)


def resize_bilinear(x_HxWxC: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of a uint8 image (PIL: pixel-centre aligned, antialiased when shrinking)."""
  return _per_band(x_HxWxC, lambda im: im.resize((width, height), Image.Resampling.BILINEAR))


def resize_nearest(x_HxW: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize with the same pixel grid as `resize_bilinear` (labels)."""
  return np.asarray(Image.fromarray(x_HxW).resize((width, height), Image.Resampling.NEAREST))


@dataclasses.dataclass(frozen=True)
class RandomRescale:
  """Random rescale by a factor in `scale_range`, then random crop/pad back to the target size.

  The target is crop_size x crop_size, or the input size when crop_size is 0.
  """
  scale_range: tuple[float, float] = (0.5, 2.0)
  crop_size: int = 0
  image_fill: Fill = 0

  def __call__(self, record: Record, rng: np.random.Generator) -> Record:
    h, w = record["label"].shape
    s = float(rng.uniform(*self.scale_range))
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    out = dict(record)
    out["image_a"] = resize_bilinear(record["image_a"], nh, nw)
    out["image_b"] = resize_bilinear(record["image_b"], nh, nw)
    out["label"] = resize_nearest(record["label"], nh, nw)
    th, tw = (self.crop_size, self.crop_size) if self.crop_size else (h, w)
    return pad_crop(out, th, tw, rng, self.image_fill)


# ---------------------------------------------------------------------------------------------
# Strong (photometric, RCL) transforms. PIL ops on uint8 images, as in torchvision's PIL path and
# ST++/UniMatch (RCL's code base): fast C code with the reference implementations' rounding.


def adjust_hue(im: Image.Image, shift: float) -> Image.Image:
  """Rotates the hue of an RGB image by `shift` turns (torchvision's PIL adjust_hue)."""
  h, s, v = im.convert("HSV").split()
  h = Image.fromarray((np.asarray(h).astype(np.int16) + round(shift * 255)).astype(np.uint8))
  return Image.merge("HSV", (h, s, v)).convert("RGB")


def color_jitter(im: Image.Image, rng: np.random.Generator, brightness: float,
                 contrast: float, saturation: float, hue: float) -> Image.Image:
  """torchvision-style ColorJitter of an RGB image: the four ops in a random order.

  An op of strength 0 is skipped, as in torchvision (the HSV round trip of hue is lossy).
  """
  strengths = (brightness, contrast, saturation, hue)
  factors = (rng.uniform(max(0, 1 - brightness), 1 + brightness),
             rng.uniform(max(0, 1 - contrast), 1 + contrast),
             rng.uniform(max(0, 1 - saturation), 1 + saturation),
             rng.uniform(-hue, hue))
  for op in rng.permutation(4):
    f = float(factors[op])
    if not strengths[op]:
      continue
    if op == 0:
      im = ImageEnhance.Brightness(im).enhance(f)
    elif op == 1:
      im = ImageEnhance.Contrast(im).enhance(f)
    elif op == 2:
      im = ImageEnhance.Color(im).enhance(f)
    else:
      im = adjust_hue(im, f)
  return im


def gaussian_blur(x_HxWxC: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur with standard deviation `sigma` of every band (PIL's GaussianBlur)."""
  return _per_band(x_HxWxC, lambda im: im.filter(ImageFilter.GaussianBlur(radius=sigma)))


@dataclasses.dataclass(frozen=True)
class StrongAugment:
  """RCL's strong augmentation: per image colour jitter, grayscale, blur; a shared cutout.

  Cutout (as in ST++/UniMatch): a box of area fraction U(cutout_area) and aspect ratio
  U(cutout_ratio) filled with uniform random values, at the same place in A and B; its label
  pixels become 255 (ignore). The official RCL code marks them as change instead, which teaches
  the model that noise is change; we do not reproduce that.
  """
  brightness: float = 0.5
  contrast: float = 0.5
  saturation: float = 0.5
  hue: float = 0.25
  p_jitter: float = 0.8
  p_gray: float = 0.2
  p_blur: float = 0.5
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  p_cutout: float = 0.5
  cutout_area: tuple[float, float] = (0.02, 0.4)
  cutout_ratio: tuple[float, float] = (0.3, 1 / 0.3)

  def _photometric(self, x_HxWxC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Draw every decision even when it is skipped so A's draws never shift B's.
    do_jitter, do_gray, do_blur = rng.random(3) < (self.p_jitter, self.p_gray, self.p_blur)
    sigma = float(rng.uniform(*self.blur_sigma))
    jitter_rng = np.random.Generator(np.random.Philox(rng.integers(0, 2**63)))
    if x_HxWxC.shape[-1] == 3 and (do_jitter or do_gray):
      im = Image.fromarray(x_HxWxC)
      if do_jitter:
        im = color_jitter(im, jitter_rng, self.brightness, self.contrast, self.saturation,
                          self.hue)
      if do_gray:
        im = im.convert("L").convert("RGB")
      x_HxWxC = np.asarray(im)
    if do_blur:
      x_HxWxC = gaussian_blur(x_HxWxC, sigma)
    return x_HxWxC

  def cutout_box(self, height: int, width: int,
                 rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of a random box inside height x width."""
    area = rng.uniform(*self.cutout_area) * height * width
    ratio = rng.uniform(*self.cutout_ratio)
    bh = min(height, max(1, round(math.sqrt(area * ratio))))
    bw = min(width, max(1, round(math.sqrt(area / ratio))))
    y0 = int(rng.integers(0, height - bh + 1))
    x0 = int(rng.integers(0, width - bw + 1))
    return y0, x0, y0 + bh, x0 + bw

  def __call__(self, record: Record, rng: np.random.Generator) -> Record:
    out = dict(record)
    out["image_a"] = self._photometric(record["image_a"], rng)
    out["image_b"] = self._photometric(record["image_b"], rng)
    if rng.random() < self.p_cutout:
      y0, x0, y1, x1 = self.cutout_box(*record["label"].shape, rng)
      for key in ("image_a", "image_b"):
        x = out[key].copy()  # never write into the source's arrays
        x[y0:y1, x0:x1] = rng.integers(0, 256, x[y0:y1, x0:x1].shape, dtype=np.uint8)
        out[key] = x
      label = out["label"].copy()
      label[y0:y1, x0:x1] = IGNORE_LABEL
      out["label"] = label
    return out


# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Compose:
  """Applies transforms in order with the same generator (each draws what it needs)."""
  transforms: tuple[Augment, ...]

  def __call__(self, record: Record, rng: np.random.Generator) -> Record:
    for t in self.transforms:
      record = t(record, rng)
    return record


def make_augment(name: str, crop_size: int = 0, *,
                 scale_range: tuple[float, float] = (0.5, 2.0),
                 image_fill: Fill = 0, field: str = "input.augment") -> Augment:
  """Builds a named augmentation `(record, rng) -> record`.

  - "none": identity.
  - "flip_rot": joint flips and rot90.
  - "flip_rot_crop": flip_rot, then a random crop_size crop (no crop when crop_size is 0).
  - "flip_rot_scale_crop": flip_rot, random rescale in `scale_range`, then crop/pad back to
    crop_size (or to the input size when crop_size is 0).
  - "strong": flip_rot (+ crop when crop_size > 0), then RCL's StrongAugment.
  `image_fill` is the image value of padded pixels (e.g. the data mean). Without a crop after it
  the rotation keeps the shape of non-square pairs (`FlipRot.keep_shape`).
  """
  if crop_size < 0:
    raise ConfigError(f"input.crop_size: must be >= 0, got {crop_size}")
  crop: tuple[Augment, ...] = (RandomCrop(crop_size, image_fill),) if crop_size else ()
  flip_rot = FlipRot(keep_shape=not crop)
  if name == "none":
    return Compose(())
  if name == "flip_rot":
    return FlipRot(keep_shape=True)
  if name == "flip_rot_crop":
    return Compose((flip_rot,) + crop)
  if name == "flip_rot_scale_crop":
    lo, hi = scale_range
    if not 0 < lo <= hi:
      raise ConfigError(f"input.scale_range: need 0 < low <= high, got {scale_range}")
    return Compose((flip_rot, RandomRescale(tuple(scale_range), crop_size, image_fill)))
  if name == "strong":
    return Compose((flip_rot,) + crop + (StrongAugment(),))
  raise ConfigError(f"{field}: unknown augmentation {name!r}; known: {', '.join(AUGMENTS)}")


def output_size(augment: Augment) -> int | None:
  """The side of every output of `augment` (it ends in a crop), 0 if its outputs keep the input's
  shape, None if unknown (a callable of the caller's, unless it has an `output_size`)."""
  if isinstance(augment, (RandomCrop, RandomRescale)):
    return augment.crop_size
  if isinstance(augment, FlipRot):
    return 0 if augment.keep_shape else None
  if isinstance(augment, StrongAugment):
    return 0
  if isinstance(augment, Compose):
    size: int | None = 0
    for t in augment.transforms:
      if isinstance(t, FlipRot) and size:
        continue  # turning a square keeps it
      s = output_size(t)
      size = size if s == 0 else s
    return size
  return getattr(augment, "output_size", None)
