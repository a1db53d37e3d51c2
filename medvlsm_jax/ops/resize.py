"""Resizing with PyTorch's exact semantics (``torch.nn.functional.interpolate``).

``jax.image.resize`` differs from torch in two ways that break parity: its cubic kernel uses
a=-0.5 (torch: a=-0.75) and it antialiases when downsampling (torch does not). Here every resize
is a pair of small interpolation matrices built on the host from torch's index formulas and
applied with ``einsum``: exact to float32 rounding, differentiable, and cheap for the sizes used
(position-embedding grids, logits back to original resolution).

Supported: ``bilinear`` and ``bicubic`` (``align_corners`` False/True, a=-0.75, border-clamped
taps like torch), ``nearest`` (torch's legacy floor rule) and ``nearest-exact``.

The nearest methods pick source indices with torch's CPU arithmetic, not the exact rational
rule ``floor((i + 0.5) * in / out)`` (which disagrees with torch at some sizes, e.g. 416 -> 720
in 12 columns). ``ATen/native/cpu/UpSampleKernel.cpp`` has two kernels:

* the generic one (``HelperInterpNearest[Exact]::compute_indices_weights``): the scale
  ``in / out`` and the source coordinate ``scale * (i + 0.5) - 0.5`` (clamped at 0) are computed
  in the tensor's "opmath" type (double for float64 tensors, float32 for float32, float16,
  bfloat16 and uint8), then ``floorf(src + 0.5)``: the sum is taken in double and rounded to
  float32 before the floor (``nearest``: ``floorf(scale * i)``);
* the vectorised one (``ATen/native/UpSample.h``: ``nearest_exact_idx`` / ``nearest_idx``),
  whose scale is always float32: ``floorf((i + 0.5) * scale)`` with the product in double
  (``nearest``: ``floorf(i * scale)`` in float32, with exact shortcuts for ``out == in`` and
  ``out == 2 * in``). 2-D resizes use it when the output's height + width is at most 128, or
  when the input is channels-last with more than 3 channels (3-D: only the latter); 1-D
  resizes never do.

:func:`nearest_indices` reproduces both (tested against ``F.interpolate`` for every output size
1..2000 from 352 and 416, float32/float64/uint8); :func:`resize` chooses the kernel as torch
does and takes the index arithmetic from ``x``'s dtype unless ``compute_dtype`` says otherwise
(the original's evaluation resizes ``pred.double()``, so it uses float64).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["interpolation_matrix", "nearest_indices", "resize"]

_CUBIC_A = -0.75
_NEAREST = ("nearest", "nearest-exact")
#: torch's 2-D nearest kernels switch to the vectorised index rule at or below this output H + W.
VECTORIZED_MAX_OUTPUT_HW = 128


@functools.lru_cache(maxsize=1024)
def nearest_indices(in_size: int, out_size: int, method: str = "nearest-exact",
                    compute_dtype: str = "float32", vectorized: bool = False) -> np.ndarray:
    """Source index (int64, ``(out_size,)``) of each output position, as torch's CPU kernel
    computes it (see the module docstring). ``compute_dtype``: ``"float64"`` for a double
    tensor, ``"float32"`` otherwise; ``vectorized``: the ``UpSample.h`` rule."""
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"sizes must be positive, got in={in_size} out={out_size}")
    if method not in _NEAREST:
        raise ValueError(f"unknown nearest method {method!r}")
    i = np.arange(out_size)
    if vectorized:
        scale = np.float32(in_size) / np.float32(out_size)
        if method == "nearest-exact":  # floorf((i + 0.5) * scale): double product -> float
            src = ((i + 0.5) * np.float64(scale)).astype(np.float32)
        elif out_size == in_size:
            src = i
        elif out_size == 2 * in_size:
            src = i >> 1
        else:  # floorf(i * scale), float arithmetic
            src = i.astype(np.float32) * scale
    else:
        t = np.float64 if np.dtype(compute_dtype) == np.float64 else np.float32
        scale = t(in_size) / t(out_size)
        if method == "nearest-exact":
            real = np.maximum(scale * (i.astype(t) + t(0.5)) - t(0.5), t(0))
            src = (real.astype(np.float64) + 0.5).astype(np.float32)  # floorf(real + 0.5)
        else:
            src = (scale * i.astype(t)).astype(np.float32)  # floorf(scale * i)
    idx = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    idx.setflags(write=False)  # cached: shared by every caller
    return idx


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
    if method in _NEAREST:  # torch's generic kernel on a float32 tensor
        w[rows, nearest_indices(in_size, out_size, method)] = 1.0
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
    compute_dtype: str | None = None,
    torch_channels_last: bool = False,
) -> jnp.ndarray:
    """Resizes ``x`` along ``axes`` to ``size`` exactly like ``F.interpolate`` (no antialias).

    ``x`` is typically NHWC with ``axes=(1, 2)``. Integer inputs are only valid for the nearest
    methods and keep their dtype. Nearest methods only: ``compute_dtype`` is the dtype of the
    torch tensor being emulated (default ``x``'s; ``"float64"`` for torch's double
    arithmetic), and ``torch_channels_last`` says the emulated tensor is channels-last, which
    with more than 3 channels (the last axis of ``x``) selects torch's vectorised kernel.
    """
    if len(size) != len(axes):
        raise ValueError(f"size {tuple(size)} and axes {tuple(axes)} differ in length")
    nearest = method in _NEAREST
    if nearest:
        dtype = str(np.dtype(compute_dtype or x.dtype))
        vectorized = ((len(axes) == 2 and sum(int(n) for n in size) <= VECTORIZED_MAX_OUTPUT_HW)
                      or (len(axes) in (2, 3) and torch_channels_last and x.shape[-1] > 3))
    out = x if nearest or jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)
    for ax, n in zip(axes, size):
        ax = ax % out.ndim
        m = out.shape[ax]
        if m == n:  # every method is the identity at equal size (torch agrees)
            continue
        if nearest:
            idx = nearest_indices(m, int(n), method, dtype, vectorized)
            out = jnp.take(out, jnp.asarray(idx), axis=ax)
            continue
        w = jnp.asarray(interpolation_matrix(m, int(n), method, align_corners), dtype=out.dtype)
        out = jnp.moveaxis(jnp.tensordot(out, w, axes=([ax], [1])), -1, ax)
    return out
