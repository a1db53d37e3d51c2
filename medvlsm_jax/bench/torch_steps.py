"""The PyTorch side of the side-by-side benchmarks: one way to hand a batch to torch, to cast
for AMP and to take an optimiser step, shared by every family's reference module
(``bench_clipseg``, ``bench_biomedclipseg``, ``bench_smp``). torch is imported on first use."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import numpy as np

_TEXT_KEYS = ("input_ids", "attention_mask")


def to_torch(batch: dict[str, np.ndarray], device: str) -> dict[str, Any]:
    """``batch`` on ``device``: NHWC ``pixel_values`` as NCHW, token ids and attention mask (when
    the model takes text) as int64, ``mask`` (when training) as it is."""
    import torch

    out = {"pixel_values": torch.from_numpy(batch["pixel_values"].transpose(0, 3, 1, 2).copy()).to(device)}
    for key in _TEXT_KEYS:
        if key in batch:
            out[key] = torch.from_numpy(batch[key].astype(np.int64)).to(device)
    if "mask" in batch:
        out["mask"] = torch.from_numpy(batch["mask"]).to(device)
    return out


def autocast(device: str, amp: bool):
    """bfloat16 autocast (AMP) when ``amp``, else nothing."""
    import torch

    return torch.autocast(device, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def train_step(loss_of: Callable[[], Any], params: Sequence[Any], opt: Any, *, grad_clip: float,
               device: str, amp: bool) -> Callable[[], Any]:
    """A zero-argument step: ``loss_of()`` under autocast, backward, gradient-norm clipping at
    ``grad_clip``, ``opt.step()``; returns the loss."""
    import torch

    def step():
        with autocast(device, amp):
            loss = loss_of()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        return loss
    return step
