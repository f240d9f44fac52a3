"""Augmentations: joint geometry keeps A, B and label aligned; strong ops change colours only."""
import colorsys

import numpy as np
import pytest
from PIL import Image

from jaxcd.data import augment
from jaxcd.errors import ConfigError


def blocky_record(seed: int = 0, size: int = 64, block: int = 8, bands: int = 3) -> dict:
  """A record whose label is a pixelwise function of A (label == A[..., 0] > 128, B = 255 - A).

  Blocks of constant value keep the relation true under interpolation except at block edges.
  """
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (size // block, size // block, bands), dtype=np.uint8)
  a = np.repeat(np.repeat(coarse, block, 0), block, 1)
  # Asymmetric content so that every flip/rotation gives a different array.
  a[:3, :5] = 255
  return {"image_a": a, "image_b": 255 - a, "label": (a[..., 0] > 128).astype(np.uint8),
          "id": f"r{seed}"}


def assert_aligned(out: dict):
  """Where the label is not ignore, it equals A[..., 0] > 128 and B == 255 - A."""
  keep = out["label"] != 255
  assert keep.sum() >= min(out["label"].size, 64 * 64) * 0.9
  a, b = out["image_a"].astype(int), out["image_b"].astype(int)
  np.testing.assert_array_equal(out["label"][keep], (a[..., 0] > 128)[keep])
  np.testing.assert_array_equal(b[keep], 255 - a[keep])


@pytest.mark.parametrize("name,crop", [("flip_rot", 0), ("flip_rot_crop", 40),
                                       ("flip_rot_crop", 96)])
def test_geometric_transforms_keep_pair_and_label_aligned(name, crop):
  rec = blocky_record()
  aug = augment.make_augment(name, crop)
  outs = [aug(rec, np.random.default_rng(s)) for s in range(16)]
  for out in outs:
    assert out["id"] == rec["id"]
    expected = crop or 64
    assert out["image_a"].shape == (expected, expected, 3) and out["image_a"].dtype == np.uint8
    assert out["label"].shape == (expected, expected) and out["label"].dtype == np.uint8
    assert_aligned(out)
  # The transform really moves pixels (the alignment check above is not vacuous).
  assert len({o["image_a"].tobytes() for o in outs}) > 4
  if crop > 64:  # padding: label 255, images filled with 0 there
    for out in outs:
      pad = out["label"] == 255
      assert pad.sum() == crop * crop - 64 * 64
      assert (out["image_a"][pad] == 0).all()


def test_padding_uses_the_fill_per_band():
  rec = blocky_record(size=16, block=4)
  out = augment.make_augment("flip_rot_crop", 24, image_fill=(10, 20, 30))(
      rec, np.random.default_rng(0))
  pad = out["label"] == 255
  assert pad.sum() == 24 * 24 - 16 * 16
  np.testing.assert_array_equal(out["image_a"][pad], np.tile([10, 20, 30], (pad.sum(), 1)))


def test_flip_rot_covers_the_eight_dihedral_images():
  rec = blocky_record()
  seen = {augment.FlipRot()(rec, np.random.default_rng(s))["image_a"].tobytes() for s in range(200)}
  assert len(seen) == 8


def test_rescale_keeps_alignment_and_changes_scale():
  rec = blocky_record(block=16)
  aug = augment.make_augment("flip_rot_scale_crop", 48, scale_range=(0.6, 1.8))
  mismatches = []
  for s in range(12):
    out = aug(rec, np.random.default_rng(s))
    assert out["image_a"].shape == (48, 48, 3) and out["label"].shape == (48, 48)
    assert set(np.unique(out["label"])) <= {0, 1, 255}  # nearest neighbour: no new label values
    keep = out["label"] != 255
    a0 = out["image_a"][..., 0]
    # Bilinear images blur block edges; away from edges the relation must still hold.
    mismatches.append(((a0 > 128) != out["label"].astype(bool))[keep].mean())
    b = out["image_b"].astype(int)
    assert np.abs(b + out["image_a"] - 255)[keep].max() <= 2  # B resampled like A (+-rounding)
  assert max(mismatches) < 0.1
  # A misaligned label (e.g. transposed) would disagree on about half the pixels.
  bad = rec["label"].T
  assert ((rec["image_a"][..., 0] > 128) != bad).mean() > 0.3


def test_resize_bilinear_identity_and_constant():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
  np.testing.assert_array_equal(augment.resize_bilinear(x, 20, 30), x)
  c = np.full((10, 10, 2), 77, np.uint8)
  np.testing.assert_array_equal(augment.resize_bilinear(c, 23, 7), np.full((23, 7, 2), 77))
  lab = rng.integers(0, 2, (9, 9), dtype=np.uint8)
  up = augment.resize_nearest(lab, 27, 27)
  np.testing.assert_array_equal(up[1::3, 1::3], lab)  # 3x nearest: each pixel becomes a 3x3 block
  # Upsampling by 2 with half-pixel centres: output pixel 1 sits at input 0.25.
  ramp = np.array([[0, 100]], np.uint8)[..., None]
  assert augment.resize_bilinear(ramp, 1, 4)[0, :, 0].tolist() == [0, 25, 75, 100]


def test_strong_changes_colours_independently_but_not_geometry():
  rec = blocky_record()
  gray = np.repeat(rec["image_a"][..., :1], 3, axis=-1)  # R=G=B so hue/saturation are no-ops
  rec = dict(rec, image_a=gray, image_b=gray.copy())
  strong = augment.StrongAugment(p_jitter=1.0, p_cutout=0.0)
  ref = gray[..., 0].astype(np.float64).ravel()
  flipped = gray[::-1, :, 0].astype(np.float64).ravel()
  differ = 0
  for s in range(10):
    out = strong(rec, np.random.default_rng(s))
    np.testing.assert_array_equal(out["label"], rec["label"])
    for key in ("image_a", "image_b"):
      y = out[key].astype(np.float64).mean(-1).ravel()
      # Monotone colour changes and a mild blur keep the spatial pattern in place.
      assert np.corrcoef(y, ref)[0, 1] > 0.8
      assert np.corrcoef(y, ref)[0, 1] > np.corrcoef(y, flipped)[0, 1] + 0.3
    differ += np.abs(out["image_a"].astype(int) - out["image_b"]).mean() > 2
  assert differ >= 8  # A and B get their own random parameters


def test_cutout_is_shared_and_ignored_in_label():
  rec = blocky_record()
  rec["label"][:] = 1  # all change: a region marked "change" by the cutout would go unnoticed
  cut = augment.StrongAugment(p_jitter=0, p_gray=0, p_blur=0, p_cutout=1.0)
  for s in range(10):
    out = cut(rec, np.random.default_rng(s))
    box = out["label"] == 255
    ys, xs = np.nonzero(box)
    assert box.sum() >= 0.02 * 64 * 64 * 0.5
    # The ignored region is one rectangle ...
    assert box.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    assert (out["label"][~box] == 1).all()
    # ... and exactly where A and B were overwritten (random fill; a pixel may keep its value).
    for key in ("image_a", "image_b"):
      changed = (out[key] != rec[key]).any(-1)
      assert not changed[~box].any()
      assert changed[box].mean() > 0.95
  assert rec["label"].max() == 1  # the input record is not modified in place


def test_strong_on_multiband_and_small_images():
  rec = blocky_record(bands=4)
  aug = augment.make_augment("strong", 32)
  out = aug(rec, np.random.default_rng(3))
  assert out["image_a"].shape == (32, 32, 4) and out["image_a"].dtype == np.uint8
  tiny = blocky_record(size=4, block=2)
  out = augment.StrongAugment(p_blur=1.0, blur_sigma=(2.0, 2.0))(tiny, np.random.default_rng(0))
  assert out["image_a"].shape == (4, 4, 3)


def test_hue_shift_matches_colorsys():
  rng = np.random.default_rng(0)
  # Saturated colours: there the hue is well defined after 8-bit HSV quantisation.
  x = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
  x[..., 0], x[..., 2] = 250, 20
  got = np.asarray(augment.adjust_hue(Image.fromarray(x), 0.3)).astype(float)
  for px, g in zip(x.reshape(-1, 3), got.reshape(-1, 3)):
    h, s, v = colorsys.rgb_to_hsv(*(px / 255))
    want = np.array(colorsys.hsv_to_rgb((h + 0.3) % 1, s, v)) * 255
    # PIL keeps H in 8 bits: allow 3 hue steps (1/256 turn moves a channel by <= 6 levels).
    np.testing.assert_allclose(g, want, atol=18)


def test_color_jitter_strength_bounds_the_change():
  rng = np.random.default_rng(0)
  x = rng.integers(40, 200, (32, 32, 3), dtype=np.uint8)
  im = Image.fromarray(x)
  ratios = [np.asarray(augment.color_jitter(im, np.random.default_rng(s), 0.5, 0, 0, 0)).mean()
            / x.mean() for s in range(20)]
  assert 0.5 <= min(ratios) < 0.9 and 1.1 < max(ratios) <= 1.5  # brightness factor in [0.5, 1.5]
  same = augment.color_jitter(im, np.random.default_rng(1), 0, 0, 0, 0)
  np.testing.assert_array_equal(np.asarray(same), x)  # zero strength is the identity


def test_gaussian_blur_preserves_mean_and_smooths():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (32, 32, 2), dtype=np.uint8)
  y = augment.gaussian_blur(x, 1.5)
  assert y.shape == x.shape and y.dtype == np.uint8
  assert abs(y.mean() - x.mean()) < 2.0
  assert y.std() < 0.5 * x.std()
  c = np.full((8, 8, 1), 9, np.uint8)
  np.testing.assert_array_equal(augment.gaussian_blur(c, 0.7), c)


@pytest.mark.parametrize("name", augment.AUGMENTS)
def test_determinism_given_the_seed(name):
  rec = blocky_record()
  aug = augment.make_augment(name, 48)
  a = aug(rec, np.random.default_rng(7))
  b = aug(rec, np.random.default_rng(7))
  for k in ("image_a", "image_b", "label"):
    np.testing.assert_array_equal(a[k], b[k])
  if name != "none":
    outs = {aug(rec, np.random.default_rng(s))["image_a"].tobytes() for s in range(6)}
    assert len(outs) > 1


def test_unknown_name_names_the_field():
  with pytest.raises(ConfigError, match="input.augment"):
    augment.make_augment("mixup")
  with pytest.raises(ConfigError, match="input.crop_size"):
    augment.make_augment("flip_rot_crop", -1)
