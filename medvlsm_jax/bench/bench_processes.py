"""Scaling across processes: the trainer's step as P processes x D devices each.

    medvlsm-bench processes [--layouts 1x1,1x2,2x1] [--model clipseg] [--variant tiny]
        [--mode full] [--batch 16] [--size 64] [--warmup 3] [--iters 10] [--out benchmarks/results]
    (also: python -m medvlsm_jax.bench.bench_processes ...)

Every layout ``PxD`` runs in fresh child processes on this machine: one process with ``D``
devices, or ``P`` processes joined through ``--coordinator_address/--num_processes/--process_id``
(:mod:`medvlsm_jax.train.distributed`; gloo collectives on CPU) with ``D`` devices each. Each
child builds the run with :func:`medvlsm_jax.train.run.build_run`, feeds its own rows of the same
global batch (``jax.make_array_from_process_local_data``) and times waited-for train steps
(:func:`medvlsm_jax.bench.harness.time_steps`; after the frozen encoders' ``encode`` in the
``frozen`` mode). The global batch is the same in every layout (strong scaling).

Columns: img/s (global), ``scaling`` = img/s / (devices x the 1x1 img/s), and
``vs 1xN`` = img/s / the img/s of one process with the same number of devices: what splitting
the devices over processes costs (cross-process collectives, one runtime per process).

On CPU the devices are simulated (``--xla_force_host_platform_device_count``) and share the
machine's cores, so ``scaling`` measures overhead, not speed-up; ``vs 1xN`` is the figure to
read. GPU rows need one GPU per process (``CUDA_VISIBLE_DEVICES``) and as many GPUs as devices.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from medvlsm_jax.bench import harness

MODES = ("full", "frozen")


def parse_layout(text: str) -> tuple[int, int]:
    """``'2x1'`` -> (2 processes, 1 device each)."""
    try:
        p, d = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--layouts: {text!r} is not PROCESSESxDEVICES, e.g. 2x1") from None
    if p < 1 or d < 1:
        raise ValueError(f"--layouts: {text!r} needs at least one process and one device")
    return p, d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(devices: int) -> dict[str, str]:
    """This environment on the CPU with ``devices`` simulated devices, no inherited launch."""
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


def run_layout(processes: int, devices: int, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One layout's row, measured by fresh child processes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        port = _free_port()
        procs = []
        for i in range(processes):
            cmd = [sys.executable, "-m", "medvlsm_jax.bench.bench_processes", "worker", json.dumps(spec), out]
            if processes > 1:
                cmd += [f"127.0.0.1:{port}", str(processes), str(i)]
            procs.append(subprocess.Popen(cmd, env=child_env(devices), stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        try:
            logs = [p.communicate(timeout=timeout)[0] for p in procs]
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            return {"processes": processes, "devices_per_process": devices, "error": f"timed out after {timeout}s"}
        failed = [(p.returncode, log) for p, log in zip(procs, logs) if p.returncode]
        if failed:
            code, log = failed[0]
            return {"processes": processes, "devices_per_process": devices,
                    "error": f"exit {code}: {log.strip().splitlines()[-1] if log.strip() else ''}"[:300]}
        with open(out) as f:
            return json.load(f)


def worker(spec: dict[str, Any], out: str, coordinator: str | None, n: int | None, i: int | None) -> None:
    """Internal: one child of a layout; process 0 writes the row."""
    from medvlsm_jax.train import distributed

    distributed.initialize(coordinator, n, i, environ={})
    import jax

    from medvlsm_jax.bench import bench
    from medvlsm_jax.train import sharding as shd
    from medvlsm_jax.train.run import build_run

    config = bench.train_config(spec["model"], spec["variant"], "frozen" if spec["mode"] == "frozen" else "full",
                                spec["batch"], spec["size"], "float32")
    run = build_run(config, tokenizer=False)
    block, blocks = shd.process_block(run.mesh)
    b = spec["batch"] // blocks
    data = bench.make_batch(spec["batch"], run.contract, vocab_size=getattr(run.model_cfg, "vocab_size", None))
    local = {k: v[block * b:(block + 1) * b] for k, v in data.items()}
    raw = shd.put_batch({k: local[k] for k in run.contract.input_keys}, run.batch_sharding)
    feed = {"mask": shd.put_batch(local["mask"], run.batch_sharding)}
    state = run.init_state
    if not run.encoder_frozen:
        feed.update(raw)
    t0 = time.perf_counter()

    def step():
        nonlocal state
        if run.encoder_frozen:
            feed["features"] = run.steps.encode(state.params, run.frozen, state.rest, raw)
        state, out_ = run.steps.train(state, run.frozen, feed)
        return out_

    jax.block_until_ready(step())  # compiles
    first_s = time.perf_counter() - t0
    times = harness.time_steps(step, batch=spec["batch"], warmup=spec["warmup"], iters=spec["iters"])
    if jax.process_index() == 0:
        row = {"processes": jax.process_count(), "devices_per_process": jax.local_device_count(),
               "devices": jax.device_count(), "batch": spec["batch"], "size": run.contract.image_size[0],
               "first_step_s": first_s, **times}
        with open(out, "w") as f:
            json.dump(row, f)
    distributed.barrier("medvlsm-bench-done")


def add_efficiency(rows: list[dict[str, Any]]) -> None:
    """``scaling`` against the 1x1 row, ``vs_one_process`` against 1 x (same devices)."""
    ok = [r for r in rows if "img_per_s" in r]
    single = {r["devices"]: r for r in ok if r["processes"] == 1}
    for r in ok:
        if 1 in single and r["devices"] > 1:
            r["scaling"] = r["img_per_s"] / (r["devices"] * single[1]["img_per_s"])
        if r["processes"] > 1 and r["devices"] in single:
            r["vs_one_process"] = r["img_per_s"] / single[r["devices"]]["img_per_s"]


def table(rows: list[dict[str, Any]]) -> str:
    header = ["layout", "devices", "batch", "size", "img/s", "spread", "first step s", "scaling", "vs 1xN", "note"]
    body = [[f"{r['processes']}x{r['devices_per_process']}", r.get("devices"), r.get("batch"), r.get("size"),
             r.get("img_per_s"), r.get("spread"), r.get("first_step_s"), r.get("scaling"), r.get("vs_one_process"),
             r.get("error", "")] for r in rows]
    return harness.markdown_table(header, body)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medvlsm-bench processes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layouts", default="1x1,1x2,2x1", help="PROCESSESxDEVICES, comma-separated")
    p.add_argument("--model", default="clipseg")
    p.add_argument("--variant", default="tiny")
    p.add_argument("--mode", default="full", choices=MODES)
    p.add_argument("--batch", type=int, default=16, help="global batch (the same in every layout)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--timeout", type=float, default=900, help="seconds per layout")
    p.add_argument("--out", default="benchmarks/results", help="results root (<out>/<date>_<device>/)")
    p.add_argument("--name", default="processes")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "worker":
        rest = argv[1:]
        coordinator, n, i = (rest[2], int(rest[3]), int(rest[4])) if len(rest) > 2 else (None, None, None)
        worker(json.loads(rest[0]), rest[1], coordinator, n, i)
        return None
    args = parser().parse_args(argv)
    layouts = [parse_layout(x) for x in args.layouts.split(",") if x.strip()]
    bad = [f"{p}x{d}" for p, d in layouts if args.batch % (p * d)]
    if bad:
        raise ValueError(f"--batch {args.batch} does not split over layouts {bad}")
    spec = {k: getattr(args, k) for k in ("model", "variant", "mode", "batch", "size", "warmup", "iters")}
    rows = []
    for p, d in layouts:
        rows.append({**run_layout(p, d, spec, args.timeout), "model": args.model, "variant": args.variant,
                     "mode": args.mode})
        print(f"{p}x{d}: " + (f"{rows[-1]['img_per_s']:.1f} img/s" if "img_per_s" in rows[-1] else rows[-1]["error"]),
              flush=True)
    add_efficiency(rows)
    env = {**harness.environment(), "load_average": os.getloadavg()}
    result = {"benchmark": "processes", "env": env, "spec": spec, "rows": rows}
    text = table(rows)
    print(text)
    if not args.no_write:
        out_dir = harness.results_dir(args.out)
        head = (f"# processes: {args.model}-{args.variant} {args.mode} step, global batch {args.batch}, "
                f"{args.size} px; {env['device']} ({env['backend']}), {env['cpu_count']} CPUs, load "
                f"{env['load_average'][0]:.1f}, {env['date']}\n\n")
        harness.write_markdown(args.name, head + text, out_dir)
        print(f"\nwrote {harness.write_result(args.name, result, out_dir)}")
    return result


if __name__ == "__main__":
    main()
