"""Timing, FLOP, MFU and memory helpers shared by every benchmark.

Method (the same for JAX and PyTorch):

* compile time apart: JAX steps are compiled ahead of time with ``jitted.lower(*args).compile()``
  (:func:`compile_jax`); the timed loop then calls the compiled executables only;
* ``warmup`` untimed steps, then ``iters`` timed steps, *each waited for* (JAX:
  ``jax.block_until_ready`` on the step's outputs; PyTorch: ``torch.cuda.synchronize`` on GPU);
  the figure is the median step time, with min/max and the relative spread ``(max-min)/median``;
* FLOPs per step from XLA's cost analysis of the *unoptimised lowering* of the step
  (:func:`count_flops`: ``jit(f).lower(...).cost_analysis()``, global over the devices, with the
  scanned transformer blocks traced unrolled because XLA counts a loop body once), never from
  the compiled executable: XLA:GPU leaves out the matrix products it hands to cuBLAS/cuDNN, which
  made the compiled count ~10x too low. The compiled executable's own figure is kept beside it
  (``xla_compiled_gflops_per_img``) for comparison. MFU = achieved FLOP/s / dense peak FLOP/s of
  the devices used (:data:`PEAK_FLOPS`, datasheet figures with their source in
  :data:`PEAK_SOURCES`; on CPU the peak is *measured* once per process with a large matmul, see
  :func:`measured_cpu_peak`, and shared by every simulated host device);
* memory: XLA's static estimate per device of each executable (arguments + outputs + temporaries
  - aliased/donated buffers), plus the allocator's process-wide peak where the backend reports
  one (``device.memory_stats()['peak_bytes_in_use']`` on GPU/TPU; cumulative over the process).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from medvlsm_jax.ops import scan as scan_lib

__all__ = [
    "PEAK_FLOPS", "PEAK_SOURCES", "Compiled", "compile_jax", "count_flops", "time_steps", "time_jax", "time_torch", "summarize_jax",
    "flops_fields", "peak_flops", "measured_cpu_peak", "cpu_peak_env", "process_peak_bytes", "environment",
    "device_slug", "results_dir", "write_result", "write_markdown", "markdown_row", "markdown_table",
]

# Dense peak FLOP/s per device (no sparsity; the datasheets print the 2:4-sparsity figure,
# twice these, with an asterisk). fp32 matmuls on Ampere/Hopper run on TF32 tensor cores at JAX's
# default precision, so float32 MFU there is against the TF32 column.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bfloat16": 989.4e12, "tf32": 494.7e12, "float32": 66.9e12},
    "H100 PCIe": {"bfloat16": 756.0e12, "tf32": 378.0e12, "float32": 51.2e12},
    "H100 NVL": {"bfloat16": 835.5e12, "tf32": 417.5e12, "float32": 60.0e12},
    "H200": {"bfloat16": 989.4e12, "tf32": 494.7e12, "float32": 66.9e12},
    "H200 NVL": {"bfloat16": 835.5e12, "tf32": 417.5e12, "float32": 60.0e12},
    "A100": {"bfloat16": 312.0e12, "tf32": 156.0e12, "float32": 19.5e12},
}
PEAK_SOURCES: dict[str, str] = {
    "H100 SXM": "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column (BF16 1,979 / TF32 989 TFLOPS "
                "with sparsity; dense = half)",
    "H100 PCIe": "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column (BF16 1,513 / TF32 756 sparse)",
    "H100 NVL": "NVIDIA H100 Tensor Core GPU datasheet, H100 NVL column (BF16 1,671 / TF32 835 sparse)",
    "H200": "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column (BF16 1,979 / TF32 989 TFLOPS "
            "with sparsity; dense = half)",
    "H200 NVL": "NVIDIA H200 Tensor Core GPU datasheet, H200 NVL column (BF16 1,671 / TF32 835 sparse)",
    "A100": "NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM column (BF16 312 / TF32 156 dense)",
}
_GPU_FLOAT32_KEY = "tf32"


def _gpu_table_key(device_kind: str) -> str | None:
    kind = device_kind.lower()
    for chip in ("h200", "h100"):
        if chip in kind:
            name = chip.upper()
            if "nvl" in kind:
                return f"{name} NVL"
            if chip == "h100":
                return "H100 PCIe" if "pcie" in kind else "H100 SXM"
            return name
    if "a100" in kind:
        return "A100"
    return None


CPU_PEAK_MATMUL = 2048  # side of the square matmul that measures the CPU's peak


def cpu_peak_env(dtype: str) -> str:
    """Environment variable that hands a measured CPU peak (FLOP/s) to child processes."""
    return f"MEDVLSM_BENCH_CPU_PEAK_{dtype.upper()}"


@functools.lru_cache(maxsize=None)
def measured_cpu_peak(dtype: str = "float32", n: int = CPU_PEAK_MATMUL, reps: int = 10) -> float:
    """Best achieved FLOP/s of an ``n x n`` matmul in ``dtype`` on the first JAX device (or the
    value a parent process measured, from :func:`cpu_peak_env`)."""
    if os.environ.get(cpu_peak_env(dtype)):
        return float(os.environ[cpu_peak_env(dtype)])
    a = jnp.ones((n, n), jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y).lower(a, a).compile()
    jax.block_until_ready(matmul(a, a))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def peak_flops(dtype: str, device: Any = None) -> tuple[float | None, str]:
    """(peak FLOP/s of one ``device`` in ``dtype``, where it comes from); (None, why) if unknown."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return measured_cpu_peak(dtype), f"this CPU measured ({dtype} {CPU_PEAK_MATMUL}^3 matmul, all host devices)"
    key = _gpu_table_key(getattr(device, "device_kind", ""))
    if key is None:
        return None, f"no peak listed for {device.device_kind!r}"
    column = _GPU_FLOAT32_KEY if dtype == "float32" else dtype
    return PEAK_FLOPS[key][column], f"{key} dense {column}: {PEAK_SOURCES[key]}"


