"""Reading PyTorch checkpoints into numpy (the only torch-facing I/O of the project)."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from medvlsm_jax.conversion.rules import ConversionError


def _to_numpy(t) -> np.ndarray:
    import torch

    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()
    return np.asarray(t)


def load_state_dict(path: str | os.PathLike, *, nested_key: str | None = "state_dict") -> dict[str, np.ndarray]:
    """Loads a checkpoint file into ``{key: numpy array}``.

    Accepts ``.safetensors`` and torch pickles (``.bin``, ``.pt``, ``.pth``; always with
    ``weights_only=True``). A training checkpoint of the form ``{"state_dict": {...}, "epoch": ...}``
    is unwrapped through ``nested_key``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except Exception:  # bf16 tensors cannot be read by the numpy backend
            from safetensors.torch import load_file as load_torch

            return {k: _to_numpy(v) for k, v in load_torch(path).items()}
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"{path}: cannot be read as a torch checkpoint with weights_only=True: {e}") from e
    if nested_key and isinstance(obj, Mapping) and nested_key in obj and isinstance(obj[nested_key], Mapping):
        obj = obj[nested_key]
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {k: _to_numpy(v) for k, v in obj.items()}
