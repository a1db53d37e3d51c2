"""The paper's headline run, end to end: ``medvlsm-bench headline``.

CLIPSeg, paper recipe (Adam 1e-3, batch 16, frozen CLIP encoders, the frozen-feature cache on),
on a Kvasir-sized synthetic set — 800 / 100 / 100 images at Kvasir-SEG's typical original sizes
(JPEG images from about 500x330 to 1920x1072, PNG masks) — for 90 epochs with validation every
epoch, then the test split scored at the original resolution. The run is exactly the command a
user types (with its own compilation cache, ``<data-root>/xla_cache``, so the first run compiles
everything and a rerun with the same ``--data-root`` nothing)::

    python -m medvlsm_jax.main --config=configs/clipseg.py:dataset=synthetic_polyp,prompt=p0 \\
        --workdir=W --config.data.data_dir=D --config.train.num_epochs=90 --config.train.min_epochs=90 ...

timed from outside (process start to exit), and the split comes from the run's
``run_stats.json``: process start-up, build, compile (every executable), the first epoch (its
compiles, encoding the 800 training images into the cache, its decoder steps), the decoder
epochs 2..90 (validation included), the export and the test evaluation. Before it, grain's
examples/s on the training split (the model's preprocessing) is measured for a few worker
counts, and the fastest count is used for the run.

    medvlsm-bench headline [--variant base] [--train 800 --val 100 --test 100] [--epochs 90]
        [--workers 0,4,8,16] [--cache auto|host|device] [--bf16] [--prepare-only] [--data-root DIR]

The synthetic images are a small pool (``--pool`` distinct images per size class, drawn by
:mod:`medvlsm_jax.promptgen.synthetic`) copied under distinct names, so the set is written in
seconds while every file has a Kvasir-like size; the speed of the run does not depend on the
pixels. ``--prepare-only`` writes and builds the set (e.g. in the background while the GPU
benchmarks run) and exits; a later run with the same ``--data-root`` reuses it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from medvlsm_jax.bench import harness

DATASET = "synthetic_polyp"
# Kvasir-SEG's original image sizes (height, width): most around 530x620 to 576x720, some
# 1024x1280 and 1072x1920, a few small (332x487). Fractions of the set.
KVASIR_SIZES = (((530, 622), 0.25), ((576, 720), 0.45), ((1024, 1280), 0.15), ((1072, 1920), 0.10),
                ((332, 487), 0.05))
TINY_SIZES = (((40, 52), 0.5), ((48, 64), 0.5))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --------------------------------------------------------------------------- the data set


def _draw_pool(args: tuple[str, tuple[int, int], int, int]) -> str:
    """Writes ``n`` synthetic polyp images of ``size`` under ``root`` (a child process)."""
    from medvlsm_jax.promptgen.synthetic import write_synthetic_dataset

    root, size, n, seed = args
    write_synthetic_dataset(root, DATASET, n_train=n, n_val=0, n_test=0, seed=seed, size=tuple(size))
    return root


def _class_sizes(total: int, sizes: tuple) -> list[tuple[int, int]]:
    """``total`` image sizes following the fractions of ``sizes``, deterministic order."""
    counts = [int(round(frac * total)) for _, frac in sizes]
    counts[int(np.argmax(counts))] += total - sum(counts)
    out = [tuple(hw) for (hw, _), c in zip(sizes, counts) for _ in range(c)]
    rng = np.random.default_rng(0)
    return [out[i] for i in rng.permutation(len(out))]


def write_kvasir_like(manual: str, n_train: int, n_val: int, n_test: int, sizes: tuple = KVASIR_SIZES,
                      pool: int = 4, processes: int = 0) -> dict[str, Any]:
    """A medvlsm-layout ``synthetic_polyp`` folder under ``manual``: ``n_train + n_val + n_test``
    JPEG images (quality 95) with PNG masks at the sizes of ``sizes``, copied from a pool of
    ``pool`` drawn images per size, with the prompts generated from the pool's masks."""
    from PIL import Image

    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="kvasir_pool_")
    jobs = [(os.path.join(tmp, f"c{k}"), hw, pool, 100 + k) for k, (hw, _) in enumerate(sizes)]
    processes = processes or min(len(jobs), os.cpu_count() or 1)
    if processes > 1:
        with multiprocessing.get_context("spawn").Pool(processes) as p:
            p.map(_draw_pool, jobs)
    else:
        list(map(_draw_pool, jobs))
    pools = {}
    for (root, hw, _, _) in jobs:
        recs = json.loads(open(os.path.join(root, DATASET, "anns", "train.json")).read())
        pools[tuple(hw)] = [(os.path.join(root, DATASET), r) for r in recs]
    out = os.path.join(manual, DATASET)
    for sub in ("images", "masks", "anns"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    layout = _class_sizes(sum(counts.values()), sizes)
    jpeg_cache: dict[str, bytes] = {}
    i = 0
    for split, n in counts.items():
        records = []
        for _ in range(n):
            hw = layout[i]
            src_root, rec = pools[hw][i % len(pools[hw])]
            src_img = os.path.join(src_root, "images", rec["img_name"])
            if src_img not in jpeg_cache:  # re-encode the pool image once, as Kvasir's JPEGs
                buf = tempfile.SpooledTemporaryFile()
                Image.open(src_img).convert("RGB").save(buf, format="JPEG", quality=95)
                buf.seek(0)
                jpeg_cache[src_img] = buf.read()
            name = f"{split}_{i:04d}"
            with open(os.path.join(out, "images", name + ".jpg"), "wb") as f:
                f.write(jpeg_cache[src_img])
            shutil.copyfile(os.path.join(src_root, "masks", rec["mask_name"]),
                            os.path.join(out, "masks", name + ".png"))
            records.append({**rec, "img_name": name + ".jpg", "mask_name": name + ".png"})
            i += 1
        with open(os.path.join(out, "anns", f"{split}.json"), "w") as f:
            json.dump(records, f)
    shutil.rmtree(tmp, ignore_errors=True)
    hist: dict[str, int] = {}
    for hw in layout:
        hist[f"{hw[0]}x{hw[1]}"] = hist.get(f"{hw[0]}x{hw[1]}", 0) + 1
    return {"write_s": time.perf_counter() - t0, "sizes": hist, "pool_per_size": pool}


def prepare(data_root: str, n_train: int, n_val: int, n_test: int, sizes: tuple, pool: int) -> dict[str, Any]:
    """Writes and builds the set under ``data_root`` (``manual/`` and ``tfds/``); reuses a set
    already built there with the same counts (``prepare.json``)."""
    marker, lock = os.path.join(data_root, "prepare.json"), os.path.join(data_root, "preparing.pid")
    want = {"train": n_train, "val": n_val, "test": n_test, "sizes": [[list(hw), frac] for hw, frac in sizes],
            "pool": pool}
    _wait_for_other(lock)  # e.g. gpu_check.sh's background --prepare-only
    if os.path.exists(marker):
        with open(marker) as f:
            done = json.load(f)
        if done.get("request") == want:
            return done
    os.makedirs(data_root, exist_ok=True)
    with open(lock, "w") as f:
        f.write(str(os.getpid()))
    try:
        return _prepare(data_root, marker, want, n_train, n_val, n_test, sizes, pool)
    finally:
        os.remove(lock)


def _wait_for_other(lock: str, timeout: float = 600.0) -> None:
    """Waits while another live process holds ``lock`` (its pid)."""
    t0 = time.perf_counter()
    while os.path.exists(lock) and time.perf_counter() - t0 < timeout:
        try:
            pid = int(open(lock).read().strip() or 0)
            os.kill(pid, 0)  # raises if that process is gone
        except (ValueError, OSError):
            return
        if pid == os.getpid():
            return
        time.sleep(0.5)


def _prepare(data_root: str, marker: str, want: dict, n_train: int, n_val: int, n_test: int, sizes: tuple,
             pool: int) -> dict[str, Any]:
    from medvlsm_jax.data import build_dataset

    manual, data_dir = os.path.join(data_root, "manual"), os.path.join(data_root, "tfds")
    for stale in (manual, data_dir):  # a set built for another request
        shutil.rmtree(stale, ignore_errors=True)
    info = write_kvasir_like(manual, n_train, n_val, n_test, sizes, pool)
    t0 = time.perf_counter()
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    build_dataset(DATASET, manual_dir=manual, data_dir=data_dir)
    info.update(build_s=time.perf_counter() - t0, request=want, data_dir=data_dir)
    with open(marker, "w") as f:
        json.dump(info, f, indent=2)
    return info


# --------------------------------------------------------------------------- grain


def grain_rates(data_dir: str, image_size: int, workers: list[int], batch: int, batches: int,
                prefetch: int = 2) -> list[dict[str, Any]]:
    """Training-split examples/s of the loader (read, decode, resize, normalise, tokenize) with
    the CLIPSeg contract at ``image_size``, per worker count."""
    from medvlsm_jax.data import make_loader
    from medvlsm_jax.models import registry

    spec = registry.get_spec("clipseg")
    contract = spec.resolve_contract(spec.config("base"), image_size or None)
    rows = []
    for w in workers:
        loader = make_loader(DATASET, "train", contract, "p0", batch, data_dir=data_dir, num_epochs=None,
                             worker_count=w, prefetch_batches=prefetch)
        it = iter(loader)
        t0 = time.perf_counter()
        next(it)  # worker start-up and the first batch
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        rate = batches * batch / (time.perf_counter() - t0)
        rows.append({"workers": w, "prefetch_batches": prefetch, "batch": batch, "examples_per_s": rate,
                     "first_batch_s": first, "cpu_count": os.cpu_count()})
        del it
    return rows


# --------------------------------------------------------------------------- the run


def command(workdir: str, data_dir: str, *, variant: str, epochs: int, workers: int, cache: str, bf16: bool,
            image_size: int = 0, batch: int = 16, eval_batch: int = 32, compile_cache: str = "",
            extra: list[str] | None = None) -> list[str]:
    """The ``python -m medvlsm_jax.main`` command of the headline run."""
    arg = f"dataset={DATASET},prompt=p0,recipe=paper,variant={variant}" + (f",image_size={image_size}"
                                                                           if image_size else "")
    cmd = [sys.executable, "-m", "medvlsm_jax.main", f"--workdir={workdir}", f"--config=configs/clipseg.py:{arg}",
           f"--config.data.data_dir={data_dir}", f"--config.data.worker_count={workers}",
           f"--config.train.num_epochs={epochs}", f"--config.train.min_epochs={epochs}",
           f"--config.train.batch_size={batch}", f"--config.train.compile_cache={compile_cache}",
           f"--config.train.cache={cache}", "--config.train.sync_every=0", "--config.train.progress=false",
           f"--config.eval.batch_size={eval_batch}", "--config.eval.write_masks=false"]
    if bf16:
        cmd.append("--config.train.mixed_precision=true")
    return cmd + list(extra or [])


def split(stats: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """Where the time went, from the run's ``run_stats.json`` and its wall time."""
    epochs = stats["epochs"]
    first = epochs[0] if epochs else {}
    rest = [e["seconds"] for e in epochs[1:]]
    decoder_epoch = statistics.median(rest) if rest else 0.0
    out = {
        "wall_s": wall_s,
        "startup_s": wall_s - stats["total_s"],  # interpreter, imports, flags, JAX backend
        "build_s": stats["phases"]["build_s"],
        "compile_s": stats["compile"]["seconds"],
        "executables": stats["compile"]["executables"],
        "compiled": stats["compile"]["compiled"],
        "cache_hits": stats["compile"]["cache_hits"],
        "epoch1_s": first.get("seconds"),
        "epoch1_compile_s": first.get("compile_s"),
        # epoch 1 = compiles + encoding every training image into the cache + one decoder epoch
        "epoch1_encode_s": max((first.get("seconds") or 0.0) - (first.get("compile_s") or 0.0) - decoder_epoch,
                               0.0) if epochs else None,
        "decoder_epochs": len(rest),
        "decoder_epochs_s": sum(rest),
        "decoder_epoch_median_s": decoder_epoch,
        "train_s": stats["phases"]["train_s"],
        "export_s": stats["phases"]["export_s"],
        "test_s": stats["phases"]["test_s"],
        "epochs": len(epochs),
        "feature_cache": stats.get("feature_cache"),
    }
    return out


def salvage(workdir: str) -> dict[str, Any] | None:
    """The epoch history of a run killed before it wrote ``run_stats.json``: the ``meta`` of its
    latest checkpoint (saved after every epoch)."""
    import orbax.checkpoint as ocp

    root = os.path.join(workdir, "checkpoints", "latest")
    if not os.path.isdir(root):
        return None
    mngr = ocp.CheckpointManager(root, item_names=("meta",))
    try:
        step = mngr.latest_step()
        if step is None:
            return None
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return dict(meta)
    finally:
        mngr.close()


def partial_split(meta: dict[str, Any], epochs: int, wall_s: float) -> dict[str, Any]:
    """Epochs done by a run cut short, and the projected total for ``epochs``."""
    hist = meta.get("history", [])
    rest = [e["seconds"] for e in hist[1:]]
    per = statistics.median(rest) if rest else None
    out = {"cut_short": True, "epochs_done": len(hist), "wall_s": wall_s,
           "epoch1_s": hist[0]["seconds"] if hist else None,
           "epoch1_compile_s": hist[0].get("compile_s") if hist else None,
           "decoder_epoch_median_s": per}
    if hist and per is not None:
        done = sum(e["seconds"] for e in hist)
        out[f"projected_train_s_{epochs}_epochs"] = done + per * (epochs - len(hist))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    tiny = args.variant == "tiny"
    sizes = TINY_SIZES if tiny else KVASIR_SIZES
    data_root = args.data_root or tempfile.mkdtemp(prefix="headline_data_")
    prep = prepare(data_root, args.train, args.val, args.test, sizes, args.pool)
    result: dict[str, Any] = {"benchmark": "headline", "prepare": prep}
    if args.prepare_only:
        print(json.dumps(prep, indent=2))
        return result
    import jax

    result["env"] = harness.environment()
    data_dir = prep["data_dir"]
    image_size = 32 if tiny else 0
    rows = grain_rates(data_dir, image_size or 352, args.workers, args.batch, args.grain_batches)
    result["grain"] = rows
    best = max(rows, key=lambda r: r["examples_per_s"])["workers"] if rows else 0
    cache = args.cache if args.cache != "auto" else ("device" if jax.default_backend() == "gpu" else "host")
    workdir = tempfile.mkdtemp(prefix="headline_run_")
    cmd = command(workdir, data_dir, variant=args.variant, epochs=args.epochs, workers=best, cache=cache,
                  bf16=args.bf16, image_size=image_size, batch=args.batch, eval_batch=args.eval_batch,
                  compile_cache=args.compile_cache or os.path.join(data_root, "xla_cache"), extra=args.extra)
    result["command"] = " ".join(cmd)
    print("$ " + result["command"], flush=True)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    timeout = max(args.timeout - (time.perf_counter() - start), 10.0) if args.timeout else None
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True)
        result["returncode"] = proc.returncode
        if proc.returncode != 0:
            result["error"] = (proc.stderr or proc.stdout)[-3000:]
    except subprocess.TimeoutExpired:
        result["returncode"] = "timeout"
        result["error"] = f"stopped after {timeout:.0f} s (the time left)"
        meta = salvage(workdir)
        if meta is not None:
            result["partial"] = partial_split(meta, args.epochs, time.perf_counter() - t0)
    wall = time.perf_counter() - t0
    stats_path = os.path.join(workdir, "run_stats.json")
    if os.path.exists(stats_path):
        with open(stats_path) as f:
            stats = json.load(f)
        result["split"] = split(stats, wall)
        result["run_stats"] = stats
        res_path = os.path.join(workdir, "eval", "results.json")
        if os.path.exists(res_path):
            with open(res_path) as f:
                result["test_results"] = json.load(f)
    result.update(workers=best, cache=cache, epochs=args.epochs, variant=args.variant, workdir=workdir,
                  images={"train": args.train, "val": args.val, "test": args.test})
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        if not args.data_root:
            shutil.rmtree(data_root, ignore_errors=True)
    return result


def table(result: dict[str, Any]) -> str:
    lines = []
    s = result.get("split")
    if s:
        rows = [["wall (process start to exit)", s["wall_s"]], ["start-up (imports, backend)", s["startup_s"]],
                ["build (model, optimiser, data)", s["build_s"]],
                [f"compile ({s['executables']} executables, {s['cache_hits']} from the cache)", s["compile_s"]],
                ["epoch 1 (compiles + encode + decoder)", s["epoch1_s"]],
                ["  of which compiles", s["epoch1_compile_s"]], ["  of which encoding the train set", s["epoch1_encode_s"]],
                [f"decoder epochs 2..{s['epochs']} (validation included)", s["decoder_epochs_s"]],
                ["  per epoch (median)", s["decoder_epoch_median_s"]], ["export", s["export_s"]],
                ["test evaluation at original size", s["test_s"]]]
        lines.append(harness.markdown_table(["phase", "seconds"], rows))
    p = result.get("partial")
    if p:
        rows = [[k, v] for k, v in p.items()]
        lines.append("cut short by the time budget:\n\n" + harness.markdown_table(["field", "value"], rows))
    if result.get("grain"):
        lines.append(harness.markdown_table(
            ["grain workers", "prefetch", "batch", "examples/s", "first batch s"],
            [[r["workers"], r["prefetch_batches"], r["batch"], r["examples_per_s"], r["first_batch_s"]]
             for r in result["grain"]]))
    if result.get("error"):
        lines.append("error: " + result["error"].strip().splitlines()[-1])
    return "\n\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medvlsm-bench headline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="base", help="base, or tiny (32 px, small images: a smoke run)")
    p.add_argument("--train", type=int, default=800)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--test", type=int, default=100)
    p.add_argument("--pool", type=int, default=4, help="distinct drawn images per size class")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--batch", type=int, default=16, help="training batch (the paper's 16)")
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",") if x], default=[0, 4, 8, 16],
                   help="grain worker counts to measure; the fastest runs the training")
    p.add_argument("--grain-batches", type=int, default=20)
    p.add_argument("--cache", default="auto", help="feature cache: auto (device on GPU, host on CPU), host, device")
    p.add_argument("--bf16", action="store_true", help="train.mixed_precision (the paper recipe is fp32)")
    p.add_argument("--timeout", type=float, default=0, help="seconds before the run is killed (0: none)")
    p.add_argument("--data-root", default=None, help="where the set is written/built (reused when present)")
    p.add_argument("--compile-cache", default="", help="the run's persistent compilation cache (default: "
                   "<data-root>/xla_cache: cold on the first run, warm on a rerun with the same data root)")
    p.add_argument("--prepare-only", action="store_true", help="write and build the set, then exit")
    p.add_argument("--keep", action="store_true", help="keep the run's workdir")
    p.add_argument("--extra", action="append", default=[], help="more --config.* flags for the run")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="headline")
    p.add_argument("--no-write", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.variant == "tiny" and args.train == 800:
        args.train, args.val, args.test, args.batch, args.eval_batch = 8, 4, 4, 4, 4
    result = run(args)
    if args.prepare_only:
        return result
    text = table(result)
    print(text)
    if not args.no_write:
        out_dir = harness.results_dir(args.out)
        env = result["env"]
        head = (f"# headline: CLIPSeg-{args.variant}, paper recipe, {args.epochs} epochs, "
                f"{args.train}/{args.val}/{args.test} Kvasir-sized synthetic images, {env['device']} "
                f"({env['backend']}), {env['date']}\n\n`{result.get('command', '')}`\n\n")
        harness.write_markdown(args.name, head + text, out_dir)
        print(f"\nwrote {harness.write_result(args.name, result, out_dir)}")
    if result.get("returncode"):
        raise SystemExit(f"the headline run failed (exit {result['returncode']})")
    return result


if __name__ == "__main__":
    main()