def flops_fields(flops_per_step: float | None, median_s: float, batch: int, dtype: str,
                 n_devices: int) -> dict[str, Any]:
    """GFLOPs per image, achieved TFLOP/s and MFU for a step of ``batch`` images (``flops_per_step``
    over all devices, from :func:`count_flops`)."""
    if not flops_per_step:
        return {}
    peak, source = peak_flops(dtype)
    achieved = flops_per_step / median_s
    out = {"gflops_per_img": flops_per_step / batch / 1e9, "tflops_per_s": achieved / 1e12,
           "peak_source": source}
    if peak:
        # CPU: every simulated host device shares the one measured machine peak
        total_peak = peak if jax.devices()[0].platform == "cpu" else peak * n_devices
        out.update(peak_tflops=total_peak / 1e12, mfu=achieved / total_peak)
    return out


@dataclasses.dataclass
class Compiled:
    """An ahead-of-time compiled JAX executable with its compile time, FLOPs and memory."""

    fn: Callable
    compile_s: float
    flops: float | None  # per step, all devices together: the unoptimised lowering (count_flops)
    bytes_per_device: int | None  # XLA's static estimate: arguments + outputs + temps - aliased
    compiled_flops: float | None = None  # the compiled executable's own count (x devices), for comparison
    lower_s: float = 0.0  # of compile_s, the tracing + lowering
    compile_cpu_s: float = 0.0  # CPU seconds of this process over the lower + compile (robust to a busy host)
    inputs: dict[str, list[int]] | None = None  # shapes of the batch arrays the step is fed (bench rows record them)


def _cost_flops(analysis: Any) -> float | None:
    cost = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    value = float((cost or {}).get("flops", 0.0))
    return value or None


def count_flops(fn: Callable, *args) -> float | None:
    """FLOPs of one call of ``fn`` on ``args`` over all devices together: XLA's cost analysis of
    the unoptimised lowering (before SPMD partitioning, so global), with every scanned block
    traced unrolled (:func:`medvlsm_jax.ops.scan.unrolled_scans`). Nothing is compiled.

    ``fn`` may be a ``jax.jit`` result: its Python function is re-jitted under a fresh identity so
    that JAX's trace cache (which already holds the scanned trace) is not reused."""
    inner = getattr(fn, "__wrapped__", fn)
    try:
        with scan_lib.unrolled_scans():
            lowered = jax.jit(lambda *a: inner(*a)).lower(*args)
        return _cost_flops(lowered.cost_analysis())
    except Exception:  # noqa: BLE001 - cost analysis is best-effort on some backends
        return None


