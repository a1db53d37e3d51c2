"""Profile a few steps with ``jax.profiler`` and summarise the trace: top operations by time.

:func:`trace_steps` runs ``step()`` under ``jax.profiler.trace(..., create_perfetto_trace=True)``
and reads the Perfetto/Chrome JSON it writes (no TensorBoard plugin needed). On a GPU the device
rows (``/device:GPU:N`` streams) hold the kernels — XLA fusions, cuBLAS/cuDNN calls — so the
summary says where a step's device time goes; on CPU the XLA:CPU thunks are summarised instead.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import time
from typing import Any, Callable

import jax

# kernel families by name (the summary's ``by_kind``)
_KINDS = (
    ("attention (cuDNN)", re.compile(r"cudnn.*(fmha|flash|attention)|fmha|flash", re.I)),
    ("convolution (cuDNN)", re.compile(r"cudnn|conv|xmma_fprop|xmma_dgrad|xmma_wgrad|implicit_gemm", re.I)),
    ("matmul (cuBLAS/gemm)", re.compile(r"gemm|cublas|cutlass|matmul|dot|sm90_xmma|nvjet", re.I)),
    ("reduction", re.compile(r"reduce|reduction", re.I)),
    ("copy / transpose", re.compile(r"copy|transpose|memcpy|memset", re.I)),
    ("fusion (elementwise)", re.compile(r"fusion|loop_|input_", re.I)),
)


def _kind(name: str) -> str:
    for kind, pattern in _KINDS:
        if pattern.search(name):
            return kind
    return "other"


def _load_trace(logdir: str) -> dict[str, Any] | None:
    paths = sorted(glob.glob(os.path.join(logdir, "**", "perfetto_trace.json.gz"), recursive=True))
    if not paths:
        return None
    with gzip.open(paths[-1], "rt") as f:
        return json.load(f)


def summarize(trace: dict[str, Any], steps: int, top: int = 15) -> dict[str, Any]:
    """Top ``top`` operations by total time per step on the device rows (else every row)."""
    events = trace.get("traceEvents", trace if isinstance(trace, list) else [])
    names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    device = {pid for pid, n in names.items() if re.search(r"/device:(GPU|TPU)", n)}
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e and (not device or e["pid"] in device)]
    if not device:  # CPU: the XLA thunks, not the Python/host bookkeeping rows
        spans = [e for e in spans if not str(e.get("name", "")).startswith(("$", "PjitFunction", "ThunkExecutor"))]
    per_name: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.defaultdict(int)
    for e in spans:
        per_name[e["name"]] += e["dur"]
        count[e["name"]] += 1
    total = sum(per_name.values()) or 1.0
    by_kind: dict[str, float] = collections.defaultdict(float)
    for n, d in per_name.items():
        by_kind[_kind(n)] += d
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1])[:top]
    return {
        "rows": "device" if device else "host",
        "steps": steps,
        "busy_ms_per_step": total / 1e3 / steps,
        "top": [{"name": n[:120], "ms_per_step": d / 1e3 / steps, "share": d / total, "calls_per_step": count[n] / steps}
                for n, d in ranked],
        "by_kind": {k: {"ms_per_step": v / 1e3 / steps, "share": v / total}
                    for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
    }


def trace_steps(step: Callable[[], Any], logdir: str, steps: int = 3) -> dict[str, Any]:
    """Runs ``step()`` ``steps`` times under the profiler (each waited for); the trace stays in
    ``logdir``; returns :func:`summarize` of it plus the wall time per step while tracing."""
    os.makedirs(logdir, exist_ok=True)
    jax.block_until_ready(step())  # nothing left to compile or warm up inside the trace
    t0 = time.perf_counter()
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
        for _ in range(steps):
            jax.block_until_ready(step())
    wall = (time.perf_counter() - t0) / steps
    trace = _load_trace(logdir)
    if trace is None:
        return {"error": f"no perfetto trace under {logdir}", "wall_ms_per_step": wall * 1e3}
    out = summarize(trace, steps)
    out["wall_ms_per_step"] = wall * 1e3
    return out


def markdown(summary: dict[str, Any], title: str) -> str:
    """A short markdown section for the profile of one step."""
    if "top" not in summary:
        return f"### {title}\n\n{summary.get('error', 'no profile')}\n"
    lines = [f"### {title}", "",
             f"{summary['rows']} time {summary['busy_ms_per_step']:.2f} ms per step "
             f"(wall {summary['wall_ms_per_step']:.2f} ms while tracing)", "",
             "| kind | ms/step | share |", "|---|---|---|"]
    lines += [f"| {k} | {v['ms_per_step']:.3f} | {v['share']:.1%} |" for k, v in summary["by_kind"].items()]
    lines += ["", "| top op | ms/step | share | calls/step |", "|---|---|---|---|"]
    lines += [f"| `{t['name']}` | {t['ms_per_step']:.3f} | {t['share']:.1%} | {t['calls_per_step']:.0f} |"
              for t in summary["top"]]
    return "\n".join(lines) + "\n"
