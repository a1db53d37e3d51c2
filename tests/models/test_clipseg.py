"""CLIPSeg on its tiny variant: shapes, any multiple of the patch size, encode/decode split."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medvlsm_jax.models import registry
from medvlsm_jax.models.clipseg import CLIPSeg, tiny


@pytest.fixture(scope="module")
def model():
    return registry.build_model("clipseg", "tiny", seed=0)


def _inputs(b, h, w, seed=0):
    rng = np.random.default_rng(seed)
    px = jnp.asarray(rng.normal(size=(b, h, w, 3)), jnp.float32)
    ids = np.full((b, 77), 49407, np.int32)
    ids[:, 0] = 49406
    ids[:, 1:4] = rng.integers(300, 40000, size=(b, 3))
    ids[:, 4] = 49407
    mask = (np.arange(77)[None] < 5).astype(np.int32).repeat(b, 0)
    return px, jnp.asarray(ids), jnp.asarray(mask)


@pytest.mark.parametrize("hw", [(64, 64), (96, 96), (64, 112)])
def test_logits_shape_at_any_multiple_of_patch(model, hw):
    px, ids, am = _inputs(2, *hw)
    out = nnx.jit(lambda m, *a: m(*a))(model, px, ids, am)
    chex.assert_shape(out, (2, *hw))
    chex.assert_tree_all_finite(out)


def test_rejects_size_not_multiple_of_patch(model):
    px, ids, am = _inputs(1, 60, 64)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(px, ids, am)


def test_encode_decode_equals_call(model):
    px, ids, am = _inputs(2, 64, 64, seed=3)
    feats = model.encode(px, ids, am)
    assert len(feats["activations"]) == len(model.config.extract_layers)
    chex.assert_shape(feats["conditional"], (2, model.config.projection_dim))
    np.testing.assert_allclose(np.asarray(model.decode(feats)), np.asarray(model(px, ids, am)), atol=1e-6)


def test_vision_tower_stops_at_deepest_extracted_layer():
    cfg = tiny()
    m = CLIPSeg(cfg, rngs=nnx.Rngs(0))
    enc = m.clip.vision_model.encoder
    assert enc.depth == max(cfg.extract_layers) + 1 < cfg.vision_layers
    assert enc.layers.self_attn.q_proj.kernel.shape[0] == enc.depth  # one stacked (scanned) block
    with pytest.raises(ValueError, match="go deeper"):
        CLIPSeg(cfg.__class__(**{**cfg.to_dict(), "extract_layers": (1, 9)}), rngs=nnx.Rngs(0))


def test_prompt_changes_logits(model):
    px, ids, am = _inputs(1, 64, 64)
    ids2 = ids.at[:, 2].set(1234)
    assert not np.allclose(np.asarray(model(px, ids, am)), np.asarray(model(px, ids2, am)))


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        registry.get_spec("nope")
    with pytest.raises(KeyError, match="no variant"):
        registry.get_spec("clipseg").config("huge")
    with pytest.raises(KeyError, match="unknown keys"):
        registry.config_from_dict("clipseg", {"bogus": 1})


def test_bf16_compute_dtype_runs():
    m = registry.build_model("clipseg", "tiny", dtype="bfloat16")
    px, ids, am = _inputs(1, 64, 64)
    out = m(px, ids, am)
    assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())
    assert jax.tree.leaves(nnx.state(m, nnx.Param))[0].dtype == jnp.float32
