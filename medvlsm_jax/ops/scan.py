"""Identical blocks run as one scanned block: parameters stacked on a leading layer axis.

A transformer tower of ``L`` identical blocks, unrolled, gives XLA ``L`` copies of the block to
optimise (and ``2L`` in a training step). :func:`stack_modules` merges the blocks into *one*
module of the same type whose parameters carry a leading axis of length ``L``;
:func:`scan_blocks` runs it with ``nnx.scan``, so XLA compiles the block once.

Layout contract (read by :mod:`medvlsm_jax.weights` and :mod:`medvlsm_jax.conversion.rules`):
a module with an integer attribute :data:`STACKED_ATTR` holds the parameters of that many blocks
stacked along axis 0. Everywhere outside memory — PyTorch state dicts and the Orbax ``params/``
of model folders — the blocks stay separate, ``<path>.<i>.<leaf>`` exactly as an ``nnx.List``
of blocks (and the PyTorch ``ModuleList``) names them: :func:`unstack_tree` / :func:`stack_tree`
convert a pure-dict state between the two layouts. The stacked module is built from blocks
initialised one after another, so a seeded init gives the same numbers as the per-block layout.

XLA's cost analysis counts a loop body once; inside :func:`unrolled_scans` the scans are traced
fully unrolled (straight-line HLO with every block), which is how the benchmarks count FLOPs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

STACKED_ATTR = "stacked_layers"

_UNROLL = [False]


@contextlib.contextmanager
def unrolled_scans() -> Iterator[None]:
    """Within this context, :func:`scan_blocks` traces every block (``unroll=True``)."""
    prev, _UNROLL[0] = _UNROLL[0], True
    try:
        yield
    finally:
        _UNROLL[0] = prev


def stack_modules(blocks: Sequence[nnx.Module]) -> nnx.Module:
    """One module of ``blocks[0]``'s type holding every block's state stacked along axis 0."""
    if not blocks:
        raise ValueError("stack_modules needs at least one block")
    graphdef, _ = nnx.split(blocks[0])
    states = [nnx.split(b)[1] for b in blocks]
    module = nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack(xs), *states))
    setattr(module, STACKED_ATTR, len(blocks))
    return module


def num_stacked(module: Any) -> int:
    """How many blocks ``module`` stacks (0 for an ordinary module)."""
    return int(getattr(module, STACKED_ATTR, 0) or 0)


def scan_blocks(stacked: nnx.Module, x: jax.Array, *args: Any, keep: bool = False,
                call: Callable[..., jax.Array] | None = None) -> tuple[jax.Array, jax.Array | None]:
    """Runs the stacked blocks in order, ``x = block(x, *args)``; returns the last ``x`` and, with
    ``keep``, every block's output stacked on axis 0 (``None`` otherwise). ``args`` are shared by
    every block (e.g. an attention mask); ``call(block, x, *args)`` replaces ``block(x, *args)``."""
    call = call or (lambda block, h, *a: block(h, *a))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0), unroll=bool(_UNROLL[0]))
    def run(h, block):
        h = call(block, h, *args)
        return h, (h if keep else None)

    return run(x, stacked)


# --------------------------------------------------------------------------- on-disk layout


def stacked_paths(model: nnx.Module) -> dict[tuple[Any, ...], int]:
    """``{module path: number of blocks}`` of every stacked module of ``model``."""
    return {tuple(path): num_stacked(m) for path, m in nnx.iter_modules(model) if num_stacked(m)}


def _node(tree: Mapping, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _with_node(tree: Mapping, path: tuple[Any, ...], value: Any) -> dict:
    """A copy of the nested dict ``tree`` with the node at ``path`` replaced by ``value``."""
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _with_node(tree[path[0]], path[1:], value)
    return out


def unstack_tree(tree: Mapping, stacked: Mapping[tuple[Any, ...], int]) -> dict:
    """Pure-dict state with each stacked node ``P`` split into ``{0: ..., 1: ..., ...}`` (the
    per-block layout of an ``nnx.List``)."""
    out = dict(tree)
    for path, n in stacked.items():
        node = _node(out, path)
        out = _with_node(out, path, {i: jax.tree.map(lambda a, i=i: a[i], node) for i in range(n)})
    return out


def stack_tree(tree: Mapping, stacked: Mapping[tuple[Any, ...], int]) -> dict:
    """Inverse of :func:`unstack_tree`: the per-block nodes ``{0: ..., n-1: ...}`` stacked."""
    out = dict(tree)
    for path, n in stacked.items():
        node = _node(out, path)
        blocks = [node[i] if i in node else node[str(i)] for i in range(n)]
        out = _with_node(out, path, jax.tree.map(lambda *xs: jnp.stack(xs), *blocks))
    return out


def unstack_shapes(tree: Mapping, stacked: Mapping[tuple[Any, ...], int]) -> dict:
    """:func:`unstack_tree` for a tree of ``jax.ShapeDtypeStruct`` (no data)."""
    out = dict(tree)
    for path, n in stacked.items():
        node = _node(out, path)
        one = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), node)
        out = _with_node(out, path, {i: one for i in range(n)})
    return out
