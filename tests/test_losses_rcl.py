"""RCL's contrastive loss against hand-computed values and the official code's formula."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcd import losses


def _logits(p_change):
  """Logits whose softmax is exactly (1 - p, p)."""
  p = np.asarray(p_change, np.float64)
  return jnp.asarray(np.log(np.stack([1 - p, p], axis=-1)), jnp.float32)


def test_hand_computed_example():
  # 1 pair of 2x2 pixels. Change probabilities of the real pair P_1 and the no-change pair N_1:
  p1 = [[[0.1, 0.8], [0.5, 0.7]]]
  n1 = [[[0.4, 0.3], [0.9, 0.2]]]
  label = jnp.asarray([[[0, 1], [255, 1]]], jnp.uint8)
  # (0,0) unchanged: (P_0 - N_0)^2 = (0.9 - 0.6)^2                          = 0.09
  # (0,1) changed:   (P_1 - N_0)^2 + (P_0 - N_1)^2 = (0.8-0.7)^2 + (0.2-0.3)^2 = 0.02
  # (1,0) ignored (255)
  # (1,1) changed:   (0.7 - 0.8)^2 + (0.3 - 0.2)^2                           = 0.02
  # divided by the 3 labelled pixels
  want = (0.09 + 0.02 + 0.02) / 3
  got = losses.contrastive_loss(_logits(p1), _logits(n1), label)
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_zero_when_the_pairs_behave():
  # Real pair predicts its label, the no-change pair predicts "no change" everywhere.
  label = np.array([[[0, 1, 1], [0, 0, 1]]], np.uint8)
  p = np.where(label == 1, 1 - 1e-7, 1e-7)
  assert float(losses.contrastive_loss(_logits(p), _logits(np.full_like(p, 1e-7)),
                                       jnp.asarray(label))) < 1e-10
  # Maximal disagreement: changed pixels where the companion also says "change".
  bad = losses.contrastive_loss(_logits(p), _logits(np.full_like(p, 1 - 1e-7)), jnp.asarray(label))
  # unchanged: (1 - 0)^2 = 1 each (3 pixels); changed: (1-0)^2 + (0-1)^2 = 2 each (3 pixels)
  assert float(bad) == pytest.approx((3 * 1 + 3 * 2) / 6, rel=1e-5)


def _official(p_BxKxHxW, n_BxKxHxW, m_BxHxW):
  """main.py `comtrastive_loss` in numpy (softmax already taken, no [:5] slicing)."""
  pos = (p_BxKxHxW[:, 0] - n_BxKxHxW[:, 0]) ** 2 * (1 - m_BxHxW)
  neg1 = (p_BxKxHxW[:, 0] - n_BxKxHxW[:, 1]) ** 2 * m_BxHxW
  neg2 = (p_BxKxHxW[:, 1] - n_BxKxHxW[:, 0]) ** 2 * m_BxHxW
  return (pos + neg1 + neg2).mean()


def test_matches_the_official_code_without_ignored_pixels():
  rng = np.random.default_rng(0)
  lp, ln = rng.normal(size=(2, 3, 5, 7, 2)) * 2
  m = (rng.random((3, 5, 7)) < 0.3).astype(np.uint8)
  sm = lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)
  want = _official(sm(lp).transpose(0, 3, 1, 2), sm(ln).transpose(0, 3, 1, 2), m)
  got = losses.contrastive_loss(jnp.asarray(lp, jnp.float32), jnp.asarray(ln, jnp.float32),
                                jnp.asarray(m))
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_all_ignored_is_zero_and_two_classes_only():
  z = jnp.zeros((1, 2, 2, 2))
  assert float(losses.contrastive_loss(z, z, jnp.full((1, 2, 2), 255, jnp.uint8))) == 0.0
  with pytest.raises(ValueError, match="2 classes"):
    losses.contrastive_loss(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2, 3)),
                            jnp.zeros((1, 2, 2), jnp.uint8))
