"""CRIS in Flax: golden parity with the original PyTorch CRIS (both checkpoint formats), the
tokenizer padding switch, train/eval behaviour, and a full-size R50 forward + train step."""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from medvlsm_jax.data.preprocessing import make_tokenizer
from medvlsm_jax.models.cris import CRIS, CrisConfig, input_contract, tiny_config
from medvlsm_jax.models.registry import build_model, config_from_dict, get_spec
from medvlsm_jax.weights import read_model_json, restore_params

TOL = 1e-4
CHECKPOINTS = ("cris_tiny_medvlsm.pt", "cris_tiny_dataparallel.pth")


@pytest.fixture(scope="module")
def tiny_ref(reference_dir):
    d = reference_dir / "cris_tiny"
    return np.load(d / "golden.npz"), json.loads((d / "config.json").read_text()), d


@pytest.fixture(scope="module")
def converted_models(tiny_ref, tmp_path_factory) -> dict[str, CRIS]:
    """The tiny reference in both formats, converted with ``medvlsm-convert``'s function and
    reloaded through the registry (eval mode)."""
    pytest.importorskip("torch")
    from medvlsm_jax.conversion.cris import convert

    models = {}
    for name in CHECKPOINTS:
        dst = tmp_path_factory.mktemp("cris") / name
        convert(tiny_ref[2] / name, dst, variant="tiny")
        meta = read_model_json(dst)
        model = build_model(meta["family"], config_from_dict(meta["family"], meta["config"]))
        restore_params(dst, model)
        model.eval()
        models[name] = model
    return models


@pytest.fixture(params=CHECKPOINTS)
def converted(request, converted_models) -> CRIS:
    return converted_models[request.param]


@pytest.fixture
def tiny_model(converted_models) -> CRIS:
    return converted_models[CHECKPOINTS[0]]


@nnx.jit
def _intermediates(model: CRIS, pixel_values, input_ids):
    f = model.encode(pixel_values, input_ids)
    fq = model.neck(f["c3"], f["c4"], f["c5"], f["sentence_state"])
    dec = model.decoder(fq, f["word_features"], f["pad_mask"])
    return f, fq, dec, model.proj(dec, f["sentence_state"]), model.decode(f)


def _nchw(a):
    return np.asarray(a).transpose(0, 3, 1, 2)


def _inputs(golden):
    return jnp.asarray(golden["pixel_values_nchw"].transpose(0, 2, 3, 1)), jnp.asarray(golden["input_ids"])


@pytest.mark.torch
def test_golden_parity(converted, tiny_ref):
    golden = tiny_ref[0]
    f, fq, dec, proj, logits = _intermediates(converted, *_inputs(golden))
    ours = {
        "c3": _nchw(f["c3"]), "c4": _nchw(f["c4"]), "c5": _nchw(f["c5"]),
        "word_features": np.asarray(f["word_features"]), "sentence_state": np.asarray(f["sentence_state"]),
        "neck_out": _nchw(fq), "decoder_out": _nchw(dec),
        "projector_out": np.asarray(proj)[:, None], "logits": np.asarray(logits)[:, None],
    }
    errors = {}
    for name, value in ours.items():
        assert value.shape == golden[name].shape, name
        errors[name] = float(np.abs(value - golden[name]).max())
    assert max(errors.values()) < TOL, errors
    # the contract: __call__ = decode(encode(...)), logits (B, H, W)
    np.testing.assert_array_equal(np.asarray(nnx.jit(lambda m, x, i: m(x, i))(converted, *_inputs(golden))),
                                  np.asarray(logits))


@pytest.mark.torch
def test_key_padding_mask_matters(tiny_model, tiny_ref):
    """Row 0 is zero-padded: its golden logits need the ``ids == 0`` mask."""
    golden = tiny_ref[0]
    features = nnx.jit(lambda m, x, i: m.encode(x, i))(tiny_model, *_inputs(golden))
    pad = np.asarray(features["pad_mask"])
    assert pad[0].sum() == (golden["input_ids"][0] == 0).sum() > 0 and not pad[1].any()
    unmasked = dict(features, pad_mask=jnp.zeros_like(features["pad_mask"]))
    logits = np.asarray(nnx.jit(lambda m, f: m.decode(f))(tiny_model, unmasked))
    assert np.abs(logits[0] - golden["logits"][0, 0]).max() > 100 * TOL
    assert np.abs(logits[1] - golden["logits"][1, 0]).max() < TOL


