"""The speed switches change no numbers (CPU): blocks scanned = unrolled (forward, gradients,
conversion keys, model folders either way), attention 'cudnn'/'auto' fall back to XLA off the
GPU, bf16 compute stays close to fp32 with an fp32 loss and fp32 parameters, the train step
donates its state, and reading losses back once per epoch (train.sync_every=0) trains exactly
as reading them every step, still stopping on a non-finite loss before anything is saved."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medvlsm_jax import weights
from medvlsm_jax.conversion import rules
from medvlsm_jax.models import clip, clipseg
from medvlsm_jax.train import checkpoint, loop
from medvlsm_jax.train.run import build_run
from tests.train.conftest import tiny_config


def _inputs(b=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.full((b, 77), 49407, np.int32)
    ids[:, 0], ids[:, 1:5] = 49406, rng.integers(300, 40000, (b, 4))
    am = (np.arange(77)[None] < 6).astype(np.int32).repeat(b, 0)
    return jnp.asarray(rng.standard_normal((b, size, size, 3), np.float32)), jnp.asarray(ids), jnp.asarray(am)


def _model(**fields):
    return clipseg.CLIPSeg(dataclasses.replace(clipseg.tiny(), **fields), rngs=nnx.Rngs(3))


def _forward(model):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, *x: nnx.merge(graphdef, s)(*x)), state


def _leaves_by_block(model):
    """Every parameter per block, whatever the layout (via the model-folder layout)."""
    from medvlsm_jax.ops import scan

    pure = nnx.state(model, nnx.Param).to_pure_dict()
    return jax.tree.map(np.asarray, scan.unstack_tree(pure, scan.stacked_paths(model)))


def test_scanned_blocks_equal_unrolled_blocks_forward_and_gradients():
    scanned, unrolled = _model(), _model(scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, _leaves_by_block(scanned), _leaves_by_block(unrolled))  # same init
    x = _inputs()
    (fs, ss), (fu, su) = _forward(scanned), _forward(unrolled)
    np.testing.assert_allclose(np.asarray(fs(ss, *x)), np.asarray(fu(su, *x)), atol=2e-5)

    def grads(model):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        g = jax.jit(jax.grad(lambda p: jnp.mean(nnx.merge(graphdef, p, rest)(*x) ** 2)))(params)
        nnx.update(model, g)  # the gradients, laid out like the parameters
        return _leaves_by_block(model)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads(scanned), grads(unrolled))


def test_conversion_keys_and_model_folders_are_per_block_either_way(tmp_path):
    scanned, unrolled = _model(), _model(scan_layers=False)
    keys = rules.expected_torch_keys(scanned)
    assert keys == rules.expected_torch_keys(unrolled)
    assert "clip.vision_model.encoder.layers.3.self_attn.q_proj.weight" in keys
    assert scanned.clip.vision_model.encoder.layers.self_attn.q_proj.kernel.shape[0] == 4  # stacked in memory
    weights.save_model(str(tmp_path / "s"), "clipseg", {}, scanned)
    weights.save_model(str(tmp_path / "u"), "clipseg", {}, unrolled)
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ck:  # the same per-block tree on disk
        saved_s = ck.metadata(str(tmp_path / "s" / weights.PARAMS_DIR))
        saved_u = ck.metadata(str(tmp_path / "u" / weights.PARAMS_DIR))
    tree = lambda m: jax.tree_util.tree_structure(getattr(m, "item_metadata", m).tree if hasattr(  # noqa: E731
        getattr(m, "item_metadata", m), "tree") else getattr(m, "item_metadata", m))
    assert tree(saved_s) == tree(saved_u)
    x = _inputs()
    want = np.asarray(_forward(scanned)[0](_forward(scanned)[1], *x))
    for src in ("s", "u"):  # a folder written either way loads into either layout
        for fields in ({}, {"scan_layers": False}):
            m = weights.restore_params(str(tmp_path / src), clipseg.CLIPSeg(
                dataclasses.replace(clipseg.tiny(), **fields), rngs=nnx.Rngs(99)))
            f, s = _forward(m)
            np.testing.assert_allclose(np.asarray(f(s, *x)), want, atol=2e-5)


def test_attention_cudnn_and_auto_fall_back_to_xla_off_the_gpu():
    assert jax.default_backend() == "cpu"
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 485, 12, 64)), jnp.bfloat16) for _ in range(3))
    ref = clip.attention(q, k, v, None, "xla")
    for impl in ("cudnn", "auto", None):
        np.testing.assert_array_equal(np.asarray(clip.attention(q, k, v, None, impl), np.float32),
                                      np.asarray(ref, np.float32))
    with pytest.raises(ValueError, match="attention implementation"):
        clip.attention(q, k, v, None, "flash")
    with pytest.raises(ValueError, match="attention="):
        _model(attention="flash")
    x = _inputs()
    (fa, sa), (fx, sx) = _forward(_model(attention="cudnn", dtype="bfloat16")), _forward(
        _model(attention="xla", dtype="bfloat16"))
    np.testing.assert_array_equal(np.asarray(fa(sa, *x)), np.asarray(fx(sx, *x)))


def test_bf16_compute_stays_close_to_fp32_with_fp32_parameters_and_loss(tiny_data_dir):
    x = _inputs(4)
    (f32, s32), (f16, s16) = _forward(_model()), _forward(_model(dtype="bfloat16"))
    a, b = np.asarray(f32(s32, *x)), np.asarray(f16(s16, *x))
    assert b.dtype == np.float32  # logits (and so the loss) in fp32
    # bf16 keeps ~3 significant digits per operation: the logits follow fp32 closely
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.995 and np.max(np.abs(a - b)) <= 0.25 * np.std(a)
    losses = {}
    for mp in (False, True):
        run = build_run(tiny_config(tiny_data_dir, mixed_precision=mp, cache="off"))
        state = jax.tree.map(lambda t: t.copy(), run.init_state)
        rng = np.random.default_rng(1)
        feed = {"pixel_values": rng.standard_normal((4, 32, 32, 3), np.float32), "input_ids": np.asarray(x[1]),
                "attention_mask": np.asarray(x[2]), "mask": (rng.random((4, 32, 32)) > 0.5).astype(np.float32)}
        state, out = run.steps.train(state, run.frozen, feed)
        assert out["loss"].dtype == jnp.float32
        assert {p.dtype for p in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
        losses[mp] = float(out["loss"])
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)


def test_train_step_donates_its_state(tiny_data_dir):
    run = build_run(tiny_config(tiny_data_dir, cache="off"))
    state = jax.tree.map(lambda t: t.copy(), run.init_state)
    rng = np.random.default_rng(0)
    _, ids, am = _inputs(4)
    feed = {"pixel_values": rng.standard_normal((4, 32, 32, 3), np.float32), "input_ids": np.asarray(ids),
            "attention_mask": np.asarray(am), "mask": np.ones((4, 32, 32), np.float32)}
    new, _ = run.steps.train(state, run.frozen, feed)
    jax.block_until_ready(new)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state.params))


def test_sync_once_per_epoch_trains_identically(tiny_data_dir, tmp_path):
    runs = {s: loop.train_and_evaluate(_no_eval(tiny_config(tiny_data_dir, sync_every=s, num_epochs=1)),
                                       str(tmp_path / str(s))) for s in (1, 0)}
    a, b = (jax.tree.leaves(runs[s]["state"].params) for s in (1, 0))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("seconds", "compile_s")} for e in h]  # noqa: E731
    assert strip(runs[1]["meta"]["history"]) == strip(runs[0]["meta"]["history"])


def test_deferred_sync_still_stops_before_saving_a_non_finite_state(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, lr=1e30, checkpoint_every_steps=1, cache="off", sync_every=0)
    with pytest.raises(loop.NonFiniteLossError, match=r"at step \d+ .*last good checkpoint"):
        loop.train_and_evaluate(config, str(tmp_path))
    ckpts = checkpoint.Checkpoints(str(tmp_path))
    restored = ckpts.restore_latest(build_run(config).init_state)
    ckpts.close()
    if restored is not None:  # whatever was saved is finite
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored[0].params))


def _no_eval(c):
    c.eval.after_training = False
    c.train.compile_cache = ""
    return c
