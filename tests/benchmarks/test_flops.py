"""True FLOPs: the benchmarks count FLOPs from the unoptimised lowering (scanned blocks unrolled),
which for CLIPSeg-base inference at 352² must agree with an analytic count derived here from the
config (matrix products and convolutions, 2 FLOPs per multiply-add)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medvlsm_jax.bench import harness
from medvlsm_jax.models import clipseg
from medvlsm_jax.ops import scan as scan_lib


def _block(t: int, d: int, m: int) -> float:
    """A transformer block over ``t`` tokens of width ``d``, MLP width ``m``: q/k/v/out
    projections, scores and weighted values, two MLP matmuls."""
    return 2 * t * d * d * 4 + 2 * t * t * d * 2 + 2 * t * d * m * 2


def analytic_inference_flops(cfg: clipseg.CLIPSegConfig, size: int, text_len: int = 77) -> float:
    """FLOPs of one CLIPSeg forward at ``size``² (per image)."""
    p, d, rd = cfg.patch_size, cfg.vision_hidden_size, cfg.reduce_dim
    g = size // p
    t = g * g + 1
    vision = 2 * g * g * (3 * p * p) * d + cfg.vision_depth * _block(t, d, cfg.vision_intermediate_size)
    text = cfg.text_layers * _block(text_len, cfg.text_hidden_size, cfg.text_intermediate_size)
    text += 2 * cfg.text_hidden_size * cfg.projection_dim  # projection of the pooled EOS feature
    n = len(cfg.extract_layers)
    decoder = n * 2 * t * d * rd + 2 * 2 * cfg.projection_dim * rd  # reduces, FiLM
    decoder += n * _block(t, rd, cfg.decoder_intermediate_size)
    k = p // 4  # conv 3x3, then two transposed convs k x k, stride k
    decoder += 2 * g * g * 9 * rd * rd + 2 * g * g * k * k * rd * (rd // 2) + 2 * (g * k) ** 2 * k * k * (rd // 2)
    return vision + text + decoder


def _forward(cfg, abstract=False):
    build = lambda: clipseg.CLIPSeg(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    model = nnx.eval_shape(build) if abstract else build()  # abstract: shapes only, nothing allocated
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, px, ids, am: nnx.merge(graphdef, s)(px, ids, am)), state


def _inputs(b, size):
    return (jnp.zeros((b, size, size, 3)), jnp.full((b, 77), 49407, jnp.int32), jnp.ones((b, 77), jnp.int32))


def test_clipseg_base_inference_flops_match_the_analytic_count():
    cfg, b, size = clipseg.rd64_refined(), 2, 352
    fn, state = _forward(cfg, abstract=True)
    counted = harness.count_flops(fn, state, *_inputs(b, size))
    want = b * analytic_inference_flops(cfg, size)
    assert 75e9 < want / b < 90e9  # ~82 GFLOP/img: 10 ViT-B blocks over 485 tokens dominate
    assert counted == pytest.approx(want, rel=0.10)
    # the scanned lowering alone counts each tower's loop body once: far too low
    scanned = fn.lower(state, *_inputs(b, size)).cost_analysis()
    scanned = scanned[0] if isinstance(scanned, (list, tuple)) else scanned
    assert scanned["flops"] < 0.4 * want


def test_unrolled_count_equals_the_unscanned_model_and_leaves_the_jit_cache_alone():
    cfg = clipseg.tiny()
    fn, state = _forward(cfg)
    args = (state, *_inputs(2, 64))
    scanned_hlo = fn.lower(*args).as_text()
    assert "while" in scanned_hlo
    counted = harness.count_flops(fn, *args)
    plain, plain_state = _forward(clipseg.CLIPSegConfig(**{**cfg.to_dict(), "scan_layers": False}))
    assert counted == pytest.approx(harness.count_flops(plain, plain_state, *args[1:]), rel=1e-6)
    assert fn.lower(*args).as_text() == scanned_hlo  # the cached trace is still the scanned one
    assert not scan_lib._UNROLL[0]


def test_harness_reports_lowering_flops_and_the_compiled_count_apart():
    cfg = clipseg.tiny()
    fn, state = _forward(cfg)
    args = (state, *_inputs(2, 64))
    c = harness.compile_jax(fn, *args)
    assert c.flops == pytest.approx(harness.count_flops(fn, *args))
    assert c.compiled_flops is not None and c.compile_s >= c.lower_s > 0
    np.testing.assert_allclose(np.asarray(c.fn(*args)), np.asarray(fn(*args)), atol=1e-6)
