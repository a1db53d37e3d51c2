"""BiomedCLIPSeg(-D): open_clip folder -> medvlsm-convert -> medvlsm_jax.load, against medvlsm.

The reference is real code, built offline with random weights: open_clip's ``CustomTextCLIP``
from a registered BiomedCLIP model config whose ``hf_model_name`` is a local folder holding a
``BertConfig`` (timm ViT + transformers BERT), saved in open_clip's folder format and loaded back
by open_clip (``local-dir:``) inside :class:`MedvlsmBiomedCLIPSeg`, medvlsm's module reconstructed
line for line (with transformers' CLIPSeg decoder, as medvlsm uses it). Every LayerNorm scale and
bias and every bias is randomised (fresh ones are identities/zeros and would hide bugs). The module
and its builders live in :mod:`medvlsm_jax.bench.bench_biomedclipseg` (the benchmark times the same
reference).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")
pytestmark = pytest.mark.torch

from flax import nnx  # noqa: E402

import medvlsm_jax  # noqa: E402
# the reference and its builders live with the benchmark, which times the same module
from medvlsm_jax.bench.bench_biomedclipseg import (  # noqa: E402
    RD64, MedvlsmBiomedCLIPSeg, build_open_clip, clipseg_folder, randomise_norms_and_biases,
    sane_decoder)
from medvlsm_jax.cli import convert as convert_cli  # noqa: E402

PROMPTS = ["a polyp", "one medium pink round polyp, located in the top left of the image"]


def reference_outputs(ref: MedvlsmBiomedCLIPSeg, px: np.ndarray, tok: dict) -> dict[str, np.ndarray]:
    """One ``forward`` of medvlsm's module; hooks catch the image embedding (output of the image
    head), the taps and the text embedding (the decoder's inputs)."""
    caught = {}
    hooks = [
        ref.biomedclip.visual.head.register_forward_hook(lambda m, i, o: caught.update(image=o)),
        ref.decoder.register_forward_hook(lambda m, i, o: caught.update(taps=i[0], text=i[1])),
    ]
    pixels = torch.from_numpy(px.transpose(0, 3, 1, 2).copy())
    ids = torch.from_numpy(tok["input_ids"].astype(np.int64))
    mask = torch.from_numpy(tok["attention_mask"].astype(np.int64))
    try:
        with torch.no_grad():
            logits = ref(pixels, ids, mask)[:, 0]
    finally:
        for hook in hooks:
            hook.remove()
    return {"image": caught["image"].numpy(), "text": caught["text"].numpy(),
            "taps": [t.numpy() for t in caught["taps"]], "logits": logits.numpy()}


@nnx.jit
def _ours(model, px, ids, mask):
    feats = model.encode(px, ids, mask)
    return model.encode_image(px), feats["conditional"], feats["activations"], model.decode(feats)


def ours(seg, px: np.ndarray, tok: dict) -> dict[str, np.ndarray]:
    """Image and text embeddings, taps and logits of the loaded model, in one compiled call."""
    image, text, taps, logits = _ours(seg.model, px, tok["input_ids"], tok["attention_mask"])
    return {"image": np.asarray(image), "text": np.asarray(text), "taps": [np.asarray(a) for a in taps],
            "logits": np.asarray(logits)}


def compare(got: dict, want: dict) -> dict[str, tuple[float, float]]:
    """(max |diff|, tolerance 1e-4 * max(1, std)) per tensor; asserts each is within."""
    pairs = [("image", got["image"], want["image"]), ("text", got["text"], want["text"]),
             *((f"tap{i}", g, w) for i, (g, w) in enumerate(zip(got["taps"], want["taps"]))),
             ("logits", got["logits"], want["logits"])]
    assert len(got["taps"]) == len(want["taps"]) == 3
    figures = {}
    for name, g, w in pairs:
        assert g.shape == w.shape, (name, g.shape, w.shape)
        figures[name] = (float(np.abs(g - w).max()), 1e-4 * max(1.0, float(w.std())))
    bad = {k: v for k, v in figures.items() if not v[0] <= v[1]}
    assert not bad, bad
    return figures


def _inputs(seg, seed: int):
    tok = seg.tokenize(PROMPTS)
    lengths = tok["attention_mask"].sum(1).tolist()
    assert lengths[0] < lengths[1] and tok["input_ids"].shape == (2, 256)
    assert (tok["input_ids"][tok["attention_mask"] == 1] != 1).all()  # no [UNK]: real words reach BERT
    px = np.random.default_rng(seed).normal(size=(2, 224, 224, 3)).astype(np.float32)
    return px, tok


# ---------------------------------------------------------------------------------------------
# full size: BiomedCLIP (ViT-B/16 + BERT-base) + the rd64-refined decoder (BiomedCLIPSeg-D)

BERT_BASE = {}  # BertConfig defaults are BERT-base (= BiomedBERT-base: 30522 tokens, 12 x 768)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("biomedclip")
    src, _ = build_open_clip(tmp, "biomedclip-test-full", timm_model="vit_base_patch16_224", embed_dim=512,
                             bert=BERT_BASE, seed=0, safetensors=True)
    clipseg_folder(tmp / "clipseg", vision_hidden=768, projection_dim=512, seed=2, **RD64)
    dst = tmp / "converted"
    assert convert_cli.main(["biomedclipseg", str(src), str(dst), "--decoder", str(tmp / "clipseg")]) == 0
    ref = MedvlsmBiomedCLIPSeg(f"local-dir:{src}", str(tmp / "clipseg"), rand_init_decoder=False).eval()
    return ref, medvlsm_jax.load(dst), dst


@pytest.mark.slow
def test_full_size_parity_with_medvlsm(full_size):
    ref, seg, dst = full_size
    meta = json.loads((dst / "model.json").read_text())
    cfg = meta["config"]
    assert meta["family"] == "biomedclipseg" and cfg["decoder_init"] == "clipseg"
    assert (cfg["vision_layers"], cfg["vision_heads"], cfg["text_layers"], cfg["text_heads"]) == (12, 12, 12, 12)
    assert (cfg["vocab_size"], cfg["text_pooler"], cfg["extract_layers"]) == (30522, "cls_last_hidden_state_pooler",
                                                                              [4, 7, 10])
    px, tok = _inputs(seg, seed=0)
    want = reference_outputs(ref, px, tok)
    figures = compare(ours(seg, px, tok), want)
    print("full-size parity (max |diff|, tolerance):", figures, "logits std", float(np.std(want["logits"])))
    assert seg.logits(px, tok["input_ids"], tok["attention_mask"]).shape == (2, 224, 224)


# ---------------------------------------------------------------------------------------------
# tiny: timm vit_tiny (12 x 192) + a 2-layer BERT; every conversion input format

BERT_TINY = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                 max_position_embeddings=256)
DEC_TINY = dict(reduce_dim=16, decoder_num_attention_heads=2, decoder_intermediate_size=32, conditional_layer=0)


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("biomedclip_tiny")
    src, _ = build_open_clip(tmp, "biomedclip-test-tiny", timm_model="vit_tiny_patch16_224", embed_dim=48,
                             bert=BERT_TINY, seed=10, safetensors=False)
    clipseg_folder(tmp / "clipseg", vision_hidden=192, projection_dim=48, seed=12, **DEC_TINY)
    return tmp, src


