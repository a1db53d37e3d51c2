"""Orbax checkpoints of a run: ``<workdir>/checkpoints/latest`` (every save, one kept) and
``<workdir>/checkpoints/best`` (best validation Dice, one kept).

A checkpoint holds the whole training state as a flat, ordered dict of arrays (the pytree
structure comes from the freshly built state, so restoring validates shapes and dtypes), the
grain data-iterator state and a JSON ``meta`` (epoch, step, early-stopping counters, history).
Frozen parameters are not saved: they are rebuilt from the config (seeded init or ``model.init``
folder). Saves are synchronous and atomic (Orbax writes a temporary folder and renames it), so
a process killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

ITEMS = ("state", "meta", "data")


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_savable(tree: Any) -> dict[str, Any]:
    """Flat ``{'00000': array, ...}``; typed PRNG keys become their raw key data."""
    leaves = jax.tree.leaves(tree)
    return {f"{i:05d}": (jax.random.key_data(x) if _is_key(x) else x) for i, x in enumerate(leaves)}


def from_savable(flat: dict[str, Any], template: Any) -> Any:
    """Inverse of :func:`to_savable` given a template with the same structure."""
    leaves, treedef = jax.tree.flatten(template)
    if len(flat) != len(leaves):
        raise ValueError(f"checkpoint holds {len(flat)} arrays, the model state {len(leaves)}: "
                         "the config changed since the checkpoint was written")
    restored = []
    for i, ref in enumerate(leaves):
        x = flat[f"{i:05d}"]
        if _is_key(ref):
            x = jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
        restored.append(x)
    return jax.tree.unflatten(treedef, restored)


def _abstract(template: Any, sharding: Any) -> dict[str, Any]:
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in to_savable(template).items()}


class Checkpoints:
    """The ``latest`` and ``best`` managers of a workdir."""

    def __init__(self, workdir: str):
        root = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
        self.latest = ocp.CheckpointManager(os.path.join(root, "latest"), options=options, item_names=ITEMS)
        self.best = ocp.CheckpointManager(os.path.join(root, "best"), options=options, item_names=ITEMS)

    @staticmethod
    def _save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict, data: dict) -> None:
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(to_savable(state)),
                                                meta=ocp.args.JsonSave(meta), data=ocp.args.JsonSave(data)),
                  force=True)
        mngr.wait_until_finished()

    def save_latest(self, step: int, state: Any, meta: dict, data: dict) -> None:
        self._save(self.latest, step, state, meta, data)

    def save_best(self, step: int, state: Any, meta: dict, data: dict) -> None:
        self._save(self.best, step, state, meta, data)

    @staticmethod
    def _restore(mngr: ocp.CheckpointManager, template: Any, sharding: Any) -> tuple[Any, dict, dict] | None:
        step = mngr.latest_step()
        if step is None:
            return None
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(template, sharding)),
            meta=ocp.args.JsonRestore(), data=ocp.args.JsonRestore()))
        return from_savable(out["state"], template), dict(out["meta"]), dict(out["data"])

    def restore_latest(self, template: Any, sharding: Any = None) -> tuple[Any, dict, dict] | None:
        """(state, meta, data-iterator state) of the latest checkpoint, or None."""
        return self._restore(self.latest, template, sharding)

    def restore_best(self, template: Any, sharding: Any = None) -> tuple[Any, dict, dict] | None:
        return self._restore(self.best, template, sharding)

    def close(self) -> None:
        self.latest.close()
        self.best.close()
