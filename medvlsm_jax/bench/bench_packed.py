"""Packed vs sequential training: one dataset x N prompts, the same configs trained one run after
the other (``train_and_evaluate``, in this process) and as one pack (``train_pack``).

``python -m medvlsm_jax.bench.bench_packed --out benchmarks/results/packed.json``

Generates the synthetic polyp set (``--n-train`` images at ``--source-size``), trains the
tiny-variant CLIPSeg (frozen encoders, the feature cache on, as every paper-faithful CLIPSeg run)
at ``--image-size`` for ``--epochs`` epochs per prompt, without test evaluation (the same work in
both), and reports wall time and training images per second (every member's images over the
wall time, compilation and validation included). Sequential runs share this process (no process
start-up or imports per run, which favours them). Results (JSON) include the machine's load
average, since the CPU numbers are only comparable on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import jax


def _configs(data_dir: str, prompts: list[str], args: argparse.Namespace) -> list:
    from medvlsm_jax.config import load_config  # noqa: PLC0415

    out = []
    for p in prompts:
        c = load_config(f"clipseg:dataset=synthetic_polyp,prompt={p},variant={args.variant},"
                        f"image_size={args.image_size},loss=corrected")
        c.data.data_dir = data_dir
        c.train.update(batch_size=args.batch, num_epochs=args.epochs, min_epochs=args.epochs, progress=False,
                       log_every_steps=100)
        c.eval.update(batch_size=args.batch, after_training=False, hd95=False, write_masks=False)
        out.append(c)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=10)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--variant", default="tiny")
    p.add_argument("--n-train", type=int, default=64)
    p.add_argument("--source-size", type=int, default=96)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    from medvlsm_jax.data import sources  # noqa: PLC0415
    from medvlsm_jax.promptgen.synthetic import write_synthetic_dataset  # noqa: PLC0415
    from medvlsm_jax.train import loop, packed  # noqa: PLC0415

    tmp = tempfile.mkdtemp(prefix="bench_packed_")
    try:
        manual, data_dir = os.path.join(tmp, "manual"), os.path.join(tmp, "tfds")
        write_synthetic_dataset(manual, "synthetic_polyp", n_train=args.n_train, n_val=args.n_train // 4,
                                n_test=args.n_train // 4, size=(args.source_size, args.source_size))
        sources.build_dataset("synthetic_polyp", manual_dir=manual, data_dir=data_dir)
        prompts = [f"p{i}" for i in range(args.prompts)]
        configs = _configs(data_dir, prompts, args)
        images = args.epochs * (args.n_train // args.batch) * args.batch * len(prompts)

        load0 = os.getloadavg()
        start = time.time()
        per_run = []
        for i, c in enumerate(configs):
            t = time.time()
            loop.train_and_evaluate(c, os.path.join(tmp, f"seq{i}"))
            per_run.append(time.time() - t)
        seq = time.time() - start

        start = time.time()
        outs = packed.train_pack(configs, [os.path.join(tmp, f"pack{i}") for i in range(len(configs))])
        pck = time.time() - start
        load1 = os.getloadavg()
        assert all(not o["error"] for o in outs)
        result = {
            "what": f"CLIPSeg {args.variant} at {args.image_size}px, frozen encoders, feature cache on, "
                    f"{args.n_train} train images, batch {args.batch}, {args.epochs} epochs, "
                    f"{len(prompts)} prompts (P0-P{len(prompts) - 1}), no test evaluation",
            "device": f"{jax.devices()[0].platform} {jax.devices()[0].device_kind} x{jax.device_count()}",
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average_before_after": [round(load0[0], 2), round(load1[0], 2)],
            "train_images_all_runs": images,
            "sequential": {"wall_s": round(seq, 2), "images_per_s": round(images / seq, 2),
                           "per_run_s": [round(x, 2) for x in per_run]},
            "packed": {"wall_s": round(pck, 2), "images_per_s": round(images / pck, 2)},
            "speedup": round(seq / pck, 2),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
