"""Input-pipeline throughput: examples/s of ``make_loader`` with the CLIPSeg preprocessing.

    python -m medvlsm_jax.bench.bench_data [--dataset synthetic_polyp] [--data_dir DIR]
        [--workers 2] [--batch_size 16] [--batches 40] [--model_examples_per_s X]

Builds the synthetic set into a temporary data dir when ``--data_dir`` is not given. With
``--model_examples_per_s`` (the model's training throughput) it prints the ratio; the goal is
a loader at least 3x faster than the model.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import tensorflow_datasets as tfds

from medvlsm_jax.data import build_dataset, make_loader
from medvlsm_jax.models.registry import default_contract


def measure(dataset: str, data_dir: str, model: str, workers: int, batch_size: int,
            batches: int, warmup: int = 3) -> float:
    """Examples per second over ``batches`` training batches after ``warmup`` batches."""
    loader = make_loader(dataset, "train", default_contract(model), "random", batch_size, data_dir=data_dir,
                         num_epochs=None, worker_count=workers)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic_polyp")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--model", default="clipseg")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--model_examples_per_s", type=float, default=None)
    args = parser.parse_args()
    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or tmp
        if args.data_dir is None:
            build_dataset(args.dataset, data_dir=data_dir)
        for workers in args.workers:
            rate = measure(args.dataset, data_dir, args.model, workers, args.batch_size,
                           args.batches)
            ratio = (f", {rate / args.model_examples_per_s:.1f}x the model"
                     if args.model_examples_per_s else "")
            print(f"{args.dataset} {args.model} batch={args.batch_size} workers={workers}: "
                  f"{rate:.1f} examples/s{ratio}")


if __name__ == "__main__":
    main()
