"""Frozen-encoder feature cache.

With the encoders frozen and the paper's deterministic preprocessing (resize + normalise),
``model.encode`` gives the same features for an (example, prompt) pair in every epoch. The
cache stores them per example on the host (numpy, default) or on the device, keyed by
``(split, dataset_id, index, prompt text)``, so prompts drawn at random per epoch (list-valued
keys, ``prompt='random'``) are cached per drawn text: correct, with a lower hit rate (each
distinct text is encoded once). A batch is served from the cache only when every row hits;
otherwise the whole batch is encoded (same batch composition and shapes as the uncached run)
and its missing rows are stored. Features are never recomputed differently, so training from
the cache gives the same results as encoding every step. Storage stops at ``max_bytes``
(later rows are encoded each time); hits, misses and size are reported by :meth:`stats`.

In a multi-process run each process caches the rows it reads (host memory; ``device`` storage
falls back to the host), and a batch is served from the caches only when every process's rows
all hit, since the encoder is one computation over every process's devices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from medvlsm_jax.train import distributed
from medvlsm_jax.train import sharding as shd

log = logging.getLogger(__name__)

Key = tuple[Hashable, ...]


def batch_keys(split: str, batch: dict[str, np.ndarray]) -> list[Key]:
    return [(split, int(d), int(i), str(p))
            for d, i, p in zip(batch["dataset_id"], batch["index"], batch["prompt"])]


class FeatureCache:
    def __init__(self, max_bytes: int, on_device: bool = False):
        self.max_bytes = int(max_bytes)
        self.on_device = on_device and jax.process_count() == 1
        self._rows: dict[Key, Any] = {}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._full_logged = False

    def __len__(self) -> int:
        return len(self._rows)

    def stats(self) -> dict[str, float]:
        return {"rows": len(self._rows), "bytes": self.nbytes, "hits": self.hits, "misses": self.misses}

    def _store(self, keys: list[Key], features: Any) -> None:
        host = jax.tree.map(shd.local_rows, features)
        leaves, treedef = jax.tree.flatten(host)
        row_bytes = sum(x[0].nbytes for x in leaves)
        for r, key in enumerate(keys):
            if key in self._rows:
                continue
            if self.nbytes + row_bytes > self.max_bytes:
                if not self._full_logged:
                    log.info("feature cache full at %.1f MB (%d rows); further rows are encoded each time",
                                 self.nbytes / 2**20, len(self._rows))
                    self._full_logged = True
                return
            row = [x[r] for x in leaves]
            if self.on_device:
                row = [jnp.asarray(x) for x in row]
            self._rows[key] = (treedef, row)
            self.nbytes += row_bytes

    def features(self, split: str, batch: dict[str, np.ndarray], encode: Callable[[], Any],
                 sharding: Any) -> Any:
        """Features of ``batch`` (global, batch-sharded), from the cache or ``encode()``."""
        keys = batch_keys(split, batch)
        rows = [self._rows.get(k) for k in keys]
        # each process caches its own rows; encode() is a collective, so the batch is served
        # from the caches only when every process holds all of its rows
        if distributed.all_true(all(r is not None for r in rows)):
            self.hits += len(keys)
            treedef = rows[0][0]
            stacked = [(jnp if self.on_device else np).stack(col) for col in zip(*(r[1] for r in rows))]
            if self.on_device:
                return jax.tree.unflatten(treedef, [jax.device_put(x, sharding) for x in stacked])
            return shd.put_batch(jax.tree.unflatten(treedef, stacked), sharding)
        self.misses += len(keys)
        features = encode()
        self._store(keys, features)
        return features
