"""Epoch time with and without the frozen-encoder feature cache:
``python -m medvlsm_jax.bench.bench_train [--epoch_variant base] [--epoch_images 800]`` (also
``medvlsm-bench epoch``).

The trainer's real loop on a synthetic set; the second epoch of each run is timed (the cached
run fills the cache during its first). The train-step comparison with PyTorch is
``medvlsm-bench models --modes frozen --torch``.
"""

from __future__ import annotations

import argparse
import os
import tempfile


def epoch_seconds(variant: str, n_train: int, root: str) -> dict[str, float]:
    from medvlsm_jax.config import load_config
    from medvlsm_jax.data import build_dataset
    from medvlsm_jax.promptgen.synthetic import write_synthetic_dataset
    from medvlsm_jax.train import loop

    manual, data_dir = os.path.join(root, "manual"), os.path.join(root, "tfds")
    write_synthetic_dataset(manual, "synthetic_polyp", n_train=n_train, n_val=16, n_test=4)
    build_dataset("synthetic_polyp", manual_dir=manual, data_dir=data_dir)
    out = {}
    for cache in ("off", "host"):
        c = load_config(f"clipseg:variant={variant},dataset=synthetic_polyp,prompt=p1")
        c.data.data_dir = data_dir
        c.train.update(batch_size=16, num_epochs=2, min_epochs=1, cache=cache, progress=False)
        c.eval.update(batch_size=16, after_training=False)
        res = loop.train_and_evaluate(c, os.path.join(root, f"run_{cache}"))
        out[cache] = res["meta"]["history"][1]["seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch_variant", default="base", help="CLIPSeg variant for the epoch timing")
    parser.add_argument("--epoch_images", type=int, default=800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        ep = epoch_seconds(args.epoch_variant, args.epoch_images, root)
    print(f"epoch ({args.epoch_images} images, CLIPSeg {args.epoch_variant} @ 352, batch 16, incl. 16-image val): "
          f"uncached {ep['off']:.1f}s, cached {ep['host']:.1f}s, speed-up {ep['off'] / ep['host']:.1f}x")


if __name__ == "__main__":
    main()
