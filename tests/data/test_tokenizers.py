"""ClipTokenizer: parity with transformers' CLIPTokenizer (and the vocabulary with open_clip's),
loading/saving, padding, truncation and error handling. Everything is built offline."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest

from medvlsm_jax.data.tokenizers import (
    BOS_TOKEN,
    EOS_TOKEN,
    ClipTokenizer,
    default_bpe_path,
)

DATASETS = ("bkai_polyp", "busi", "camus", "chexlocalize", "clinicdb_polyp", "colondb_polyp",
            "cvc300_polyp", "dfu", "etis_polyp", "isic", "kvasir_polyp")

# Inputs the annotation files lack: unicode, odd whitespace, contractions, special-token text.
EDGE_CASES = [
    "", " ", "   leading and trailing   ", "tabs\tand\nnew\r\nlines\x0b\x0c", "nbsp\xa0\u2000\u3000x",
    "zero\u200bwidth", "\x1c\x1d separators \x85 nel \u2028", "It's DON'T we'll they've I'M",
    "N'T 'S 's's", "1234567890 3.14 1e-5 ²³½ Ⅷ ① ٣", "café Café CAFE\u0301 naïve ﬁne",
    "ΟΔΟΣ Σ σς", "İstanbul ß ẞ", "漢字 日本語 한국어", "emoji 😀 👍🏽 👨\u200d👩",
    "a<|endoftext|>b", "<|startoftext|>x", "<|ENDOFTEXT|> <|endoftext", "hello! world!!",
    "punct...!?;:--()[]{}<>|/\\\"#%&*+=@^`~", "x" * 300,
]


def _dataset_prompts(anns_dir) -> dict[str, list[str]]:
    """All distinct prompts (list-valued ones flattened) of each dataset's test split."""
    prompts: dict[str, list[str]] = {}
    for name in DATASETS:
        records = json.loads((anns_dir / name / "test.json").read_text())
        found = {p for rec in records for v in rec["prompts"].values()
                 for p in (v if isinstance(v, list) else [v])}
        prompts[name] = sorted(found)
    return prompts


