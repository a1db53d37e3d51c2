"""CRIS throughput: forward (eval) and train steps (BCE + Adam, train mode) img/s, compile apart.

    python -m medvlsm_jax.bench.bench_cris [--variant base] [--batch 2] [--size 416] [--warmup 1] [--iters 3]

Model-level figures (no trainer): ``inference`` = eval forward; ``full`` = one Adam step on
mean BCE over every parameter; ``frozen`` = the same with the CLIP backbone frozen (medvlsm's
``freeze_encoder=True``). Method of :mod:`medvlsm_jax.bench.harness`. Random weights and inputs
(nothing is downloaded); prints JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from medvlsm_jax.bench import harness
from medvlsm_jax.models.cris import CRIS
from medvlsm_jax.models.registry import build_model

__all__ = ["ALL_PARAMS", "FROZEN_BACKBONE", "main", "make_batch", "make_train_step", "run"]


# what a train step updates: everything (finetuning) or all but the CLIP backbone (medvlsm's
# default ``freeze_encoder=True``)
ALL_PARAMS = nnx.Param
FROZEN_BACKBONE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("backbone")))


def make_train_step(wrt: nnx.filterlib.Filter = ALL_PARAMS) -> Callable:
    """A jitted ``step(model, optimizer, pixel_values, input_ids, masks) -> loss``: one update
    of the ``wrt`` parameters on mean BCE-with-logits (CRIS's loss). The optimizer must have been
    built with the same ``wrt``."""

    def step(model: CRIS, optimizer: nnx.Optimizer, pixel_values, input_ids, masks) -> jax.Array:
        def loss_fn(m: CRIS):
            return optax.sigmoid_binary_cross_entropy(m(pixel_values, input_ids), masks).mean()

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
        optimizer.update(model, grads)
        return loss

    return nnx.jit(step)


def make_batch(batch: int, size: int, word_len: int, seed: int = 0):
    """Random NHWC images, token ids (bos, 5 words, eos, 49407 padding) and binary masks."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, size, size, 3), dtype=np.float32)
    ids = np.full((batch, word_len), 49407, np.int32)
    ids[:, 0] = 49406
    ids[:, 1:6] = rng.integers(1, 49406, (batch, 5))
    y = (rng.random((batch, size, size)) > 0.5).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(ids), jnp.asarray(y)


def _compiled_forward(model: CRIS, x, ids) -> tuple[harness.Compiled, Callable]:
    graphdef, state = nnx.split(model)

    def forward(state, x, ids):
        return nnx.merge(graphdef, state)(x, ids)

    c = harness.compile_jax(forward, state, x, ids)
    return c, lambda: c.fn(state, x, ids)


def _compiled_train(model: CRIS, wrt: nnx.filterlib.Filter, x, ids, y) -> tuple[harness.Compiled, Callable]:
    """A compiled pure train step; the returned closure threads the model/optimizer state."""
    optimizer = nnx.Optimizer(model, optax.adam(1e-5), wrt=wrt)
    graphdef, state = nnx.split((model, optimizer))
    inner = make_train_step(wrt)

    def step(state, x, ids, y):
        m, opt = nnx.merge(graphdef, state)
        loss = inner(m, opt, x, ids, y)
        return loss, nnx.state((m, opt))

    c = harness.compile_jax(step, state, x, ids, y)
    holder = [state]

    def call():
        loss, holder[0] = c.fn(holder[0], x, ids, y)
        return loss

    return c, call


def run(variant: str = "base", batch: int = 2, size: int = 416, warmup: int = 1, iters: int = 3) -> dict:
    """Median img/s and compile time of the eval forward and of train steps (all parameters /
    frozen backbone), timed with :mod:`medvlsm_jax.bench.harness` (compiled ahead of time, apart)."""
    model = build_model("cris", variant, img_size=size)
    x, ids, y = make_batch(batch, size, model.config.word_len)
    result = {"model": f"cris-{variant}", "batch": batch, "size": size, "env": harness.environment()}
    model.eval()
    steps = {"inference": _compiled_forward(model, x, ids)}
    model.train()
    steps["full"] = _compiled_train(model, ALL_PARAMS, x, ids, y)
    steps["frozen"] = _compiled_train(model, FROZEN_BACKBONE, x, ids, y)
    for mode, (compiled, call) in steps.items():
        times = harness.time_steps(call, batch=batch, warmup=warmup, iters=iters)
        result[mode] = harness.summarize_jax(times, [compiled], batch=batch, dtype="float32", n_devices=1)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="base")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=416)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    a = p.parse_args(argv)
    print(json.dumps(run(a.variant, a.batch, a.size, a.warmup, a.iters), indent=1))


if __name__ == "__main__":
    main()
