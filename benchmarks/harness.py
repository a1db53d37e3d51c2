"""Timing helpers shared by every benchmark: compile time apart, median of waited-for steps."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax


def _stats(times: list[float], batch: int) -> dict[str, float]:
    med = statistics.median(times)
    return {
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "img_per_s": batch / med,
        "steps": len(times),
    }


def time_jax(fn: Callable, *args, batch: int, warmup: int = 2, iters: int = 10) -> dict[str, float]:
    """Compiles ``jax.jit(fn)`` (timed apart), then times ``iters`` calls, each blocked on."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    out = _stats(times, batch)
    out["compile_s"] = compile_s
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        out["gflops_per_img"] = float(cost.get("flops", 0.0)) / batch / 1e9
    except Exception:  # noqa: BLE001 - cost analysis is best-effort on some backends
        pass
    return out


def time_torch(fn: Callable[[], Any], *, batch: int, warmup: int = 2, iters: int = 10) -> dict[str, float]:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return _stats(times, batch)


def environment() -> dict[str, Any]:
    dev = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_result(name: str, result: dict[str, Any], out_dir: str | None) -> str | None:
    if not out_dir:
        return None
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return path


def markdown_row(cols: list[Any]) -> str:
    return "| " + " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in cols) + " |"
