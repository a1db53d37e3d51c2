"""Persistent XLA compilation cache and compile accounting.

``train.compile_cache`` (run config) chooses where JAX keeps compiled executables between
processes, so that rerunning or resuming a run compiles nothing:

* ``"~/.cache/medvlsm-jax/xla"`` (default) — one cache shared by every run of this user;
* ``"workdir"`` — ``<workdir>/xla_cache``, next to the run's checkpoints;
* any other path; ``""`` / ``"off"`` — no persistent cache.

``$JAX_COMPILATION_CACHE_DIR``, when set, wins (JAX's own switch). Every executable is cached,
however fast it compiled (``jax_persistent_cache_min_compile_time_secs = 0``); on GPU the XLA
autotuning results are kept in the same folder.

:func:`counters` reports, process-wide, how many executables were built, how many came from the
persistent cache and the seconds spent (JAX's monitoring events): the difference of two
snapshots is what a piece of code compiled.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import jax

log = logging.getLogger(__name__)

DEFAULT_DIR = "~/.cache/medvlsm-jax/xla"
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_CACHE_SAVED = "/jax/compilation_cache/compile_time_saved_sec"

_lock = threading.Lock()
_counts = {"executables": 0, "cache_hits": 0, "seconds": 0.0, "saved_seconds": 0.0}
_listening = [False]


def _on_event(event: str, **_: Any) -> None:
    if event == _CACHE_HIT:
        with _lock:
            _counts["cache_hits"] += 1


def _on_duration(event: str, duration: float, **_: Any) -> None:
    if event == _BACKEND_COMPILE:
        with _lock:
            _counts["executables"] += 1
            _counts["seconds"] += duration
    elif event == _CACHE_SAVED:
        with _lock:
            _counts["saved_seconds"] += duration


def _listen() -> None:
    with _lock:
        if _listening[0]:
            return
        _listening[0] = True
    jax.monitoring.register_event_listener(_on_event)
    jax.monitoring.register_event_duration_secs_listener(_on_duration)


def counters() -> dict[str, float]:
    """Process-wide so far: ``executables`` built (compiled or loaded), ``cache_hits`` (loaded
    from the persistent cache), ``compiled`` (= the difference: really compiled), ``seconds``
    spent building them, ``saved_seconds`` (compile time the cache hits saved)."""
    _listen()
    with _lock:
        out = dict(_counts)
    out["compiled"] = out["executables"] - out["cache_hits"]
    return out


def since(before: dict[str, float]) -> dict[str, float]:
    """What was built since the snapshot ``before`` (:func:`counters`)."""
    now = counters()
    return {k: now[k] - before[k] for k in now}


def resolve_dir(setting: str | None, workdir: str | None = None) -> str | None:
    """The cache folder for a ``train.compile_cache`` setting (None: no persistent cache)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    setting = (setting or "").strip()
    if setting.lower() in ("", "off", "none"):
        return None
    if setting == "workdir":
        if not workdir:
            raise ValueError("train.compile_cache='workdir' needs a workdir")
        return os.path.join(os.path.abspath(workdir), "xla_cache")
    return os.path.abspath(os.path.expanduser(setting))


def enable(path: str | None) -> str | None:
    """Points JAX's persistent compilation cache at ``path`` (None: turns it off) for the rest
    of the process; returns the folder in use."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    _listen()
    current = jax.config.jax_compilation_cache_dir
    if path:
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if path != current:
        jax.config.update("jax_compilation_cache_dir", path)
        cc.reset_cache()  # JAX reads the folder once, at its first compile: make it read it again
    if path:
        log.info("persistent compilation cache: %s", path)
    return path


def setup(config: Any, workdir: str | None = None) -> str | None:
    """Enables the cache chosen by ``config.train.compile_cache`` (absent: the default)."""
    return enable(resolve_dir(config.train.get("compile_cache", DEFAULT_DIR), workdir))
