"""Training benchmark (CPU): ``python -m benchmarks.bench_train [--steps 5] [--epoch_variant tiny]``.

1. Train-step throughput at batch 4, 352x352, CLIPSeg rd64-refined sizes (random init, no
   download), decoder-only gradients, AdamW: the Flax trainer's step (jitted frozen encode +
   decoder train step) vs the original setup (transformers ``CLIPSegForImageSegmentation``
   with ``clip.requires_grad_(False)``, ``torch.optim.AdamW``), same batches, same process.
2. Time per epoch with and without the frozen-encoder feature cache on an 800-image synthetic
   set (second epoch of each run: the cached run fills the cache during its first epoch).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np


def _batch(b=4, size=352, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.full((b, 77), 49407, np.int32)
    ids[:, 0] = 49406
    ids[:, 1:6] = rng.integers(300, 40000, size=(b, 5))
    return {"pixel_values": rng.normal(size=(b, size, size, 3)).astype(np.float32), "input_ids": ids,
            "attention_mask": (np.arange(77)[None] < 7).astype(np.int32).repeat(b, 0),
            "mask": (rng.random((b, size, size)) > 0.7).astype(np.float32)}


def flax_step_rate(steps: int, batch: dict) -> float:
    from configs.clipseg import get_config
    from medvlsm_jax.train import trainer

    c = get_config("variant=base,loss=corrected,dataset=synthetic_polyp")
    c.train.update(optimizer="adamw", lr=2e-3, weight_decay=1e-3, batch_size=4, cache="off")
    c.eval.batch_size = 4
    run = trainer.build_run(c)
    state = run.state
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        state, out = run.train_step(state, run.frozen, trainer.model_inputs(run, "train", batch, state))
        jax.block_until_ready(out["loss"])
    return steps * 4 / (time.perf_counter() - start)


def torch_step_rate(steps: int, batch: dict) -> float:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.CLIPSegConfig(text_config={"eos_token_id": 2}, vision_config={"patch_size": 16, "image_size": 224},
                                     projection_dim=512, extract_layers=[3, 6, 9], reduce_dim=64,
                                     decoder_num_attention_heads=4, decoder_intermediate_size=2048,
                                     use_complex_transposed_convolution=True)
    model = transformers.CLIPSegForImageSegmentation(cfg)
    model.clip.requires_grad_(False)
    opt = torch.optim.AdamW(model.decoder.parameters(), lr=2e-3, weight_decay=1e-3)
    px = torch.from_numpy(batch["pixel_values"].transpose(0, 3, 1, 2).copy())
    ids, am = torch.from_numpy(batch["input_ids"].astype(np.int64)), torch.from_numpy(batch["attention_mask"].astype(np.int64))
    mask = torch.from_numpy(batch["mask"])
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        logits = model(pixel_values=px, input_ids=ids, attention_mask=am).logits
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * mask).sum((1, 2)) + 1e-5) / (p.sum((1, 2)) + mask.sum((1, 2)) + 1e-5)
        loss = (dice + 0.2 * torch.nn.functional.binary_cross_entropy_with_logits(logits, mask, reduction="none")
                .mean((1, 2))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * 4 / (time.perf_counter() - start)


def epoch_seconds(variant: str, n_train: int, root: str) -> dict[str, float]:
    from configs.clipseg import get_config
    from medvlsm_jax.data import build_dataset
    from medvlsm_jax.promptgen.synthetic import write_synthetic_dataset
    from medvlsm_jax.train import trainer

    manual, data_dir = os.path.join(root, "manual"), os.path.join(root, "tfds")
    write_synthetic_dataset(manual, "synthetic_polyp", n_train=n_train, n_val=16, n_test=4)
    build_dataset("synthetic_polyp", manual_dir=manual, data_dir=data_dir)
    out = {}
    for cache in ("off", "host"):
        c = get_config(f"variant={variant},dataset=synthetic_polyp,prompt=p1")
        c.data.data_dir = data_dir
        c.train.update(batch_size=16, num_epochs=2, min_epochs=1, cache=cache, progress=False)
        c.eval.update(batch_size=16, after_training=False)
        res = trainer.train_and_evaluate(c, os.path.join(root, f"run_{cache}"))
        out[cache] = res["meta"]["history"][1]["seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--epoch_variant", default="base", help="CLIPSeg variant for the epoch timing")
    parser.add_argument("--epoch_images", type=int, default=800)
    parser.add_argument("--skip_steps", action="store_true")
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    if not args.skip_steps:
        batch = _batch()
        fl, pt = flax_step_rate(args.steps, batch), torch_step_rate(args.steps, batch)
        print(f"train step, batch 4 @ 352, decoder-only AdamW: flax {fl:.2f} img/s, torch {pt:.2f} img/s, "
              f"speed-up {fl / pt:.2f}x")
    with tempfile.TemporaryDirectory() as root:
        ep = epoch_seconds(args.epoch_variant, args.epoch_images, root)
    print(f"epoch ({args.epoch_images} images, CLIPSeg {args.epoch_variant} @ 352, batch 16, incl. 16-image val): "
          f"uncached {ep['off']:.1f}s, cached {ep['host']:.1f}s, speed-up {ep['off'] / ep['host']:.1f}x")


if __name__ == "__main__":
    main()
