"""Data parallelism over every device: a 1-D ``'data'`` mesh, batch split, state replicated.

Multi-process runs join their process group first (:func:`medvlsm_jax.train.distributed.initialize`);
each process then feeds its own rows of every global batch (:func:`put_batch` builds the global
array from process-local rows with ``jax.make_array_from_process_local_data``)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, what: str = "train.batch_size") -> int:
    """The per-process batch size; raises when ``batch_size`` does not split over the devices."""
    n_dev, n_proc = jax.device_count(), jax.process_count()
    if batch_size <= 0 or batch_size % n_dev or batch_size % n_proc:
        raise ValueError(f"{what}={batch_size} is not divisible by the {n_dev} devices "
                         f"({n_proc} processes); choose a multiple of {n_dev}")
    return batch_size // n_proc


def put_batch(batch: dict[str, Any], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Global arrays, split over ``'data'``, from this process's rows."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded array, in batch order."""
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    seen, rows = set(), []
    for s in shards:  # replicated arrays repeat the same rows on every device
        start = s.index[0].start or 0
        if start not in seen:
            seen.add(start)
            rows.append(np.asarray(s.data))
    return np.concatenate(rows)


def to_host(x: jax.Array) -> np.ndarray:
    """The whole (global) array on the host."""
    return np.asarray(x) if x.is_fully_addressable else np.asarray(multihost_utils.process_allgather(x, tiled=True))


def process_block(mesh: Mesh) -> tuple[int, int]:
    """(this process's block, number of blocks): a batch split over ``mesh`` gives this process
    the rows ``[block * b, (block + 1) * b)`` of every global batch of ``count * b`` rows, where
    ``b`` is its local batch. The loaders read exactly those rows."""
    devices = list(mesh.devices.flat)
    mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
    n_local = len(mine)
    if not mine or mine != list(range(mine[0], mine[0] + n_local)) or mine[0] % n_local:
        raise ValueError(f"process {jax.process_index()}'s devices are not one contiguous block of the "
                         f"'{DATA_AXIS}' mesh: positions {mine}")
    if len(devices) % n_local:
        raise ValueError(f"{len(devices)} devices do not split into blocks of {n_local} per process")
    return mine[0] // n_local, len(devices) // n_local
