"""One generic rule set for turning a PyTorch state dict into a Flax NNX model's state.

The Flax models in :mod:`medvlsm_jax.models` name their submodules exactly like the PyTorch
state dict they mirror (``decoder.layers.0.self_attn.q_proj`` ...). Conversion therefore walks the
*Flax* model, and for every NNX module asks one question: which torch tensor feeds this leaf and
how is it laid out? The answer depends only on the module type:

==================  =========================  ===========================================
Flax module         Flax leaf                  torch tensor -> transform
==================  =========================  ===========================================
nnx.Linear          kernel / bias              weight.T / bias
nnx.Conv (N-d)      kernel / bias              weight (O,I,*k) -> (*k,I,O) / bias
nnx.ConvTranspose   kernel / bias              weight (I,O,*k) -> (*k,I,O), spatially flipped
nnx.LayerNorm,      scale / bias               weight / bias
nnx.GroupNorm
nnx.BatchNorm       scale / bias / mean / var  weight / bias / running_mean / running_var
nnx.Embed           embedding                  weight
nnx.Param attr X    X                          X (as is; e.g. ``class_embedding``)
==================  =========================  ===========================================

Blocks a model keeps stacked for ``nnx.scan`` (:mod:`medvlsm_jax.ops.scan`: one module whose
leaves have a leading layer axis) are expanded to one torch key per block, ``<path>.<i>.<leaf>``,
exactly as a ``ModuleList`` names them; each block's tensor is transformed on its own.

A model family adds only a short *key map* (``torch_dict -> torch_dict``) for the places where
its PyTorch layout differs from a plain module tree (fused qkv projections, checkpoint prefixes
like ``module.``) and a list of keys that are knowingly dropped (e.g. CLIPSeg's unused vision
blocks 10-11). Everything else is strict: :func:`convert_state_dict` raises
:class:`ConversionError` listing *all* missing, unexpected and mis-shaped keys at once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from typing import Callable, Iterable, Mapping

import numpy as np
from flax import nnx

from medvlsm_jax.ops import scan as scan_lib

# every array a converted model carries: trainable parameters and BatchNorm statistics
_WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat)

__all__ = [
    "ConversionError",
    "ConversionReport",
    "expected_torch_keys",
    "convert_state_dict",
    "split_fused_qkv",
    "strip_prefix",
    "rename_keys",
]


class ConversionError(ValueError):
    """Raised when a state dict does not match the target model exactly."""


@dataclasses.dataclass
class ConversionReport:
    """What a conversion did: used keys, knowingly dropped keys, leaves left at their init."""

    used: list[str]
    dropped: list[str]
    kept_init: list[str]

    def summary(self) -> str:
        s = f"{len(self.used)} tensors converted, {len(self.dropped)} dropped as unused"
        if self.kept_init:
            s += f", {len(self.kept_init)} left at their initialisation"
        return s


def _identity(w: np.ndarray) -> np.ndarray:
    return w


def _dense_kernel(w: np.ndarray) -> np.ndarray:
    # torch Linear (out, in) -> flax Linear (in, out)
    return np.ascontiguousarray(w.T)


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    # torch (O, I, *k) -> flax (*k, I, O)
    nd = w.ndim - 2
    return np.transpose(w, tuple(range(2, 2 + nd)) + (1, 0))


def _conv_transpose_kernel(w: np.ndarray) -> np.ndarray:
    # torch ConvTranspose (I, O, *k) -> flax ConvTranspose (*k, I, O). torch's transposed
    # convolution is the adjoint of a correlation, flax's correlates the dilated input with the
    # kernel as stored, so the spatial axes are flipped.
    nd = w.ndim - 2
    k = np.transpose(w, tuple(range(2, 2 + nd)) + (0, 1))
    return np.ascontiguousarray(k[(slice(None, None, -1),) * nd])


# module type -> {flax leaf name: (torch leaf name, transform)}
_IDENTITY = _identity
_RULES: list[tuple[type, dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]]] = [
    (nnx.Linear, {"kernel": ("weight", _dense_kernel), "bias": ("bias", _IDENTITY)}),
    (nnx.ConvTranspose, {"kernel": ("weight", _conv_transpose_kernel), "bias": ("bias", _IDENTITY)}),
    (nnx.Conv, {"kernel": ("weight", _conv_kernel), "bias": ("bias", _IDENTITY)}),
    (nnx.LayerNorm, {"scale": ("weight", _IDENTITY), "bias": ("bias", _IDENTITY)}),
    (nnx.GroupNorm, {"scale": ("weight", _IDENTITY), "bias": ("bias", _IDENTITY)}),
    (
        nnx.BatchNorm,
        {
            "scale": ("weight", _IDENTITY),
            "bias": ("bias", _IDENTITY),
            "mean": ("running_mean", _IDENTITY),
            "var": ("running_var", _IDENTITY),
        },
    ),
    (nnx.Embed, {"embedding": ("weight", _IDENTITY)}),
]


def _rule_for(module: nnx.Module):
    for cls, rule in _RULES:
        if isinstance(module, cls):
            return rule
    return None


def _join(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _leaf_plan(model: nnx.Module):
    """Yields (flax_path, block, torch_key, transform, shape) for every array leaf of ``model``:
    ``block`` is None for an ordinary leaf, else the index along the leading axis of a stacked
    module's leaf (one entry per block, ``shape`` without that axis)."""
    state = nnx.state(model, _WEIGHTS)
    flat = {tuple(k): v for k, v in state.flat_state()}
    modules = {tuple(p): m for p, m in nnx.iter_modules(model)}
    stacked = scan_lib.stacked_paths(model)
    plan = []
    for path, var in flat.items():
        parent = modules.get(path[:-1])
        rule = _rule_for(parent) if parent is not None else None
        leaf = path[-1]
        if rule is not None and leaf in rule:
            tname, fn = rule[leaf]
            tpath = path[:-1] + (tname,)
        else:  # a raw nnx.Param / BatchStat attribute named like the torch parameter
            tpath, fn = path, _IDENTITY
        shape = tuple(var.get_value().shape)
        cut = next((len(p) for p in stacked if path[:len(p)] == p), None)
        if cut is None:
            plan.append((path, None, _join(tpath), fn, shape))
            continue
        for i in range(stacked[path[:cut]]):
            plan.append((path, i, _join(tpath[:cut] + (i,) + tpath[cut:]), fn, shape[1:]))
    return plan


