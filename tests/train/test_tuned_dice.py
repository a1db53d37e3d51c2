"""``tuned_dice`` against medvlsm's ``TunedDiceLoss`` (PyTorch reference code, see
``medvlsm_tuned_dice.py``): value and gradient with respect to the logits, as medvlsm calls it
(``loss_fn(sigmoid(logits), masks[:, None])``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medvlsm_jax.train import losses

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from tests.train.medvlsm_tuned_dice import TunedDiceLoss  # noqa: E402


def _torch(logits: np.ndarray, mask: np.ndarray):
    x = torch.from_numpy(logits.astype(np.float64)).requires_grad_(True)
    loss = TunedDiceLoss()(torch.sigmoid(x)[:, None], torch.from_numpy(mask.astype(np.float64))[:, None])
    (grad,) = torch.autograd.grad(loss, x)
    return loss.item(), grad.numpy()


def _ours(logits: np.ndarray, mask: np.ndarray):
    fn = lambda x: jnp.mean(losses.per_example_loss("tuned_dice", x, jnp.asarray(mask)))  # noqa: E731
    value, grad = jax.value_and_grad(fn)(jnp.asarray(logits))
    return float(value), np.asarray(grad)


def _batch(seed: int, b: int = 4, size: int = 24):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (b, size, size)).astype(np.float32)
    mask = (rng.random((b, size, size)) > rng.uniform(0.3, 0.95, (b, 1, 1))).astype(np.float32)
    return logits, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_and_gradient_match_medvlsm(seed):
    logits, mask = _batch(seed)
    assert mask.reshape(len(mask), -1).max(1).min() == 1  # every mask non-empty
    want, want_grad = _torch(logits, mask)
    got, got_grad = _ours(logits, mask)
    assert got == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-6 * np.abs(want_grad).max())
    # it is the soft Dice of the paper-faithful loss whenever no mask is empty
    assert got == pytest.approx(float(jnp.mean(losses.per_example_loss("paper_faithful", logits, mask))), rel=1e-6)


def test_empty_masks_have_no_gradient_but_count_in_the_mean():
    logits, mask = _batch(3)
    mask[1] = 0.0
    want, want_grad = _torch(logits, mask)
    got, got_grad = _ours(logits, mask)
    assert np.isnan(want)  # the original logs NaN for such a batch (mean of an empty tensor) ...
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-6 * np.abs(want_grad).max())
    assert not want_grad[1].any() and not got_grad[1].any()  # ... but trains on the other examples
    # and the finite value here: the other examples' Dice losses over the whole batch size
    keep = [0, 2, 3]
    rest, _ = _torch(logits[keep], mask[keep])
    assert got == pytest.approx(rest * 3 / 4, rel=1e-6)
    per = np.asarray(losses.per_example_loss("tuned_dice", logits, mask))
    assert per[1] == 0.0


def test_mask_test_is_the_originals_exact_one():
    """``1 in plane.unique()``: a soft target without an exact 1 counts as empty, like the original."""
    logits, mask = _batch(4, b=2)
    mask[0] *= 0.99
    want, want_grad = _torch(logits, mask)
    got, got_grad = _ours(logits, mask)
    assert np.isnan(want) and not got_grad[0].any()
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-6 * np.abs(want_grad).max())
