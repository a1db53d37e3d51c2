"""Data parallelism over every device: a 1-D ``'data'`` mesh, batch split, state replicated.

Multi-host runs call :func:`maybe_initialize_distributed` first; each process then feeds its
own shard of every batch (:func:`put_batch` builds the global array from process-local rows)."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

DATA_AXIS = "data"
# environment variables that mean "launched as one of several processes"
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def maybe_initialize_distributed() -> None:
    """``jax.distributed.initialize()`` when the environment describes a multi-process launch."""
    if any(os.environ.get(k) for k in _DISTRIBUTED_ENV):
        if os.environ.get("SLURM_NTASKS") == "1" or os.environ.get("OMPI_COMM_WORLD_SIZE") == "1":
            return
        jax.distributed.initialize()
        log.info("process %d of %d", jax.process_index(), jax.process_count())


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
