"""Flax side of the training-parity tests: ``n`` train steps of the real trainer from a model
folder on given batches. Run in-process (1 device) or as a script under
``XLA_FLAGS=--xla_force_host_platform_device_count=4``:

    python tests/train/parity_steps.py INIT_DIR BATCHES.npz OUT.npz
"""

from __future__ import annotations

import sys

import jax
import numpy as np


def flax_steps(init_dir: str, batches: list[dict[str, np.ndarray]], *, variant_overrides: dict) -> tuple[list, dict]:
    """(losses, {path: decoder param}) after one train step per batch (AdamW, corrected loss)."""
    from medvlsm_jax.config import load_config
    from medvlsm_jax.train import loop
    from medvlsm_jax.train.run import build_run

    c = load_config("clipseg:variant=tiny,loss=corrected,dataset=synthetic_polyp,prompt=p0")
    c.model.init = init_dir
    c.model.overrides.update(variant_overrides)
    c.train.update(optimizer="adamw", lr=1e-3, weight_decay=1e-3, batch_size=len(batches[0]["mask"]), cache="off")
    c.eval.batch_size = c.train.batch_size
    run = build_run(c)
    state, losses = run.init_state, []
    for batch in batches:
        state, out = run.steps.train(state, run.frozen, loop.model_inputs(run, None, "train", batch, state))
        losses.append(float(jax.block_until_ready(out["loss"])))
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
    return losses, flat


def load_batches(path: str) -> tuple[list[dict[str, np.ndarray]], dict]:
    data = np.load(path, allow_pickle=True)
    n = int(data["n"])
    batches = [{k: data[f"{i}/{k}"] for k in ("pixel_values", "input_ids", "attention_mask", "mask")} for i in range(n)]
    return batches, data["overrides"].item()


if __name__ == "__main__":
    init_dir, batches_path, out_path = sys.argv[1:4]
    batches, overrides = load_batches(batches_path)
    losses, params = flax_steps(init_dir, batches, variant_overrides=overrides)
    np.savez(out_path, losses=np.asarray(losses), devices=jax.device_count(), **params)
