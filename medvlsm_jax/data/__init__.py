"""Datasets (TFDS builders on ArrayRecord, no TensorFlow) and grain input pipelines.

Public API (imported lazily, so ``medvlsm_jax.data.tokenizers`` stays light)::

    make_loader(dataset, split, contract, prompt, batch_size, *, seed=42, ...) -> Loader
    build_dataset(name, *, manual_dir=None, data_dir=None, overwrite=False) -> builder
    original_mask(dataset, split, index, data_dir=None, threshold=0) -> bool (H, W)
    CATALOGUE (every dataset, described once), DATASETS, PAPER_DATASETS, POOLED, SPECS,
    make_tokenizer, DataError, ...
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "make_loader": "pipeline",
    "Loader": "pipeline",
    "build_dataset": "sources",
    "load_builder": "sources",
    "original_mask": "sources",
    "CATALOGUE": "catalogue",
    "DATASETS": "registry",
    "PAPER_DATASETS": "registry",
    "POOLED": "registry",
    "SPECS": "registry",
    "get_spec": "registry",
    "default_data_dir": "registry",
    "make_tokenizer": "preprocessing",
    "DataError": "errors",
    "DuplicateAnnotationsWarning": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
