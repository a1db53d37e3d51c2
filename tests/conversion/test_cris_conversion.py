"""CRIS weight conversion: every key of the full R50 state dict maps, the three source formats
are recognised, strict error listings, and CLIP-archive initialisation of the backbone only."""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest
from flax import nnx

from medvlsm_jax.data.tokenizers import ClipTokenizer
from medvlsm_jax.models.cris import CRIS, CrisConfig, tiny_config
from medvlsm_jax.models.registry import build_model, config_from_dict
from medvlsm_jax.weights import read_model_json, restore_params
from medvlsm_jax.conversion import cris as wc
from medvlsm_jax.conversion.rules import ConversionError, expected_torch_keys

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny_dir(reference_dir):
    return reference_dir / "cris_tiny"


@pytest.fixture(scope="module")
def tiny_sd(tiny_dir):
    sd, fmt = wc.read_checkpoint(tiny_dir / "cris_tiny_medvlsm.pt")
    assert fmt == wc.CRIS_STATE_DICT
    return sd


def _abstract(config: CrisConfig) -> CRIS:
    return nnx.eval_shape(lambda: CRIS(config, rngs=nnx.Rngs(0)))


def test_every_r50_key_maps(reference_dir):
    """The full-size model's expected torch keys/shapes equal the R50 CRIS state dict exactly."""
    rows = (reference_dir / "cris_r50_state_dict.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["key", "shape", "dtype"]
    shapes = {}
    for row in rows[1:]:
        key, shape, _ = row.split("\t")
        shapes[key] = ast.literal_eval(shape)
    # zero-stride views: the key map only needs shapes
    sd = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    mapped = {k: tuple(v.shape) for k, v in wc.key_map(sd, wc.CRIS_STATE_DICT).items()
              if not k.endswith(".num_batches_tracked")}
    expected = expected_torch_keys(_abstract(CrisConfig()))
    assert sorted(set(mapped) ^ set(expected)) == []
    assert {k: v for k, v in mapped.items() if expected[k] != v} == {}
    assert len(shapes) == 662 and sum(k.endswith("num_batches_tracked") for k in shapes) == 71


def test_both_checkpoint_formats_give_the_same_weights(tiny_dir, tiny_sd):
    dp, fmt = wc.read_checkpoint(tiny_dir / "cris_tiny_dataparallel.pth")
    assert fmt == wc.DATAPARALLEL and all(k.startswith("module.") for k in dp)
    a, b = wc.key_map(tiny_sd, wc.CRIS_STATE_DICT), wc.key_map(dp, wc.DATAPARALLEL)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_errors_list_missing_unexpected_and_misshaped(tiny_sd):
    sd = dict(tiny_sd)
    del sd["neck.f2_cat.0.weight"]
    sd["proj.extra.weight"] = np.zeros(3, np.float32)
    sd["decoder.norm.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ConversionError) as err:
        wc.load_into(_abstract(tiny_config()), sd, wc.CRIS_STATE_DICT, source="bad.pt")
    msg = str(err.value)
    assert "bad.pt" in msg
    assert "1 missing" in msg and "neck.f2_cat.0.weight (expected torch shape (64, 192, 1, 1))" in msg
    assert "1 unexpected" in msg and "proj.extra.weight" in msg
    assert "1 wrong shape" in msg and "decoder.norm.bias: got (7,), expected (64,)" in msg


def test_wrong_size_is_a_listing_not_a_crash(tiny_sd):
    with pytest.raises(ConversionError, match="wrong shape"):
        wc.load_into(_abstract(CrisConfig()), tiny_sd, wc.CRIS_STATE_DICT)


def test_unknown_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(ConversionError, match="other.pt: neither a CRIS checkpoint"):
        wc.read_checkpoint(path)


def _clip_torchscript(sd: dict[str, np.ndarray], path) -> None:
    """A TorchScript archive whose state dict has OpenAI CLIP's keys (tiny size)."""
    root = torch.nn.Module()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, torch.nn.Module())
            module = getattr(module, name)
        module.register_parameter(leaf, torch.nn.Parameter(torch.from_numpy(np.array(value)), requires_grad=False))
    for meta in ("input_resolution", "context_length", "vocab_size"):
        root.register_buffer(meta, torch.tensor(1))
    torch.jit.save(torch.jit.script(root), str(path))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script/save are deprecated
def test_clip_archive_initialises_only_the_backbone(tiny_dir, tiny_sd, tmp_path):
    clip = {k[len("backbone."):]: v for k, v in tiny_sd.items()
            if k.startswith("backbone.") and ".connect." not in k and not k.endswith("num_batches_tracked")}
    src = tmp_path / "RN50_tiny.pt"
    _clip_torchscript(clip, src)
    assert wc.read_checkpoint(src)[1] == wc.CLIP_RN50

    report = wc.convert(src, tmp_path / "out", variant="tiny", pad_id=0)
    fresh_parts = {k.split(".")[0] if not k.startswith("backbone.") else ".".join(k.split(".")[:4])
                   for k in report.kept_init}
    assert fresh_parts == {"backbone.visual.attnpool.connect", "neck", "decoder", "proj"}
    meta = read_model_json(tmp_path / "out")
    assert meta["source_format"] == wc.CLIP_RN50
    assert meta["fresh_init"] == ["backbone.visual.attnpool.connect", "neck", "decoder", "proj"]
    assert ClipTokenizer.from_dir(tmp_path / "out" / "tokenizer").pad_id == 0

    model = build_model("cris", config_from_dict("cris", meta["config"]))
    restore_params(tmp_path / "out", model)
    model.eval()
    golden = np.load(tiny_dir / "golden.npz")
    x = golden["pixel_values_nchw"].transpose(0, 2, 3, 1)
    f = nnx.jit(lambda m, a, b: m.encode(a, b))(model, x, golden["input_ids"])
    for name in ("c3", "c4"):
        np.testing.assert_allclose(np.asarray(f[name]).transpose(0, 3, 1, 2), golden[name], atol=1e-4, rtol=0)
    for name in ("word_features", "sentence_state"):
        np.testing.assert_allclose(np.asarray(f[name]), golden[name], atol=1e-4, rtol=0)
    # C5 goes through the fresh `connect` residual: different from the trained one
    assert np.abs(np.asarray(f["c5"]).transpose(0, 3, 1, 2) - golden["c5"]).max() > 1e-2

    with pytest.raises(ConversionError, match="expected a CRIS checkpoint"):
        wc.convert(src, tmp_path / "no", variant="tiny", init_from_clip=False)


def test_converted_folder(tiny_dir, tmp_path):
    report = wc.convert(tiny_dir / "cris_tiny_dataparallel.pth", tmp_path / "dp", variant="tiny")
    assert report.kept_init == [] and len(report.dropped) == 35  # the num_batches_tracked
    meta = read_model_json(tmp_path / "dp")
    assert meta["family"] == "cris" and meta["source_format"] == wc.DATAPARALLEL
    assert config_from_dict("cris", json.loads(json.dumps(meta["config"]))) == tiny_config()
    assert ClipTokenizer.from_dir(tmp_path / "dp" / "tokenizer").pad_id == 49407
    with pytest.raises(ConversionError, match="expected a CLIP RN50 archive"):
        wc.convert(tiny_dir / "cris_tiny_medvlsm.pt", tmp_path / "no", variant="tiny", init_from_clip=True)
