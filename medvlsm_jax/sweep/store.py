"""The results store of a sweep workdir, and per-run locks.

Layout::

    <workdir>/runs/<run id>/            the run's own workdir (checkpoints/, eval/, export/, ...)
    <workdir>/runs/<run id>/result.json written last, when the run finished: the run is done
    <workdir>/runs/<run id>/error.json  the last failure (traceback); the next sweep retries
    <workdir>/runs/<run id>/lock        held (fcntl) while a process works on the run
    <workdir>/index.json                one entry per run named by any plan: status, labels

``result.json`` holds the run's spec (kind, model, config file and arguments, settings), the
test results per dataset (mean ± std Dice / IoU / HD95 and n), the training summary (best
epoch, best validation Dice, stop reason, history) and the reproducibility record
(:func:`repro_record`: config, git commit, package versions, device, seed, wall time, img/s).

Locks: many hosts may share one workdir. A run is worked on only by the process holding its
``lock`` (``fcntl.flock``, exclusive, non-blocking: a busy run is skipped, not waited for), and
``index.json`` is rewritten atomically under ``index.lock``. ``flock`` works across hosts on
NFSv4 and Lustre/GPFS with locking enabled; on a filesystem without it, give each host its own
``--only`` subset (``--list`` / ``--emit``). The reliability work adds a workdir lock inside the
trainer; this per-run lock is the sweep's own and needs nothing from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

RESULT = "result.json"
ERROR = "error.json"
LOCK = "lock"
INDEX = "index.json"
PACKAGES = ("medvlsm-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy",
            "tensorflow-datasets", "ml_collections")


def write_json_atomic(path: str, data: Any) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename (readers never see a
    partial file)."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=_default)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _default(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run dir>/lock``; ``acquire()`` is False when
    another process holds it. The file records who holds it (host, pid, since)."""

    def __init__(self, run_dir: str):
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, LOCK)
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            with open(self.path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class Store:
    """The store of one sweep workdir (see the module doc)."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.runs_dir = os.path.join(self.workdir, "runs")
        os.makedirs(self.runs_dir, exist_ok=True)

    def run_dir(self, run_id: str) -> str:
        return os.path.join(self.runs_dir, run_id)

    def is_done(self, run_id: str) -> bool:
        return os.path.isfile(os.path.join(self.run_dir(run_id), RESULT))

    def result(self, run_id: str) -> dict[str, Any] | None:
        path = os.path.join(self.run_dir(run_id), RESULT)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def results(self) -> list[dict[str, Any]]:
        """Every finished run's ``result.json`` (read from the run folders, not the index)."""
        out = []
        for name in sorted(os.listdir(self.runs_dir)):
            r = self.result(name)
            if r is not None:
                out.append(r)
        return out

    def lock(self, run_id: str) -> RunLock:
        return RunLock(self.run_dir(run_id))

    def write_result(self, run_id: str, result: dict[str, Any]) -> None:
        d = self.run_dir(run_id)
        os.makedirs(d, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(d, ERROR))
        write_json_atomic(os.path.join(d, RESULT), result)

    def write_error(self, run_id: str, error: str) -> None:
        d = self.run_dir(run_id)
        os.makedirs(d, exist_ok=True)
        write_json_atomic(os.path.join(d, ERROR), {"error": error, "time": time.time(), "host": socket.gethostname()})

    def add_settings(self, run_id: str, settings: tuple[str, ...]) -> None:
        """Adds plan settings to a finished run named again by another plan."""
        result = self.result(run_id)
        if result is not None and not set(settings) <= set(result.get("settings", ())):
            result["settings"] = sorted(set(result.get("settings", ())) | set(settings))
            write_json_atomic(os.path.join(self.run_dir(run_id), RESULT), result)

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.workdir, "index.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def index(self) -> dict[str, Any]:
        path = os.path.join(self.workdir, INDEX)
        if not os.path.isfile(path):
            return {"runs": {}}
        with open(path) as f:
            return json.load(f)

    def update_index(self, entries: dict[str, dict[str, Any]]) -> None:
        """Merges ``entries`` (run id -> fields) into ``index.json`` under the index lock."""
        with self._index_lock():
            index = self.index()
            for rid, fields in entries.items():
                index["runs"].setdefault(rid, {}).update(fields)
            index["updated"] = time.time()
            write_json_atomic(os.path.join(self.workdir, INDEX), index)


# --------------------------------------------------------------------------- reproducibility


def _git_commit() -> dict[str, Any]:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _device() -> dict[str, Any]:
    import jax  # noqa: PLC0415

    devices = jax.devices()
    return {"platform": devices[0].platform, "kind": devices[0].device_kind, "count": len(devices),
            "processes": jax.process_count(), "host": socket.gethostname(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def repro_record(config: Any, *, seconds: float, images: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The reproducibility record of a run: config, git commit, package versions, device, seed,
    wall time and throughput (``images`` processed in ``seconds``)."""
    return {
        "config": json.loads(config.to_json_best_effort()),
        "git": _git_commit(),
        "versions": _versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": _device(),
        "seed": int(config.seed),
        "wall_seconds": round(float(seconds), 3),
        "images": int(images),
        "images_per_second": round(images / seconds, 3) if seconds > 0 else None,
        "command": " ".join(sys.argv),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
