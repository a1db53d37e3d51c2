"""Multi-process launches: who decides the process group, and :func:`initialize`.

A run is one process per host (or per GPU) started by the user's launcher; every process runs
the same command. The group is described, in order of precedence, by

1. the flags ``--coordinator_address``, ``--num_processes``, ``--process_id`` of
   :mod:`medvlsm_jax.main` (for plain hosts);
2. the environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
   ``JAX_PROCESS_ID`` (each one fills in a flag left unset);
3. SLURM (``srun``) or Open MPI (``mpirun``): JAX's own cluster detection
   (``jax.distributed.initialize()`` with the unset values left to it), used when the job has
   more than one task.

All three values, or a detected cluster, or none of them (one process). Anything in between —
an address without a count, say — is a one-line :class:`LaunchError`. On CPU the cross-process
collectives are gloo's (``jax_cpu_collectives_implementation``), set before initialisation
unless the user chose another implementation.

After :func:`initialize`, log records name the process (``[process 1/2]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}
FLAGS = {k: f"--{k}" for k in ENV}


class LaunchError(ValueError):
    """The launch describes an incomplete or inconsistent process group."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """What :func:`jax.distributed.initialize` is called with (``None``: JAX detects it)."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    source: str  # "flags/env", "slurm" or "ompi"
    local_device_ids: tuple[int, ...] | None = None

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in (("coordinator_address", self.coordinator_address),
                                  ("num_processes", self.num_processes), ("process_id", self.process_id),
                                  ("local_device_ids", self.local_device_ids))
                if v is not None}


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"{name}={value!r} is not an integer") from None


def _cluster(environ: Mapping[str, str]) -> str | None:
    """``'slurm'`` / ``'ompi'`` when launched as one of several tasks of that launcher (the
    variables JAX's cluster detection reads), else None."""
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in environ for k in slurm) and environ["SLURM_NTASKS"].strip() not in ("", "1"):
        return "slurm"
    if environ.get("OMPI_COMM_WORLD_SIZE", "").strip() not in ("", "1"):
        return "ompi"
    return None


def resolve_launch(coordinator_address: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None, environ: Mapping[str, str] | None = None) -> Launch | None:
    """The process group of this launch (flags first, then ``JAX_*`` variables, then SLURM /
    Open MPI), or None for a single process. Raises :class:`LaunchError` for half a description."""
    environ = os.environ if environ is None else environ
    given: dict[str, Any] = {"coordinator_address": coordinator_address or None, "num_processes": num_processes,
                             "process_id": process_id}
    origin = {k: FLAGS[k] for k, v in given.items() if v is not None}
    for key, var in ENV.items():
        if given[key] is None and environ.get(var, "").strip():
            value = environ[var].strip()
            given[key] = value if key == "coordinator_address" else _int(value, var)
            origin[key] = var
    cluster = _cluster(environ)
    set_keys = [k for k, v in given.items() if v is not None]
    if not set_keys:
        if cluster is None:
            return None
        if cluster == "ompi" and "OMPI_MCA_orte_hnp_uri" not in environ:  # Open MPI >= 5 (PMIx)
            raise LaunchError("launched by mpirun without the ORTE URI JAX detects Open MPI by (Open MPI 5): "
                              f"give --coordinator_address=HOST_OF_RANK_0:PORT (or {ENV['coordinator_address']})")
        return Launch(None, None, None, cluster)
    local = None
    if cluster == "ompi":  # Open MPI tells rank and size; the address may come from the user
        given["num_processes"] = given["num_processes"] or _int(environ["OMPI_COMM_WORLD_SIZE"],
                                                                "OMPI_COMM_WORLD_SIZE")
        if given["process_id"] is None and "OMPI_COMM_WORLD_RANK" in environ:
            given["process_id"] = _int(environ["OMPI_COMM_WORLD_RANK"], "OMPI_COMM_WORLD_RANK")
        if "OMPI_MCA_orte_hnp_uri" not in environ and environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "").isdigit():
            local = (int(environ["OMPI_COMM_WORLD_LOCAL_RANK"]),)  # one GPU per rank, as JAX does for ORTE
    missing = [k for k, v in given.items() if v is None]
    if missing and cluster is None:
        have = " and ".join(f"{origin[k]}={given[k]}" for k in set_keys)
        need = " and ".join(f"{FLAGS[k]} (or {ENV[k]})" for k in missing)
        raise LaunchError(f"half-specified multi-process launch: {have} without {need}; "
                          "give all three, or none for one process")
    n, i, addr = given["num_processes"], given["process_id"], given["coordinator_address"]
    if n is not None and n < 1:
        raise LaunchError(f"{origin.get('num_processes', 'num_processes')}={n}: must be at least 1")
    if n is not None and i is not None and not 0 <= i < n:
        raise LaunchError(f"{origin.get('process_id', 'process_id')}={i} is out of range for {n} processes "
                          f"(0 to {n - 1})")
    if addr is not None and (":" not in addr or not addr.rsplit(":", 1)[1].isdigit()):
        raise LaunchError(f"{origin['coordinator_address']}={addr!r} must be HOST:PORT (the host of process 0)")
    if n == 1 and cluster is None:
        return None
    return Launch(addr, n, i, "flags/env" if cluster is None else cluster, local)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, environ: Mapping[str, str] | None = None) -> Launch | None:
    """Joins the process group this launch describes (see the module doc); a no-op for one
    process. Call before anything touches a JAX device."""
    launch = resolve_launch(coordinator_address, num_processes, process_id, environ)
    if launch is None:
        return None
    environ = os.environ if environ is None else environ
    if not environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used by CPU backends only
    jax.distributed.initialize(**launch.kwargs())
    name_process_in_logs()
    log.info("joined %s process group as process %d of %d (%d local devices, %d in all)", launch.source,
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
    return launch


# --------------------------------------------------------------------------- logs


class _ProcessPrefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_medvlsm_process", False):
            record.msg = f"{self.prefix}{record.msg}"
            record._medvlsm_process = True
        return True


def name_process_in_logs() -> None:
    """Prefixes every log record with ``[process i/n]`` (multi-process runs)."""
    if jax.process_count() == 1:
        return
    prefix = _ProcessPrefix(f"[process {jax.process_index()}/{jax.process_count()}] ")
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        from absl import logging as absl_logging  # noqa: PLC0415

        handlers.append(absl_logging.get_absl_handler())
    except ImportError:
        pass
    for h in dict.fromkeys(handlers):
        if not any(isinstance(f, _ProcessPrefix) for f in h.filters):
            h.addFilter(prefix)


# --------------------------------------------------------------------------- agreement


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(flag)))))


def check_same_on_all_processes(value: Any, what: str) -> None:
    """Raises when the JSON-able ``value`` differs between processes (a collective)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils  # noqa: PLC0415

    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).digest()[:8]
    mine = np.frombuffer(digest, np.uint8)
    every = np.asarray(multihost_utils.process_allgather(mine))
    differ = [i for i in range(len(every)) if not np.array_equal(every[i], every[0])]
    if differ:
        raise RuntimeError(f"{what} differs between processes 0 and {differ}: the processes went out of step")


def barrier(name: str) -> None:
    """Waits for every process (no-op for one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)
