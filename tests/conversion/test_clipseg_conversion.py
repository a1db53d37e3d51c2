"""CLIPSeg: transformers checkpoint -> medvlsm-convert -> medvlsm_jax.load, against transformers.

Parity is measured against the real PyTorch model (random init, seeded), never against ourselves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.torch

import medvlsm_jax  # noqa: E402
from medvlsm_jax.cli import convert as convert_cli  # noqa: E402
from tests.torch_init import randomise_norms_and_biases  # noqa: E402

PROMPTS = ["a polyp", "one medium pink round polyp, located in the top left of the image"]


def cidas_config():
    """The CIDAS/clipseg-rd64-refined configuration (config.json of the hub model)."""
    return transformers.CLIPSegConfig(
        text_config={"eos_token_id": 2},  # the released config predates transformers PR #24773
        vision_config={"patch_size": 16, "image_size": 224},
        projection_dim=512, extract_layers=[3, 6, 9], reduce_dim=64, decoder_num_attention_heads=4,
        decoder_intermediate_size=2048, conditional_layer=0, use_complex_transposed_convolution=True,
    )


def tiny_config(**kw):
    return transformers.CLIPSegConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
        vision_config={"hidden_size": 32, "num_hidden_layers": 5, "num_attention_heads": 2,
                       "intermediate_size": 64, "image_size": 64, "patch_size": 16},
        projection_dim=32, extract_layers=[1, 2, 3], reduce_dim=16, decoder_num_attention_heads=2,
        decoder_intermediate_size=32, use_complex_transposed_convolution=True, **kw,
    )


def _save_hf(config, path, seed=0, safe=True):
    torch.manual_seed(seed)
    model = transformers.CLIPSegForImageSegmentation(config).eval()
    randomise_norms_and_biases(model, seed)
    model.save_pretrained(path, safe_serialization=safe)
    return model


def _torch_forward(model, px_nhwc, tok):
    with torch.no_grad():
        return model(
            pixel_values=torch.from_numpy(px_nhwc.transpose(0, 3, 1, 2).copy()),
            input_ids=torch.from_numpy(tok["input_ids"].astype(np.int64)),
            attention_mask=torch.from_numpy(tok["attention_mask"].astype(np.int64)),
            output_hidden_states=True,
        )


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    src = tmp_path_factory.mktemp("hf_clipseg")
    model = _save_hf(cidas_config(), src)
    dst = tmp_path_factory.mktemp("converted") / "clipseg"
    assert convert_cli.main(["clipseg", str(src), str(dst)]) == 0
    return model, medvlsm_jax.load(dst)


@pytest.mark.slow
@pytest.mark.parametrize("size", [352, 224])
def test_full_size_parity_with_transformers(full_size, size):
    ref_model, seg = full_size
    tok = seg.tokenize(PROMPTS)
    assert tok["attention_mask"].sum(1).tolist()[0] < tok["attention_mask"].sum(1).tolist()[1]
    px = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
    ref = _torch_forward(ref_model, px, tok)

    logits = np.asarray(seg.logits(px, tok["input_ids"], tok["attention_mask"]))
    want = ref.logits.numpy()
    assert logits.shape == want.shape == (2, size, size)
    tol = 1e-4 * max(1.0, float(want.std()))
    assert np.abs(logits - want).max() <= tol, (np.abs(logits - want).max(), tol)

    feats = seg.model.encode(px, tok["input_ids"], tok["attention_mask"])
    hidden = ref.vision_model_output.hidden_states
    for layer, act in zip((3, 6, 9), feats["activations"]):
        ref_act = hidden[layer + 1].numpy()
        np.testing.assert_allclose(np.asarray(act), ref_act, atol=1e-4 * max(1.0, ref_act.std()), rtol=0)
    cond = ref.conditional_embeddings.numpy()
    np.testing.assert_allclose(np.asarray(feats["conditional"]), cond, atol=1e-4 * max(1.0, cond.std()), rtol=0)


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("eos", [2, 49407])
def test_tiny_parity_both_formats_and_eos_conventions(tmp_path, safe, eos):
    cfg = tiny_config()
    cfg.text_config.eos_token_id = eos
    ref_model = _save_hf(cfg, tmp_path / "src", seed=1, safe=safe)
    assert convert_cli.main(["clipseg", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
    seg = medvlsm_jax.load(tmp_path / "dst")
    meta = json.loads((tmp_path / "dst" / "model.json").read_text())
    assert meta["family"] == "clipseg" and meta["config"]["eos_token_id"] == eos
    tok = seg.tokenize(PROMPTS)
    px = np.random.default_rng(0).normal(size=(2, 96, 96, 3)).astype(np.float32)  # non-native size
    want = _torch_forward(ref_model, px, tok).logits.numpy()
    got = np.asarray(seg.logits(px, tok["input_ids"], tok["attention_mask"]))
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, want.std())


def test_converter_lists_every_mismatch(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    _save_hf(tiny_config(), tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    del sd["decoder.film_mul.bias"]
    sd["decoder.extra_head.weight"] = torch.zeros(3)
    sd["decoder.reduces.0.weight"] = torch.zeros(16, 31)
    save_file(sd, tmp_path / "model.safetensors")
    assert convert_cli.main(["clipseg", str(tmp_path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "1 missing key(s)" in err and "decoder.film_mul.bias" in err
    assert "1 unexpected key(s)" in err and "decoder.extra_head.weight" in err
    assert "1 wrong shape key(s)" in err and "decoder.reduces.0.weight: got (16, 31), expected (16, 32)" in err
    assert not (tmp_path / "out" / "model.json").exists()


def test_converter_errors_on_missing_files(tmp_path, capsys):
    assert convert_cli.main(["clipseg", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "config.json not found" in capsys.readouterr().err
    _save_hf(tiny_config(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    assert convert_cli.main(["clipseg", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no weights found" in capsys.readouterr().err