def expected_torch_keys(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """torch key -> the shape the torch tensor must have, for every leaf of ``model``."""
    out = {}
    for _, _, tkey, fn, shape in _leaf_plan(model):
        # shape of the torch tensor: invert the transform on a dummy of the flax shape.
        out[tkey] = _torch_shape(fn, shape)
    return out


def _torch_shape(fn, flax_shape):
    if fn is _IDENTITY:
        return tuple(flax_shape)
    if fn is _dense_kernel:
        return tuple(flax_shape[::-1])
    nd = len(flax_shape) - 2
    k, i, o = flax_shape[:nd], flax_shape[nd], flax_shape[nd + 1]
    if fn is _conv_kernel:
        return (o, i, *k)
    if fn is _conv_transpose_kernel:
        return (i, o, *k)
    raise AssertionError(fn)


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def convert_state_dict(
    model: nnx.Module,
    state_dict: Mapping[str, np.ndarray],
    *,
    drop: Iterable[str] = (),
    allow_missing: Iterable[str] = (),
    source: str = "state dict",
) -> ConversionReport:
    """Loads ``state_dict`` (torch layout, numpy values) into ``model`` in place.

    Args:
      model: the Flax NNX model whose attribute names mirror the torch keys.
      state_dict: torch key -> numpy array, already passed through the family's key map.
      drop: glob patterns of torch keys that are knowingly not used (never an error).
      allow_missing: glob patterns of model leaves that may stay at their initialisation
        (e.g. a fresh decoder when only a backbone is converted). Reported, never silent.
      source: a name for error messages (the file being converted).

    Raises:
      ConversionError listing every missing, unexpected and mis-shaped key.
    """
    drop = list(drop)
    allow_missing = list(allow_missing)
    plan = _leaf_plan(model)
    wanted = {tkey for _, _, tkey, _, _ in plan}
    missing, bad_shape, kept_init, used = [], [], [], []
    updates, blocks = {}, {}
    for path, block, tkey, fn, shape in plan:
        if tkey not in state_dict:
            if _matches(tkey, allow_missing):
                kept_init.append(tkey)
            else:
                missing.append(f"{tkey} (expected torch shape {_torch_shape(fn, shape)})")
            continue
        arr = np.asarray(state_dict[tkey])
        want = _torch_shape(fn, shape)
        if tuple(arr.shape) != want:
            bad_shape.append(f"{tkey}: got {tuple(arr.shape)}, expected {want}")
            continue
        if block is None:
            updates[path] = fn(arr)
        else:
            blocks.setdefault(path, {})[block] = fn(arr)
        used.append(tkey)
    extra = sorted(k for k in state_dict if k not in wanted and not _matches(k, drop))
    dropped = sorted(k for k in state_dict if k not in wanted and _matches(k, drop))
    if missing or extra or bad_shape:
        lines = [f"{source} does not match {type(model).__name__}:"]
        for title, items in (("missing", missing), ("unexpected", extra), ("wrong shape", bad_shape)):
            if items:
                lines.append(f"  {len(items)} {title} key(s):")
                lines += [f"    {x}" for x in sorted(items)]
        raise ConversionError("\n".join(lines))

    state = nnx.state(model, _WEIGHTS)
    pure = state.to_pure_dict()
    for path, parts in blocks.items():  # stacked leaves: blocks not given (allow_missing) keep their init
        node = pure
        for p in path:
            node = node[p]
        current = np.array(node)
        for i, value in parts.items():
            current[i] = value
        updates[path] = current
    for path, value in updates.items():
        node = pure
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = np.asarray(value, dtype=node[path[-1]].dtype)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    return ConversionReport(used=sorted(used), dropped=dropped, kept_init=sorted(kept_init))


# ----------------------------------------------------------------------------------------------
# Helpers for per-model key maps.


def find_weights(src: str, names: Iterable[str]) -> str:
    """The first of ``names`` present in folder ``src`` (a family's preferred order)."""
    names = tuple(names)
    for name in names:
        path = os.path.join(src, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{src}: no weights found (looked for {', '.join(names)})")


def strip_prefix(sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Removes ``prefix`` from every key that has it (e.g. DataParallel's ``module.``)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}


def rename_keys(sd: Mapping[str, np.ndarray], rules: Iterable[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Applies regex substitutions ``(pattern, replacement)`` to every key, in order."""
    rules = [(re.compile(p), r) for p, r in rules]
    out = {}
    for k, v in sd.items():
        for p, r in rules:
            k = p.sub(r, k)
        out[k] = v
    return out


def split_fused_qkv(
    sd: Mapping[str, np.ndarray],
    fused: str = "in_proj_weight",
    fused_bias: str = "in_proj_bias",
    names: tuple[str, str, str] = ("q_proj", "k_proj", "v_proj"),
) -> dict[str, np.ndarray]:
    """Splits torch ``nn.MultiheadAttention`` fused projections into three Linear layers.

    ``<p>.in_proj_weight`` (3D, D) -> ``<p>.q_proj.weight`` ... and the same for the bias.
    """
    out = {}
    for k, v in sd.items():
        for suffix, leaf in ((fused, "weight"), (fused_bias, "bias")):
            if k.endswith("." + suffix) or k == suffix:
                prefix = k[: -len(suffix)]
                if v.shape[0] % 3:
                    raise ConversionError(f"{k}: fused projection of shape {v.shape} is not divisible by 3")
                for name, part in zip(names, np.split(np.asarray(v), 3, axis=0)):
                    out[f"{prefix}{name}.{leaf}"] = part
                break
        else:
            out[k] = v
    return out
