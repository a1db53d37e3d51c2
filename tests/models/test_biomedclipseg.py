"""BiomedCLIPSeg at tiny size: shapes, encode/decode split, the blocks actually run, masks,
dropout in train mode only, configuration errors. Parity with medvlsm is in
tests/conversion/test_biomedclipseg_conversion.py. One model is built (initialisation is the slow
part on CPU); the others share its weights or are abstract."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medvlsm_jax.models import registry
from medvlsm_jax.models.biomedclipseg import BiomedCLIPSeg

# the tiny variant with one block past the deepest tap
OVERRIDES = dict(vision_layers=6, extract_layers=(1, 3, 4))


@pytest.fixture(scope="module")
def model():
    m = registry.build_model("biomedclipseg", "tiny", seed=0, **OVERRIDES)
    m.eval()
    return m


def _inputs(b, size=224, seed=0, length=256):
    rng = np.random.default_rng(seed)
    px = jnp.asarray(rng.normal(size=(b, size, size, 3)), jnp.float32)
    ids = np.zeros((b, length), np.int32)  # [PAD] = 0
    for i in range(b):
        n = 3 + 2 * i
        ids[i, :n] = [2, *rng.integers(5, 30000, size=n - 2), 3]  # [CLS] ... [SEP]
    return px, jnp.asarray(ids), jnp.asarray((ids != 0).astype(np.int32))


@nnx.jit
def _everything(m, px, ids, am):
    feats = m.encode(px, ids, am)
    trunk = m.biomedclip.visual.trunk
    x, blocks = trunk.embed(px), []
    for block in trunk.blocks:
        x = block(x)
        blocks.append(x)
    return m(px, ids, am), m.decode(feats), feats, m.encode_image(px), blocks


def test_logits_features_and_taps(model):
    px, ids, am = _inputs(2)
    out, decoded, feats, image, blocks = _everything(model, px, ids, am)
    cfg = model.config
    chex.assert_shape(out, (2, 224, 224))
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(out), atol=1e-5)
    chex.assert_shape(feats["activations"], [(2, cfg.grid ** 2 + 1, cfg.vision_width)] * 3)
    chex.assert_shape([feats["conditional"], image], [(2, cfg.embed_dim)] * 2)
    for tap, i in zip(feats["activations"], cfg.extract_layers):  # block outputs, no embedding entry
        np.testing.assert_allclose(np.asarray(tap), np.asarray(blocks[i]), atol=1e-6)
    assert registry.get_spec("biomedclipseg").config("base").extract_layers == (4, 7, 10)  # medvlsm
    assert registry.get_spec("biomedclipseg").config("corrected").extract_layers == (3, 6, 9)


def test_no_block_past_the_deepest_tap_runs(model):
    """NaN weights in the last block leave the logits finite (the segmentation path stops at the
    deepest tap) but reach BiomedCLIP's image embedding, which uses the whole tower."""
    px, ids, am = _inputs(1)
    kernel = model.biomedclip.visual.trunk.blocks[5].mlp.fc2.kernel
    saved = kernel[...]
    try:
        kernel[...] = jnp.full_like(saved, jnp.nan)
        out, _, _, image, _ = _everything(model, px, ids, am)
    finally:
        kernel[...] = saved
    assert bool(jnp.isfinite(out).all()) and not bool(jnp.isfinite(image).any())


def test_attention_mask_defaults_to_non_pad_tokens(model):
    px, ids, am = _inputs(2, seed=1)
    text = nnx.jit(lambda m, i, a: m.encode_text(i, a))
    ref = np.asarray(text(model, ids, am))
    np.testing.assert_allclose(np.asarray(text(model, ids, None)), ref, atol=1e-6)
    shorter = ids[:, :128]  # less padding, same features: padding is masked out
    np.testing.assert_allclose(np.asarray(text(model, shorter, (shorter != 0).astype(jnp.int32))), ref, atol=1e-5)
    assert not np.allclose(np.asarray(text(model, ids.at[:, 1].set(1234), am)), ref)


def test_dropout_only_in_train_mode(model):
    """medvlsm keeps the frozen BERT in train mode: its dropout acts on the text features while
    training; the vision tower has none; eval mode is deterministic."""
    px, ids, am = _inputs(1, seed=2)
    encode = nnx.jit(lambda m, *a: m.encode(*a))
    model.train()
    try:
        a, b = encode(model, px, ids, am), encode(model, px, ids, am)
    finally:
        model.eval()
    assert not np.allclose(np.asarray(a["conditional"]), np.asarray(b["conditional"]))
    np.testing.assert_array_equal(np.asarray(a["activations"][-1]), np.asarray(b["activations"][-1]))
    c, d = encode(model, px, ids, am), encode(model, px, ids, am)
    np.testing.assert_array_equal(np.asarray(c["conditional"]), np.asarray(d["conditional"]))


@pytest.mark.parametrize("pooler,proj", [("cls_pooler", "mlp"), ("mean_pooler", "linear")])
def test_other_open_clip_poolers_and_projections(pooler, proj):
    cfg = registry.get_spec("biomedclipseg").config("tiny", text_pooler=pooler, text_proj=proj)
    m = nnx.eval_shape(lambda: BiomedCLIPSeg(cfg, rngs=nnx.Rngs(0)))
    _, ids, am = _inputs(2)
    out = nnx.eval_shape(lambda m, i, a: m.encode_text(i, a), m, ids, am)
    assert out.shape == (2, cfg.embed_dim)
    assert hasattr(m.biomedclip.text.transformer, "pooler") == (pooler == "cls_pooler")


def test_input_size_and_config_errors(model):
    px, ids, am = _inputs(1, size=96)
    with pytest.raises(ValueError, match="takes 224x224 inputs"):
        model(px, ids, am)
    spec = registry.get_spec("biomedclipseg")
    for bad, match in (({"extract_layers": (2, 9)}, "not blocks of a 5-block ViT"),
                       ({"extract_layers": (3, 2, 1)}, "ascending"),
                       ({"decoder_init": "imagenet"}, "decoder_init"),
                       ({"text_pooler": "max_pooler"}, "text_pooler"),
                       ({"patch_size": 8}, "needs patch_size 16")):
        cfg = spec.config("tiny", **bad)
        with pytest.raises(ValueError, match=match):
            nnx.eval_shape(lambda: BiomedCLIPSeg(cfg, rngs=nnx.Rngs(0)))  # noqa: B023


def test_zeroshot_is_refused():
    spec = registry.get_spec("biomedclipseg")
    assert not spec.zeroshot and registry.get_spec("clipseg").zeroshot
    with pytest.raises(ValueError, match="zero-shot evaluation is not defined for 'biomedclipseg'"):
        spec.check_zeroshot()
    registry.get_spec("cris").check_zeroshot()


def test_bf16_compute_dtype_runs(model):
    cfg = registry.get_spec("biomedclipseg").config("tiny", dtype="bfloat16", **OVERRIDES)
    m = nnx.eval_shape(lambda: BiomedCLIPSeg(cfg, rngs=nnx.Rngs(0)))
    nnx.update(m, nnx.state(model))  # the same float32 parameters
    out = nnx.jit(lambda m, *a: m(*a))(m, *_inputs(1))
    assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())
    assert jax.tree.leaves(nnx.state(m, nnx.Param))[0].dtype == jnp.float32
    assert m.biomedclip.text.transformer.encoder.layer[0].attention.self.query.dtype == jnp.bfloat16