def compile_jax(fn: Callable, *args, n_devices: int | None = None, flops: bool = True) -> Compiled:
    """Lowers and compiles ``fn`` (a ``jax.jit`` result, or a function to jit) for ``args``; FLOPs
    from :func:`count_flops` (``flops=False``: not counted)."""
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = jitted.lower(*args)
    lower_s = time.perf_counter() - t0
    compiled = lowered.compile()
    compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    n_devices = n_devices or jax.device_count()
    compiled_flops = mem = None
    try:
        per_device = _cost_flops(compiled.cost_analysis())
        compiled_flops = per_device * n_devices if per_device else None
    except Exception:  # noqa: BLE001 - cost analysis is best-effort on some backends
        pass
    try:
        m = compiled.memory_analysis()
        mem = int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                  - m.alias_size_in_bytes)
    except Exception:  # noqa: BLE001 - memory analysis is best-effort on some backends
        pass
    total = count_flops(jitted, *args) if flops else None
    return Compiled(compiled, compile_s, total, mem, compiled_flops, lower_s, compile_cpu_s)


def time_steps(step: Callable[[], Any], *, batch: int, warmup: int = 2, iters: int = 10,
               sync: Callable[[Any], Any] = jax.block_until_ready) -> dict[str, float]:
    """Calls ``step()`` ``warmup`` times, then times ``iters`` calls, each followed by ``sync``."""
    for _ in range(warmup):
        sync(step())
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "spread": (max(times) - min(times)) / med,
            "img_per_s": batch / med, "steps": len(times)}


def summarize_jax(times: dict[str, float], compiled: Sequence[Compiled], *, batch: int, dtype: str,
                  n_devices: int) -> dict[str, Any]:
    """Timing + compile time + FLOPs/MFU + memory of a step made of ``compiled`` executables."""
    flops = [c.flops for c in compiled]
    mems = [c.bytes_per_device for c in compiled]
    out = dict(times, compile_s=sum(c.compile_s for c in compiled), compiles=len(compiled),
               compile_cpu_s=sum(c.compile_cpu_s for c in compiled))
    out.update(flops_fields(sum(flops) if all(flops) else None, times["median_s"], batch, dtype, n_devices))
    xla = [c.compiled_flops for c in compiled]
    out["xla_compiled_gflops_per_img"] = sum(xla) / batch / 1e9 if all(xla) else None
    out["xla_bytes_per_device"] = max(mems) if all(m is not None for m in mems) else None
    out["process_peak_bytes"] = process_peak_bytes()
    return out


def time_jax(fn: Callable, *args, batch: int, warmup: int = 2, iters: int = 10,
             dtype: str = "float32") -> dict[str, Any]:
    """A stateless function: compile (timed apart), then the median of waited-for calls."""
    c = compile_jax(fn, *args)
    times = time_steps(lambda: c.fn(*args), batch=batch, warmup=warmup, iters=iters)
    return summarize_jax(times, [c], batch=batch, dtype=dtype, n_devices=jax.device_count())


def time_torch(fn: Callable[[], Any], *, batch: int, warmup: int = 2, iters: int = 10) -> dict[str, Any]:
    """PyTorch: the median of waited-for calls (CUDA synchronised), CUDA peak memory when on GPU."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out = time_steps(fn, batch=batch, warmup=warmup, iters=iters,
                     sync=lambda _: torch.cuda.synchronize() if cuda else None)
    out["process_peak_bytes"] = torch.cuda.max_memory_allocated() if cuda else None
    return out


def process_peak_bytes() -> int | None:
    """Largest ``peak_bytes_in_use`` over the local devices (None where not reported, e.g. CPU)."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None


def environment() -> dict[str, Any]:
    dev = jax.devices()[0]
    env = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        import torch
    except ImportError:
        return env
    env.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
               torch_device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    return env


def device_slug() -> str:
    """A folder-friendly device name: ``cpu``, ``nvidia-h100-80gb-hbm3`` ..."""
    dev = jax.devices()[0]
    kind = "cpu" if dev.platform == "cpu" else getattr(dev, "device_kind", dev.platform)
    return "-".join("".join(ch if ch.isalnum() else " " for ch in kind.lower()).split())


def results_dir(root: str) -> str:
    """``<root>/<date>_<device>``."""
    return os.path.join(root, f"{time.strftime('%Y-%m-%d')}_{device_slug()}")


def write_result(name: str, result: dict[str, Any], out_dir: str | None) -> str | None:
    if not out_dir:
        return None
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return path


def write_markdown(name: str, text: str, out_dir: str | None) -> str | None:
    if not out_dir:
        return None
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.md")
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path


def markdown_row(cols: list[Any]) -> str:
    return "| " + " | ".join("" if c is None else f"{c:.3g}" if isinstance(c, float) else str(c)
                             for c in cols) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [markdown_row(list(header)), "|" + "---|" * len(header)]
    return "\n".join(lines + [markdown_row(list(r)) for r in rows])