def _fuzz_texts(count: int, seed: int = 0) -> list[str]:
    pool = [*"abcXYZ '’!?.,;:-_()<>|/\"0123456789\t\n\xa0\u3000é\u0301ÀßİΣöñ漢한😀👍🏽ﬁ²Ⅷ",
            "'s", "'T", "<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 60))) for _ in range(count)]


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return ClipTokenizer.default()


@pytest.fixture(scope="module")
def prompts(anns_dir) -> list[str]:
    per_dataset = _dataset_prompts(anns_dir)
    assert all(per_dataset.values()), {k: len(v) for k, v in per_dataset.items()}
    flat = sorted({p for ps in per_dataset.values() for p in ps})
    # Joined prompts: certainly longer than the 77-token context.
    longest = sorted(flat, key=len)[-6:]
    return [*flat, " ".join(longest), "; ".join(longest[:3])]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("clip_tokenizer")
    tok.save(path)
    return path


@pytest.fixture(scope="module")
def hf_tok(hf_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer.from_pretrained(hf_dir)


def _assert_same_as_hf(ours: ClipTokenizer, hf, texts: list[str], max_length: int) -> None:
    got = ours(texts, max_length)
    ref = hf(texts, padding="max_length", truncation=True, max_length=max_length)
    ref_ids = np.asarray(ref["input_ids"], dtype=np.int32)
    ref_mask = np.asarray(ref["attention_mask"], dtype=np.int32)
    assert got["input_ids"].dtype == np.int32 and got["attention_mask"].dtype == np.int32
    assert got["input_ids"].shape == got["attention_mask"].shape == (len(texts), max_length)
    differs = (got["input_ids"] != ref_ids).any(1) | (got["attention_mask"] != ref_mask).any(1)
    bad = np.flatnonzero(differs)
    assert bad.size == 0, [(texts[i], got["input_ids"][i].tolist(), ref_ids[i].tolist())
                           for i in bad[:3]]


@pytest.mark.torch
def test_vocab_and_merges_match_open_clip(tok):
    tokenizer = pytest.importorskip("open_clip.tokenizer")
    ref = tokenizer.SimpleTokenizer(bpe_path=str(default_bpe_path()))
    names = {"<start_of_text>": BOS_TOKEN, "<end_of_text>": EOS_TOKEN}  # open_clip's spelling
    assert tok.vocab == {names.get(t, t): i for t, i in ref.encoder.items()}
    assert tok.merges == sorted(ref.bpe_ranks, key=ref.bpe_ranks.get)
    assert tok.vocab_size == 49408 and (tok.bos_id, tok.eos_id, tok.pad_id) == (49406, 49407, 49407)


@pytest.mark.torch
def test_dataset_prompts_match_hf(tok, hf_tok, prompts):
    assert hf_tok.model_max_length == 77
    assert len(prompts) >= 20
    assert any(len(tok.encode(p)) > 77 for p in prompts), "no prompt exercises truncation"
    _assert_same_as_hf(tok, hf_tok, prompts, 77)
    for text in prompts[::50]:
        ids = tok.encode(text)
        assert ids == hf_tok(text)["input_ids"]
        assert tok.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True)


@pytest.mark.torch
@pytest.mark.parametrize("max_length", [2, 9, 77])
def test_edge_cases_and_fuzz_match_hf(tok, hf_tok, max_length):
    _assert_same_as_hf(tok, hf_tok, EDGE_CASES + _fuzz_texts(500), max_length)


@pytest.mark.torch
@pytest.mark.parametrize("pad_token", [None, "!"])
def test_from_dir_reads_save_pretrained_folder(tmp_path, tok, hf_dir, hf_tok, pad_token):
    """transformers v5 saves only tokenizer.json + tokenizer_config.json; a pad token "!" also
    becomes a special token there, which from_dir must reproduce."""
    transformers = pytest.importorskip("transformers")
    hf = hf_tok
    if pad_token is not None:
        hf = transformers.CLIPTokenizer.from_pretrained(hf_dir, pad_token=pad_token)
    hf.save_pretrained(tmp_path)
    assert not (tmp_path / "vocab.json").exists()  # exercises the tokenizer.json path
    loaded = ClipTokenizer.from_dir(tmp_path)
    assert loaded.vocab == tok.vocab and loaded.merges == tok.merges
    assert loaded.max_length == 77  # "unlimited" model_max_length falls back to CLIP's 77
    texts = [*EDGE_CASES, *_fuzz_texts(200, seed=1)]
    _assert_same_as_hf(loaded, hf, texts, 77)
    if pad_token is None:
        for key, value in tok(texts).items():
            np.testing.assert_array_equal(loaded(texts)[key], value)
    else:
        assert loaded.pad_id == 0


def test_pad_id_option_only_changes_padding(tok):
    texts = ["hello! world", "", "one small pink circle polyp"]
    base, zero = tok(texts), ClipTokenizer.default(pad_id=0)(texts)
    np.testing.assert_array_equal(zero["attention_mask"], base["attention_mask"])
    real = base["attention_mask"] == 1
    np.testing.assert_array_equal(zero["input_ids"][real], base["input_ids"][real])
    assert (zero["input_ids"][~real] == 0).all() and (base["input_ids"][~real] == 49407).all()
    assert 256 in zero["input_ids"][0]  # "!</w>" stays a normal token


def test_truncation_keeps_eos_last(tok):
    text = "polyp " * 100
    full = tok.encode(text)
    assert len(full) > 77
    for length in (77, 10):
        out = tok(text, max_length=length)
        assert out["input_ids"].shape == (1, length) and out["attention_mask"].all()
        assert out["input_ids"][0, :-1].tolist() == full[:length - 1]
        assert out["input_ids"][0, -1] == tok.eos_id


def test_empty_prompt(tok):
    out = tok(["", "a"], max_length=6)
    assert tok.encode("") == [49406, 49407]
    assert out["input_ids"][0].tolist() == [49406, 49407, 49407, 49407, 49407, 49407]
    assert out["attention_mask"].tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]


def test_single_string_and_default_length(tok):
    out = tok("A  Polyp.")
    ids = tok.encode("a polyp.")
    assert out["input_ids"].shape == (1, 77) and out["attention_mask"].sum() == len(ids)
    assert out["input_ids"][0, :len(ids) + 1].tolist() == ids + [tok.pad_id]
    assert tok.decode(out["input_ids"][0]) == "a polyp ."


def test_save_roundtrip_keeps_settings(tmp_path):
    ours = ClipTokenizer.default(max_length=40, pad_id=0)
    ours.save(tmp_path)
    loaded = ClipTokenizer.from_dir(tmp_path)
    assert (loaded.max_length, loaded.pad_id, loaded.pad_token) == (40, 0, EOS_TOKEN)
    assert loaded.vocab == ours.vocab and loaded.merges == ours.merges
    assert ClipTokenizer.from_dir(tmp_path, max_length=12, pad_id=5)(["x"])["input_ids"].tolist() \
        == [[49406, 343, 49407] + [5] * 9]


def test_pickle_roundtrip(tok):
    text = "an abnormal growth of tissue"
    tok(text)  # fill the BPE cache
    clone = pickle.loads(pickle.dumps(tok))
    np.testing.assert_array_equal(clone(text)["input_ids"], tok(text)["input_ids"])


def test_bad_inputs(tmp_path, tok):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tok(["fine", 3])
    with pytest.raises(ValueError, match="max_length"):
        tok("x", max_length=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClipTokenizer.from_dir(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        ClipTokenizer.from_dir(tmp_path)
    tok.save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    with pytest.raises(ValueError, match="bos_token"):
        ClipTokenizer.from_dir(tmp_path)
    with pytest.raises(ValueError, match="lacks"):
        ClipTokenizer({"a": 0}, [])
