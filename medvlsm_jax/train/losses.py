"""Segmentation losses of the benchmark, per example (shape ``(B,)``) so that padded evaluation
batches can be masked.

* ``paper_faithful`` — what the original actually optimises for the CLIPSeg family: MONAI 1.1
  ``DiceCELoss(lambda_dice=1, lambda_ce=...)`` applied to ``sigmoid(logits)`` (``BaseModule.step``
  passes sigmoid outputs to the loss). With one channel MONAI's CE term is
  ``CrossEntropyLoss`` over a single class — ``log_softmax`` of one channel is 0 — so it is
  identically zero and the loss is the soft Dice of MONAI's ``DiceLoss`` defaults:
  ``1 - (2 * sum(p * y) + 1e-5) / (sum(p) + sum(y) + 1e-5)`` per example (``batch=False``,
  ``squared_pred=False``, ``smooth_nr = smooth_dr = 1e-5``), averaged over the batch.
* ``corrected`` — the loss the paper describes (§3.4): the same soft Dice (weight 1) plus
  binary cross-entropy with logits (weight 0.2).
* ``bce`` — binary cross-entropy (CRIS in the paper's text, §3.4). Computed from logits: equal
  to torch ``BCELoss(sigmoid(x))`` except that torch clamps ``log`` at -100 for saturated outputs.
  The released CRIS config (``configs/model/cris.yaml``) trains with
  ``DiceCELoss(lambda_dice=1.0, lambda_ce=0.2)`` through the same ``BaseModule.step``, i.e.
  ``paper_faithful`` (the ``released`` CRIS recipe uses it).
* ``tuned_dice`` — medvlsm's ``src.losses.TunedDiceLoss`` (``src/losses/tuned_dice_loss.py``,
  added in naamiinepal/medvlsm commit 2ebbb489f576c7572c281085d3fe6d00a1dc06fc and unchanged
  since; named by ``configs/model/{unet,unetpp,deeplabv3plus}.yaml``), the CNN baselines' loss,
  on ``sigmoid(logits)``. Per example it keeps the channels ("planes") whose target contains a 1
  and applies MONAI's ``DiceLoss`` (defaults) to them; the batch loss is the sum over examples
  divided by the batch size. With one channel: the soft Dice above for an example with a
  non-empty mask. For an empty mask PyTorch computes the mean of an empty tensor: its loss *value*
  is NaN (and so is the batch's), but its gradient is zero and the example still counts in the
  denominator. Here such an example contributes 0, so ``mean`` over the batch has exactly the
  original gradient, and its value whenever no mask in the batch is empty (BUSI's normal cases,
  CheXlocalize). The mask test is the original's ``1 in plane.unique()`` (``target == 1``).

Targets may be soft (the original's ``ToTensor`` mask values, :mod:`medvlsm_jax.data.masks`):
every formula above takes them as they are, like MONAI and torch do.

:func:`batch_loss` reduces a batch that may hold padding rows (``valid=False``, the padded last
batch of an epoch) to the mean over its real examples: what torch computes on the short batch
the original's ``DataLoader(drop_last=False)`` yields (MONAI's ``reduction='mean'`` and
``BCELoss``'s mean are means over examples of equal size).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOSSES = ("paper_faithful", "corrected", "bce", "tuned_dice")
SMOOTH_NR = 1e-5
SMOOTH_DR = 1e-5


def soft_dice(probs: jax.Array, target: jax.Array) -> jax.Array:
    """MONAI ``DiceLoss`` (defaults, one channel) per example: ``(B, H, W) -> (B,)``."""
    axes = tuple(range(1, probs.ndim))
    intersection = jnp.sum(probs * target, axis=axes)
    denominator = jnp.sum(probs, axis=axes) + jnp.sum(target, axis=axes)
    return 1.0 - (2.0 * intersection + SMOOTH_NR) / (denominator + SMOOTH_DR)


def tuned_dice(probs: jax.Array, target: jax.Array) -> jax.Array:
    """medvlsm ``TunedDiceLoss`` for one channel, per example: ``(B, H, W) -> (B,)``; 0 for an
    example whose mask has no 1 (see the module docstring)."""
    axes = tuple(range(1, target.ndim))
    present = jnp.any(target == 1, axis=axes)
    return jnp.where(present, soft_dice(probs, target), 0.0)


def bce_with_logits(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Mean binary cross-entropy per example: ``(B, H, W) -> (B,)``."""
    axes = tuple(range(1, logits.ndim))
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, target), axis=axes)


def per_example_loss(kind: str, logits: jax.Array, target: jax.Array, *, dice_weight: float = 1.0,
                     bce_weight: float = 0.2) -> jax.Array:
    """Loss ``kind`` (one of :data:`LOSSES`) per example, in float32 (or float64 for float64 logits)."""
    dtype = jnp.promote_types(logits.dtype, jnp.float32)  # bfloat16 -> float32; float64 stays
    logits = logits.astype(dtype)
    target = target.astype(dtype)
    if kind == "paper_faithful":
        return dice_weight * soft_dice(jax.nn.sigmoid(logits), target)
    if kind == "corrected":
        return (dice_weight * soft_dice(jax.nn.sigmoid(logits), target)
                + bce_weight * bce_with_logits(logits, target))
    if kind == "bce":
        return bce_with_logits(logits, target)
    if kind == "tuned_dice":
        return tuned_dice(jax.nn.sigmoid(logits), target)
    raise ValueError(f"unknown loss {kind!r}; choose from {', '.join(LOSSES)}")


def batch_loss(kind: str, logits: jax.Array, target: jax.Array, valid: jax.Array | None = None,
               **kwargs: float) -> jax.Array:
    """Scalar loss of a batch: the mean of :func:`per_example_loss` over the rows where
    ``valid`` (all rows when ``valid`` is None)."""
    return masked_mean(per_example_loss(kind, logits, target, **kwargs), valid)


def masked_mean(values: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Mean of ``values`` (B,) over the rows where ``valid`` (all rows when None)."""
    if valid is None:
        return jnp.mean(values)
    w = valid.astype(values.dtype)
    return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


def check_loss(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose from {', '.join(LOSSES)}")
