"""Per-image segmentation metrics with MONAI semantics, and their aggregation.

* Dice and IoU follow ``monai.metrics.compute_dice`` / ``compute_iou`` with
  ``ignore_empty=False`` (as the original's ``BaseModule`` and ``scripts/eval_metrics.py``):
  an empty ground truth scores 1 when the prediction is empty too and 0 otherwise.
* HD95 follows ``monai.metrics.compute_hausdorff_distance(percentile=95)``: mask edges are
  ``mask XOR binary_erosion(mask)``, distances are Euclidean (pixels) from each edge pixel to
  the other mask's edge, and the result is the larger of the two directed 95th percentiles.
  When either mask is empty the distance is undefined: we return NaN (MONAI returns inf or
  NaN there) and the aggregates count and skip it.
* Aggregates are mean and sample standard deviation (``ddof=1``, pandas' ``std`` as in the
  original's ``eval_metrics.py``) over images.

The functions accept numpy or JAX arrays (boolean or {0, 1}) with the spatial axes last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage


def _xp(x: Any):
    return jnp if isinstance(x, jax.Array) else np


def dice_iou(pred: Any, target: Any) -> tuple[Any, Any]:
    """Dice and IoU of masks ``(..., H, W)`` -> two arrays of shape ``(...)``.

    ``target`` may be soft (values in [0, 1]): MONAI's ``compute_dice`` / ``compute_iou`` take
    products and sums of the float values, which is how the original's validation Dice scores
    binarised predictions against its soft ``ToTensor`` targets."""
    xp = _xp(pred)
    pred = pred.astype(xp.float32) if hasattr(pred, "astype") else xp.asarray(pred, xp.float32)
    target = target.astype(xp.float32)
    axes = (-2, -1)
    inter = xp.sum(pred * target, axis=axes)
    sizes = xp.sum(pred, axis=axes) + xp.sum(target, axis=axes)
    union = sizes - inter
    # MONAI: 2 * inter / sizes where sizes > 0 (sizes may be fractional with soft targets)
    dice = xp.where(sizes > 0, 2.0 * inter / xp.where(sizes > 0, sizes, 1.0), 1.0)
    iou = xp.where(union > 0, inter / xp.where(union > 0, union, 1.0), 1.0)
    return dice, iou


def _edges(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask)


def hd95(pred: np.ndarray, target: np.ndarray) -> float:
    """95th-percentile Hausdorff distance in pixels between two binary (H, W) masks."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if not pred.any() or not target.any():
        return math.nan
    edges_pred, edges_target = _edges(pred), _edges(target)
    to_target = ndimage.distance_transform_edt(~edges_target)[edges_pred]
    to_pred = ndimage.distance_transform_edt(~edges_pred)[edges_target]
    return float(max(np.percentile(to_target, 95), np.percentile(to_pred, 95)))


def image_metrics(pred: np.ndarray, target: np.ndarray, *, with_hd95: bool = True) -> dict[str, float]:
    """Dice, IoU (and HD95) of one binary prediction against its ground truth (same size)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {target.shape} differ in size")
    dice, iou = dice_iou(np.asarray(pred, bool), np.asarray(target, bool))
    out = {"dice": float(dice), "iou": float(iou)}
    if with_hd95:
        out["hd95"] = hd95(pred, target)
    return out


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample std (ddof=1) and counts of a metric over images, NaNs skipped."""
    arr = np.asarray(values, np.float64)
    finite = arr[np.isfinite(arr)]
    return {
        "mean": float(finite.mean()) if finite.size else math.nan,
        "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
        "n": int(finite.size),
        "n_undefined": int(arr.size - finite.size),
    }
