"""Overlays of predicted (and ground-truth) masks on images, for predict and evaluation."""

from __future__ import annotations

import numpy as np
from PIL import Image

PRED_COLOR = (255, 0, 0)
TARGET_COLOR = (0, 255, 0)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour in the background (or on the image border)."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[2:, 1:-1] & m[:-2, 1:-1] & m[1:-1, 2:] & m[1:-1, :-2]
    return mask.astype(bool) & ~inner


def overlay(image: Image.Image, pred: np.ndarray, target: np.ndarray | None = None, alpha: float = 0.45
            ) -> Image.Image:
    """``image`` with ``pred`` tinted red; the ground-truth outline in green when ``target`` is
    given, else the prediction's own outline in red."""
    img = np.asarray(image.convert("RGB"), np.float32).copy()
    pred = pred.astype(bool)
    img[pred] = (1 - alpha) * img[pred] + alpha * np.asarray(PRED_COLOR, np.float32)
    if target is None:
        img[boundary(pred)] = PRED_COLOR
    else:
        img[boundary(target)] = TARGET_COLOR
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))