def test_tokenizer_padding_conventions(tiny_ref):
    golden, config, _ = tiny_ref
    hf_style = make_tokenizer(input_contract(tiny_config()).text)  # medvlsm default: pad with <|endoftext|>
    cris_style = make_tokenizer(input_contract(dataclasses.replace(tiny_config(), pad_id=0)).text)
    np.testing.assert_array_equal(cris_style(config["prompts"][0])["input_ids"][0], golden["input_ids"][0])
    np.testing.assert_array_equal(hf_style(config["prompts"][1])["input_ids"][0], golden["input_ids"][1])
    assert CrisConfig().pad_id == 49407


@pytest.mark.torch
def test_train_mode_dropout_and_batch_stats(tiny_model, tiny_ref):
    x, ids = _inputs(tiny_ref[0])
    model = nnx.clone(tiny_model)
    model.train()
    forward = nnx.jit(lambda m, a, b: m(a, b))
    mean_before = np.asarray(model.neck.txt_proj[1].mean[...]).copy()
    a, b = np.asarray(forward(model, x, ids)), np.asarray(forward(model, x, ids))
    assert np.isfinite(a).all() and np.abs(a - b).max() > 1e-3  # dropout is active
    assert np.abs(np.asarray(model.neck.txt_proj[1].mean[...]) - mean_before).max() > 0  # BN updated
    model.eval()
    c, d = np.asarray(forward(model, x, ids)), np.asarray(forward(model, x, ids))
    np.testing.assert_array_equal(c, d)


def test_registry_entry():
    spec = get_spec("cris")
    cfg = spec.config("tiny", pad_id=0)
    contract = spec.resolve_contract(cfg)
    assert spec.threshold == 0.35 and contract.text.kind == "clip" and contract.image_size == (416, 416)
    assert config_from_dict("cris", json.loads(json.dumps(cfg.to_dict()))) == cfg
    # folders converted before the output size followed the input still load
    assert config_from_dict("cris", {**cfg.to_dict(), "img_size": 416}) == cfg
    model = nnx.eval_shape(lambda: build_model("cris", "tiny"))
    assert isinstance(model, CRIS) and model.encoder_prefixes == ("backbone",)
    with pytest.raises(ValueError, match="transformer_width"):
        CrisConfig(vis_dim=256)


@pytest.mark.slow
def test_full_size_forward_and_train_step():
    """Random-init R50 CRIS at 416x416, batch 2: eval forward, then one BCE/Adam step in train
    mode with medvlsm's default frozen backbone (the backbone's BatchNorm statistics still move)."""
    from medvlsm_jax.bench.bench_cris import FROZEN_BACKBONE, make_batch, make_train_step

    t0 = time.perf_counter()
    model = build_model("cris", "base")
    x, ids, y = make_batch(2, 416, model.config.word_len)
    model.eval()
    logits = nnx.jit(lambda m, a, b: m(a, b))(model, x, ids)
    assert logits.shape == (2, 416, 416) and np.isfinite(np.asarray(logits)).all()

    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(1e-4), wrt=FROZEN_BACKBONE)
    head, stem = model.proj.txt.kernel[...], model.backbone.visual.conv1.kernel[...]
    stem_mean = model.backbone.visual.bn1.mean[...]
    loss = make_train_step(FROZEN_BACKBONE)(model, optimizer, x, ids, y)
    assert np.isfinite(float(loss))
    assert not np.allclose(np.asarray(model.proj.txt.kernel[...]), np.asarray(head))
    np.testing.assert_array_equal(np.asarray(model.backbone.visual.conv1.kernel[...]), np.asarray(stem))
    assert not np.allclose(np.asarray(model.backbone.visual.bn1.mean[...]), np.asarray(stem_mean))
    leaves = jax.tree.leaves(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))
    assert all(np.isfinite(np.asarray(v)).all() for v in leaves)
    print(f"full-size CRIS forward + train step: {time.perf_counter() - t0:.1f} s")
