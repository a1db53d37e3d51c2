"""Losses and metrics against their definitions (MONAI formulas) and torch where it defines them."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from medvlsm_jax.evaluation import metrics
from medvlsm_jax.train import losses
from tests.train.conftest import monai11


def _batch(seed=0, b=3, h=8, w=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, h, w)).astype(np.float32) * 3, (rng.random((b, h, w)) > 0.6).astype(np.float32)


def test_soft_dice_is_monai_dice_loss_formula():
    logits, y = _batch()
    p = 1 / (1 + np.exp(-logits))
    expected = [1 - (2 * (p[i] * y[i]).sum() + 1e-5) / (p[i].sum() + y[i].sum() + 1e-5) for i in range(3)]
    got = losses.per_example_loss("paper_faithful", jnp.asarray(logits), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


def test_paper_faithful_is_dicece_on_sigmoid_outputs_as_torch_computes_it():
    """The original's loss, rebuilt in torch: MONAI DiceCE(lambda_dice=1, lambda_ce=0.2) on
    sigmoid outputs = soft Dice + 0.2 * CrossEntropyLoss over one channel (which is 0)."""
    torch = pytest.importorskip("torch")
    logits, y = _batch(1)
    probs = torch.sigmoid(torch.from_numpy(logits))[:, None]
    target = torch.from_numpy(y)[:, None]
    inter, denom = (probs * target).sum((1, 2, 3)), probs.sum((1, 2, 3)) + target.sum((1, 2, 3))
    dice = (1 - (2 * inter + 1e-5) / (denom + 1e-5)).mean()
    ref = dice + 0.2 * torch.nn.CrossEntropyLoss()(probs, target)
    got = losses.batch_loss("paper_faithful", jnp.asarray(logits), jnp.asarray(y))
    assert float(got) == pytest.approx(float(ref), rel=1e-6)


def test_soft_dice_smoothing_on_empty_masks():
    """MONAI's smooth_nr = smooth_dr = 1e-5: an empty target predicted empty costs 0 (not NaN
    or 1), and on tiny masks the smoothing terms are visible."""
    empty_logits, empty = np.full((1, 8, 6), -30.0, np.float32), np.zeros((1, 8, 6), np.float32)
    got = float(losses.per_example_loss("paper_faithful", jnp.asarray(empty_logits), jnp.asarray(empty))[0])
    assert got == pytest.approx(0.0, abs=1e-3)
    logits, y = np.full((1, 8, 6), -30.0, np.float32), np.zeros((1, 8, 6), np.float32)
    y[0, 0, 0] = 1.0e-5  # an empty prediction against a tiny soft target: 1 - 1e-5 / 2e-5
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    want = 1 - (2 * (p * y).sum() + 1e-5) / (p.sum() + y.sum() + 1e-5)
    got = float(losses.per_example_loss("paper_faithful", jnp.asarray(logits), jnp.asarray(y))[0])
    assert got == pytest.approx(want, rel=1e-4) and want == pytest.approx(0.5, rel=1e-4)
    assert abs(want - (1 - 2 * (p * y).sum() / (p.sum() + y.sum()))) > 1e-3  # smoothing matters here


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


# ----------------------------------------------------------------- padded last batch (issue 15)

def _torch_short_batch_loss(torch, kind, logits, target):
    """The loss torch computes on the short batch the original's DataLoader yields: MONAI's
    single-channel DiceCE (soft Dice, mean over the batch; its CE term is zero) on sigmoid
    outputs, BCELoss (mean) and their sum for ``corrected``."""
    x = torch.from_numpy(logits).requires_grad_(True)
    y = torch.from_numpy(target)
    p = torch.sigmoid(x)
    inter, den = (p * y).sum((1, 2)), p.sum((1, 2)) + y.sum((1, 2))
    dice = (1 - (2 * inter + 1e-5) / (den + 1e-5)).mean()
    bce = torch.nn.functional.binary_cross_entropy(p, y)
    # medvlsm's TunedDiceLoss: the soft Dice of the examples whose mask holds a 1, summed over
    # the batch size (tests/train/medvlsm_tuned_dice.py has the verbatim original)
    per = 1 - (2 * inter + 1e-5) / (den + 1e-5)
    tuned = (per * (y == 1).flatten(1).any(1)).sum() / len(per)
    loss = {"paper_faithful": dice, "corrected": dice + 0.2 * bce, "bce": bce, "tuned_dice": tuned}[kind]
    loss.backward()
    return loss.item(), x.grad.numpy()


@pytest.mark.parametrize("kind", losses.LOSSES)
def test_padded_batch_loss_is_torchs_loss_on_the_short_batch(kind):
    import jax

    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 9, 7)).astype(np.float32) * 2
    target = np.where(rng.random((4, 9, 7)) > 0.6, rng.random((4, 9, 7)), 0).astype(np.float32)  # soft
    if kind == "tuned_dice":  # its masks are binary: a plane counts when it holds a 1
        target = (target > 0).astype(np.float32)
    logits[2:], target[2:] = 0, 0  # padding rows, as the pipeline writes them
    valid = np.array([True, True, False, False])
    want, want_grad = _torch_short_batch_loss(torch, kind, logits[:2].astype(np.float64), target[:2].astype(np.float64))
    fn = lambda x: losses.batch_loss(kind, x, jnp.asarray(target), jnp.asarray(valid))  # noqa: E731
    got, grad = jax.value_and_grad(fn)(jnp.asarray(logits))
    assert float(got) == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(np.asarray(grad)[:2], want_grad, rtol=1e-4, atol=1e-9)
    assert not np.asarray(grad)[2:].any()  # padding rows get no gradient
    assert float(losses.batch_loss(kind, jnp.asarray(logits), jnp.asarray(target))) != pytest.approx(want)


def test_dice_iou_on_soft_targets_is_monais():
    """The original's validation Dice: MONAI compute_dice(pred > thr, soft target)."""
    rng = np.random.default_rng(4)
    pred = rng.random((3, 6, 5)) > 0.5
    y = (rng.random((3, 6, 5)) * (rng.random((3, 6, 5)) > 0.7)).astype(np.float32)
    y[2], pred[2] = 0, False  # both empty: 1 (ignore_empty=False)
    inter, sy, sp = (pred * y).sum((1, 2)), y.sum((1, 2)), pred.sum((1, 2))
    dice, iou = metrics.dice_iou(pred, y)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(dice, np.where(sy + sp > 0, 2 * inter / (sy + sp), 1), rtol=1e-6)
        np.testing.assert_allclose(iou, np.where(sy + sp > 0, inter / (sy + sp - inter), 1), rtol=1e-6)
    monai = monai11("monai.metrics")
    torch = pytest.importorskip("torch")
    p, t = torch.from_numpy(pred)[:, None], torch.from_numpy(y)[:, None]
    np.testing.assert_allclose(dice, monai.compute_dice(p, t, ignore_empty=False, include_background=False)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(iou, monai.compute_iou(p, t, ignore_empty=False, include_background=False)[:, 0], rtol=1e-6)