def test_tiny_decoder_folder_parity(tiny_src, tmp_path):
    tmp, src = tiny_src
    assert convert_cli.main(["biomedclipseg", str(src), str(tmp_path / "d"), "--decoder", str(tmp / "clipseg")]) == 0
    ref = MedvlsmBiomedCLIPSeg(f"local-dir:{src}", str(tmp / "clipseg"), rand_init_decoder=False).eval()
    seg = medvlsm_jax.load(tmp_path / "d")
    assert seg.model.config.text_heads == 2 and seg.model.config.vision_heads == 3
    px, tok = _inputs(seg, seed=1)
    compare(ours(seg, px, tok), reference_outputs(ref, px, tok))
    # no attention mask: every non-pad token, as medvlsm's _forward_bert
    ids = torch.from_numpy(tok["input_ids"].astype(np.int64))
    with torch.no_grad():
        want = ref._forward_bert(ids).numpy()
    got = np.asarray(seg.model.encode_text(tok["input_ids"]))
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, want.std())


def test_tiny_medvlsm_checkpoints_parity(tiny_src, tmp_path):
    """A model trained with medvlsm (random decoder here, as BiomedCLIPSeg), as a Lightning .ckpt
    and as a plain state dict, replaces SRC's weights; the old ``position_ids`` buffer some
    checkpoints carry is tolerated."""
    tmp, src = tiny_src
    torch.manual_seed(20)
    ref = MedvlsmBiomedCLIPSeg(f"local-dir:{src}", str(tmp / "clipseg"), rand_init_decoder=True).eval()
    sane_decoder(ref.decoder, 22)
    randomise_norms_and_biases(ref, 21)  # the "trained" weights differ from SRC's everywhere
    sd = dict(ref.state_dict())
    sd["biomedclip.text.transformer.embeddings.position_ids"] = torch.arange(256)[None]
    torch.save({"epoch": 3, "state_dict": {f"net.{k}": v for k, v in sd.items()}}, tmp_path / "last.ckpt")
    torch.save(sd, tmp_path / "model.pt")
    want = None
    for ckpt in ("last.ckpt", "model.pt"):
        # the decoder's hyper-parameters come from --decoder (rd64-refined's otherwise)
        assert convert_cli.main(["biomedclipseg", str(src), str(tmp_path / ckpt[:4]), "--checkpoint",
                                 str(tmp_path / ckpt), "--decoder", str(tmp / "clipseg")]) == 0
        seg = medvlsm_jax.load(tmp_path / ckpt[:4])
        px, tok = _inputs(seg, seed=2)
        want = want or reference_outputs(ref, px, tok)
        compare(ours(seg, px, tok), want)
    got = np.asarray(seg.logits(px, tok["input_ids"], tok["attention_mask"]))  # the public API
    assert np.abs(got - want["logits"]).max() <= 1e-4 * max(1.0, want["logits"].std())


