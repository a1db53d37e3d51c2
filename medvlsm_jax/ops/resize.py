"""Resizing with PyTorch's exact semantics (``torch.nn.functional.interpolate``).

``jax.image.resize`` differs from torch in two ways that break parity: its cubic kernel uses
a=-0.5 (torch: a=-0.75) and it antialiases when downsampling (torch does not). Here every resize
is a pair of small interpolation matrices built on the host from torch's index formulas and
applied with ``einsum``: exact to float32 rounding, differentiable, and cheap for the sizes used
(position-embedding grids, logits back to original resolution).

Supported: ``bilinear`` and ``bicubic`` (``align_corners`` False/True, a=-0.75, border-clamped
taps like torch), ``nearest`` (torch's legacy floor rule) and ``nearest-exact``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["interpolation_matrix", "resize"]

_CUBIC_A = -0.75


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys cubic convolution weights for taps at offsets -1, 0, 1, 2 (torch's formula)."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@functools.lru_cache(maxsize=256)
def interpolation_matrix(in_size: int, out_size: int, method: str, align_corners: bool = False) -> np.ndarray:
    """(out_size, in_size) float64 matrix ``W`` so that ``y = W @ x`` resizes along one axis."""
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"sizes must be positive, got in={in_size} out={out_size}")
    dst = np.arange(out_size, dtype=np.float64)
    w = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    if method in ("nearest", "nearest-exact"):
        scale = in_size / out_size
        src = np.floor((dst + 0.5) * scale) if method == "nearest-exact" else np.floor(dst * scale)
        idx = np.minimum(src.astype(np.int64), in_size - 1)
        w[rows, idx] = 1.0
        return w
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * scale
    else:
        src = (dst + 0.5) * (in_size / out_size) - 0.5
    if method == "bilinear":
        if not align_corners:
            src = np.maximum(src, 0.0)
        i0 = np.floor(src).astype(np.int64)
        i0 = np.minimum(i0, in_size - 1)
        lam = src - i0
        i1 = np.minimum(i0 + 1, in_size - 1)
        np.add.at(w, (rows, i0), 1.0 - lam)
        np.add.at(w, (rows, i1), lam)
        return w
    if method == "bicubic":
        i0 = np.floor(src).astype(np.int64)
        t = src - i0
        coeffs = _cubic_weights(t)
        for k, off in enumerate((-1, 0, 1, 2)):
            idx = np.clip(i0 + off, 0, in_size - 1)
            np.add.at(w, (rows, idx), coeffs[:, k])
        return w
    raise ValueError(f"unknown interpolation method {method!r}")


def resize(
    x: jnp.ndarray,
    size: Sequence[int],
    *,
    axes: Sequence[int] = (1, 2),
    method: str = "bilinear",
    align_corners: bool = False,
) -> jnp.ndarray:
    """Resizes ``x`` along ``axes`` to ``size`` exactly like ``F.interpolate`` (no antialias).

    ``x`` is typically NHWC with ``axes=(1, 2)``. Integer inputs are only valid for the nearest
    methods and keep their dtype.
    """
    if len(size) != len(axes):
        raise ValueError(f"size {tuple(size)} and axes {tuple(axes)} differ in length")
    nearest = method in ("nearest", "nearest-exact")
    out = x if nearest or jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)
    for ax, n in zip(axes, size):
        ax = ax % out.ndim
        m = out.shape[ax]
        if m == n:  # every method is the identity at equal size (torch agrees)
            continue
        if nearest:
            idx = np.argmax(interpolation_matrix(m, int(n), method), axis=1)
            out = jnp.take(out, jnp.asarray(idx), axis=ax)
            continue
        w = jnp.asarray(interpolation_matrix(m, int(n), method, align_corners), dtype=out.dtype)
        out = jnp.moveaxis(jnp.tensordot(out, w, axes=([ax], [1])), -1, ax)
    return out
