"""Converted-model folders: ``model.json`` (family + config), Orbax ``params/``, tokenizer files.

This is the format ``medvlsm-convert`` writes and :func:`medvlsm_jax.load` reads. It holds no
torch objects; only numpy arrays saved with Orbax. Blocks a model runs as one scanned, stacked
module (:mod:`medvlsm_jax.ops.scan`) are saved and restored per block (``layers.0``,
``layers.1`` ...), the layout of every folder written before the blocks were stacked.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from medvlsm_jax.ops import scan as scan_lib

# every array a converted model carries: trainable parameters and BatchNorm statistics
_WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat)

MODEL_JSON = "model.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"


def _this_process_only() -> ocp.options.MultiprocessingOptions:
    """Orbax options for a write by this process alone (in a multi-process run, the export is
    written by process 0 while the others wait elsewhere)."""
    if jax.process_count() == 1:
        return ocp.options.MultiprocessingOptions()
    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def save_model(dst: str, family: str, config: dict[str, Any], model: nnx.Module, extra: dict | None = None) -> None:
    """Writes ``model`` (all nnx.Param and nnx.BatchStat leaves) and its config under ``dst``;
    in a multi-process run the calling process writes alone (its arrays must be replicated)."""
    dst = os.path.abspath(dst)
    os.makedirs(dst, exist_ok=True)
    state = nnx.state(model, _WEIGHTS).to_pure_dict()
    state = jax.tree.map(np.asarray, scan_lib.unstack_tree(state, scan_lib.stacked_paths(model)))
    path = os.path.join(dst, PARAMS_DIR)
    with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()) as ckptr:
        ckptr.save(path, state, force=True)
    meta = {"family": family, "config": config}
    if extra:
        meta.update(extra)
    with open(os.path.join(dst, MODEL_JSON), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


def read_model_json(src: str) -> dict[str, Any]:
    path = os.path.join(src, MODEL_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{src} is not a converted model folder: {MODEL_JSON} is missing "
                                "(create one with `medvlsm-convert`)")
    with open(path) as f:
        return json.load(f)


def restore_params(src: str, model: nnx.Module) -> nnx.Module:
    """Restores the saved leaves into ``model`` (built with the same config) in place."""
    state = nnx.state(model, _WEIGHTS)
    stacked = scan_lib.stacked_paths(model)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.to_pure_dict())
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(os.path.join(os.path.abspath(src), PARAMS_DIR),
                                 scan_lib.unstack_shapes(target, stacked))
    nnx.replace_by_pure_dict(state, scan_lib.stack_tree(restored, stacked))
    nnx.update(model, state)
    return model