def test_tiny_fresh_decoder_loads_and_predicts(tiny_src, tmp_path):
    """BiomedCLIPSeg: no --decoder, a fresh rd64-shaped decoder from the seed; loads and predicts."""
    from medvlsm_jax.conversion.biomedclipseg import fresh_decoder

    _, src = tiny_src
    assert convert_cli.main(["biomedclipseg", str(src), str(tmp_path / "dst"), "--seed", "3"]) == 0
    meta = json.loads((tmp_path / "dst" / "model.json").read_text())
    assert meta["config"]["decoder_init"] == "random" and meta["decoder_seed"] == 3
    assert meta["config"]["reduce_dim"] == 64 and meta["config"]["extract_layers"] == [4, 7, 10]
    seg = medvlsm_jax.load(tmp_path / "dst")
    assert seg.tokenizer.max_length == 256
    cfg = seg.model.config
    three, four = fresh_decoder(cfg, 3), fresh_decoder(cfg, 4)
    film = np.asarray(seg.model.decoder.film_mul.kernel[...])
    np.testing.assert_array_equal(film, three["decoder.film_mul.weight"].T)  # the seed reaches the decoder
    assert not np.allclose(three["decoder.film_mul.weight"], four["decoder.film_mul.weight"])
    # transformers 4.35's init (medvlsm's pin): PyTorch's default U(+-1/sqrt(fan_in)), zero Linear biases
    assert np.abs(film).max() <= cfg.embed_dim ** -0.5 and not three["decoder.reduces.0.bias"].any()
    image = np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)
    masks = seg.predict([image, image], ["a small polyp", "one large red oval tumor at the bottom right"])
    assert [m.shape for m in masks] == [(40, 52)] * 2 and masks[0].dtype == bool


def test_converter_lists_every_mismatch(tiny_src, tmp_path, capsys):
    import shutil

    _, src = tiny_src
    bad = tmp_path / "src"
    shutil.copytree(src, bad)
    sd = torch.load(bad / "open_clip_pytorch_model.bin", weights_only=True)
    del sd["visual.head.proj.weight"]
    sd["text.proj.9.weight"] = torch.zeros(3)
    sd["visual.trunk.norm.bias"] = torch.zeros(5)
    torch.save(sd, bad / "open_clip_pytorch_model.bin")
    assert convert_cli.main(["biomedclipseg", str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "1 missing key(s)" in err and "biomedclip.visual.head.proj.weight" in err
    assert "1 unexpected key(s)" in err and "biomedclip.text.proj.9.weight" in err
    assert "biomedclip.visual.trunk.norm.bias: got (5,), expected (192,)" in err
    assert not (tmp_path / "out" / "model.json").exists()


def test_converter_errors(tiny_src, tmp_path, capsys):
    import shutil

    tmp, src = tiny_src
    assert convert_cli.main(["biomedclipseg", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "open_clip_config.json not found" in capsys.readouterr().err
    bad = tmp_path / "src"
    shutil.copytree(src, bad)
    (bad / "vocab.txt").unlink()
    assert convert_cli.main(["biomedclipseg", str(bad), str(tmp_path / "out")]) == 2
    assert "no tokenizer.json or vocab.txt" in capsys.readouterr().err
    (bad / "open_clip_pytorch_model.bin").unlink()
    assert convert_cli.main(["biomedclipseg", str(bad), str(tmp_path / "out")]) == 2
    assert "no weights found" in capsys.readouterr().err
    # a decoder built for another width
    clipseg_folder(tmp_path / "cs", vision_hidden=64, projection_dim=48, seed=0, **DEC_TINY)
    assert convert_cli.main(["biomedclipseg", str(src), str(tmp_path / "out"), "--decoder", str(tmp_path / "cs")]) == 2
    assert "expects vision width 64, BiomedCLIP has 192" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert_cli.main(["clipseg", str(src), str(tmp_path / "out"), "--decoder", str(tmp / "clipseg")])
    assert "--decoder only applies to biomedclipseg" in capsys.readouterr().err
