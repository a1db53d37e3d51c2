"""Losses and metrics against their definitions (MONAI formulas) and torch where it defines them."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from medvlsm_jax.evaluation import metrics
from medvlsm_jax.train import losses


def _batch(seed=0, b=3, h=8, w=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, h, w)).astype(np.float32) * 3, (rng.random((b, h, w)) > 0.6).astype(np.float32)


def test_soft_dice_is_monai_dice_loss_formula():
    logits, y = _batch()
    p = 1 / (1 + np.exp(-logits))
    expected = [1 - (2 * (p[i] * y[i]).sum() + 1e-5) / (p[i].sum() + y[i].sum() + 1e-5) for i in range(3)]
    got = losses.per_example_loss("paper_faithful", jnp.asarray(logits), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


def test_single_channel_cross_entropy_of_dicece_is_zero():
    torch = pytest.importorskip("torch")
    logits, y = _batch(1)
    probs = torch.sigmoid(torch.from_numpy(logits))[:, None]
    ce = torch.nn.CrossEntropyLoss()(probs, torch.from_numpy(y)[:, None])  # MONAI DiceCE's CE term
    assert float(ce) == 0.0


def test_corrected_adds_bce_with_logits_like_torch():
    torch = pytest.importorskip("torch")
    logits, y = _batch(2)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(y), reduction="none").mean((1, 2)).numpy()
    dice = np.asarray(losses.per_example_loss("paper_faithful", jnp.asarray(logits), jnp.asarray(y)))
    got = np.asarray(losses.per_example_loss("corrected", jnp.asarray(logits), jnp.asarray(y)))
    np.testing.assert_allclose(got, dice + 0.2 * bce, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(losses.per_example_loss("bce", jnp.asarray(logits), jnp.asarray(y))),
                               bce, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.per_example_loss("focal", jnp.asarray(logits), jnp.asarray(y))


def test_dice_iou_monai_semantics_with_empty_masks():
    z, o = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    o[1:3, 1:3] = True
    half = o.copy()
    half[1, 1:3] = False
    cases = {"both empty": (z, z, 1.0, 1.0), "empty gt": (o, z, 0.0, 0.0), "empty pred": (z, o, 0.0, 0.0),
             "same": (o, o, 1.0, 1.0), "half": (half, o, 2 * 2 / 6, 2 / 4)}
    for name, (pred, gt, d, i) in cases.items():
        dice, iou = metrics.dice_iou(pred, gt)
        assert (float(dice), float(iou)) == pytest.approx((d, i)), name
        jd, ji = metrics.dice_iou(jnp.asarray(pred), jnp.asarray(gt))
        assert (float(jd), float(ji)) == pytest.approx((d, i)), name


def _brute_hd95(a, b):
    def edges(m):
        out = np.zeros_like(m)
        for y, x in zip(*np.nonzero(m)):
            nb = [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if abs(dy) + abs(dx) == 1]
            out[y, x] = any(not (0 <= v < m.shape[0] and 0 <= u < m.shape[1]) or not m[v, u] for v, u in nb)
        return np.argwhere(out)
    ea, eb = edges(a), edges(b)
    d = np.sqrt(((ea[:, None] - eb[None]) ** 2).sum(-1))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_hd95_matches_brute_force_and_nan_when_empty():
    yy, xx = np.mgrid[:30, :30]
    a = (yy - 12) ** 2 + (xx - 14) ** 2 <= 36
    b = (yy - 16) ** 2 + (xx - 12) ** 2 <= 49
    assert metrics.hd95(a, b) == pytest.approx(_brute_hd95(a, b))
    assert metrics.hd95(a, a) == 0.0
    assert math.isnan(metrics.hd95(a, np.zeros_like(a)))
    s = metrics.summarize([1.0, 2.0, 4.0, math.nan])
    assert s["mean"] == pytest.approx(7 / 3) and s["std"] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert (s["n"], s["n_undefined"]) == (3, 1)
