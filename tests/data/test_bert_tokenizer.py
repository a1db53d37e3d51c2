"""BertTokenizer (BiomedCLIP's WordPiece, on the ``tokenizers`` library): parity with transformers'
``BertTokenizerFast`` on every distinct prompt of the released annotation files, loading from
``vocab.txt``/``tokenizer.json`` folders, saving, padding, truncation and errors.

No vocabulary is downloaded: a small one is generated (specials in BiomedBERT's order, ASCII
characters and their ``##`` continuations, a few suffixes, ~150 words of the prompts), so that
many words are split into pieces and some characters are unknown.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from medvlsm_jax.data.bert_tokenizer import BertTokenizer
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.preprocessing import make_tokenizer
from medvlsm_jax.models.contract import TextSpec

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BiomedBERT's ids 0..4
SUFFIXES = ["##s", "##ed", "##ing", "##al", "##ic", "##ly", "##er", "##ation", "##ous"]
EDGE_CASES = [
    "", " ", "   leading and trailing   ", "tabs\tand\nnew\r\nlines\x0b\x0c", "nbsp\xa0\u2000\u3000x",
    "zero\u200bwidth\x00null\ufffdrepl", "It's DON'T we'll", "1234567890 3.14 1e-5 ²³½ Ⅷ",
    "café Café CAFE\u0301 naïve ﬁne Ångström", "ΟΔΟΣ Σ σς", "漢字 日本語 한국어 ไทย", "emoji 😀 👍🏽",
    "a[CLS]b [SEP] [PAD] [MASK] [UNK] [cls] [Sep]", "punct...!?;:--()[]{}<>|/\\\"#%&*+=@^`~",
    "polyp" * 40, "x" * 120, "supercalifragilisticexpialidocious pneumonoultramicroscopic",
]


def _prompts(anns_dir) -> list[str]:
    """Every distinct prompt (list-valued ones flattened) of every released annotation file."""
    found = set()
    for path in sorted(anns_dir.glob("*/*.json")):
        for rec in json.loads(path.read_text()):
            found.update(p for v in rec["prompts"].values() for p in (v if isinstance(v, list) else [v]))
    return sorted(found)


WORDS = """a an the one two three four five six many several small medium large big tiny round oval irregular
pink red white black brown yellow grey gray dark light polyp polyps lesion lesions tumor tumour mass nodule
ulcer wound foot skin cancer melanoma mole breast ultrasound heart left right ventricle atrium myocardium chest
x ray lung opacity edema cardiomegaly atelectasis consolidation effusion pleural enlarged cardiomediastinum
support devices located in at of on near top bottom center middle upper lower image region area shaped like
with and or is are which that this shows color colour shape size benign malignant normal abnormal growth tissue
""".split()


def _generated_vocab() -> list[str]:
    chars = sorted(set("abcdefghijklmnoprstuvwxy0123456789.,;:!?'\"()-/&+"))  # no q, z, %: words with them are [UNK]
    return list(dict.fromkeys([*SPECIALS, *chars, *(f"##{c}" for c in chars if c.isalnum()), *SUFFIXES,
                               *WORDS]))


@pytest.fixture(scope="module")
def prompts(anns_dir) -> list[str]:
    flat = _prompts(anns_dir)
    longest = sorted(flat, key=len)[-12:]
    # joined prompts: longer than the 256-token context
    return [*flat, " ".join(longest * 3), "; ".join(longest[:6] * 4)]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert_vocab")
    (path / "vocab.txt").write_text("".join(f"{t}\n" for t in _generated_vocab()))
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    return path


@pytest.fixture(scope="module")
def tok(vocab_dir) -> BertTokenizer:
    return BertTokenizer.from_dir(vocab_dir, max_length=256)


@pytest.fixture(scope="module")
def hf_tok(vocab_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.BertTokenizerFast(vocab=str(vocab_dir / "vocab.txt"), do_lower_case=True)


def _assert_same_as_hf(ours: BertTokenizer, hf, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    got = ours(texts, max_length)
    ref = hf(texts, padding="max_length", truncation=True, max_length=max_length)
    ref_ids = np.asarray(ref["input_ids"], dtype=np.int32)
    ref_mask = np.asarray(ref["attention_mask"], dtype=np.int32)
    assert got["input_ids"].dtype == np.int32 and got["attention_mask"].dtype == np.int32
    assert got["input_ids"].shape == got["attention_mask"].shape == ref_ids.shape == (len(texts), max_length)
    bad = np.flatnonzero((got["input_ids"] != ref_ids).any(1) | (got["attention_mask"] != ref_mask).any(1))
    assert bad.size == 0, [(texts[i], got["input_ids"][i].tolist(), ref_ids[i].tolist()) for i in bad[:3]]
    return got


@pytest.mark.torch
def test_dataset_prompts_match_hf(tok, hf_tok, prompts):
    assert len(prompts) > 1000 and tok.pad_id == 0 and hf_tok.vocab_size == tok.vocab_size
    lengths = np.array([len(tok.encode(p)) for p in prompts[::25]] + [len(tok.encode(prompts[-1]))])
    assert lengths.max() > 256, "no prompt exercises truncation"
    enc = _assert_same_as_hf(tok, hf_tok, prompts, 256)
    assert (enc["input_ids"] == tok.token_to_id("[UNK]")).any(), "no unknown word: [UNK] is not exercised"
    assert any(t.startswith("##") for t in hf_tok.convert_ids_to_tokens(enc["input_ids"][:50].ravel().tolist()))
    _assert_same_as_hf(tok, hf_tok, prompts[::7], 12)


@pytest.mark.torch
@pytest.mark.parametrize("max_length", [2, 9, 256])
def test_edge_cases_match_hf(tok, hf_tok, max_length):
    _assert_same_as_hf(tok, hf_tok, EDGE_CASES, max_length)
    if max_length == 256:
        for text in EDGE_CASES:
            assert tok.encode(text) == hf_tok(text)["input_ids"]


@pytest.mark.torch
def test_tokenizer_json_folders(tmp_path, tok, hf_tok, prompts):
    """``save`` writes a folder both we and transformers load; a transformers ``save_pretrained``
    folder (tokenizer.json only) loads too."""
    transformers = pytest.importorskip("transformers")
    texts = [*prompts[::40], *EDGE_CASES]
    tok.save(tmp_path / "ours")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        assert (tmp_path / "ours" / name).is_file()
    again = BertTokenizer.from_dir(tmp_path / "ours")
    assert again.max_length == 256
    for key, value in tok(texts).items():
        np.testing.assert_array_equal(again(texts)[key], value)
    _assert_same_as_hf(again, transformers.BertTokenizerFast.from_pretrained(tmp_path / "ours"), texts, 256)
    hf_tok.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").unlink(missing_ok=True)  # exercise the tokenizer.json path
    loaded = BertTokenizer.from_dir(tmp_path / "hf")
    assert loaded.max_length == 256  # "unlimited" model_max_length: BiomedCLIP's 256
    _assert_same_as_hf(loaded, hf_tok, texts, 256)


@pytest.mark.torch
def test_cased_and_accent_options_follow_the_config(tmp_path, vocab_dir):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "vocab.txt").write_text((vocab_dir / "vocab.txt").read_text() + "Polyp\nCafé\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "strip_accents": False}))
    ours = BertTokenizer.from_dir(tmp_path)
    hf = transformers.BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"), do_lower_case=False, strip_accents=False)
    _assert_same_as_hf(ours, hf, [*EDGE_CASES, "Polyp polyp POLYP Café cafe"], 32)
    assert ours("Polyp")["input_ids"][0, 1] == ours.token_to_id("Polyp")


def test_padding_truncation_and_batches(tok):
    out = tok(["a polyp", ""], max_length=6)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert out["input_ids"][1].tolist() == [cls, sep, 0, 0, 0, 0]
    assert out["attention_mask"].tolist()[1] == [1, 1, 0, 0, 0, 0]
    assert out["input_ids"][0, 0] == cls and sep in out["input_ids"][0]
    long = tok("polyp " * 300)
    assert long["input_ids"].shape == (1, 256) and long["attention_mask"].all() and long["input_ids"][0, -1] == sep
    assert tok([])["input_ids"].shape == (0, 256)
    assert tok.decode(tok.encode("A Polyp")) == "a polyp"


def test_pickle_roundtrip(tok):
    text = "an abnormal growth of tissue"
    tok(text, max_length=20)
    clone = pickle.loads(pickle.dumps(tok))
    np.testing.assert_array_equal(clone(text, max_length=20)["input_ids"], tok(text, max_length=20)["input_ids"])


def test_make_tokenizer_needs_a_vocabulary(vocab_dir):
    with pytest.raises(DataError, match="no bundled vocabulary"):
        make_tokenizer(TextSpec("bert", 256))
    built = make_tokenizer(TextSpec("bert", 64, vocab=str(vocab_dir)))
    assert isinstance(built, BertTokenizer) and built.max_length == 64


def test_bad_inputs(tmp_path, tok):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tok(["fine", 3])
    with pytest.raises(ValueError, match="max_length"):
        tok("x", max_length=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BertTokenizer.from_dir(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json and no vocab.txt"):
        BertTokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[SEP]\na\n")
    with pytest.raises(ValueError, match=r"cls_token '\[CLS\]' is missing"):
        BertTokenizer.from_dir(tmp_path)
    from medvlsm_jax.data.tokenizers import ClipTokenizer

    ClipTokenizer.default().save(tmp_path / "clip")
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE()).save(str(tmp_path / "clip" / "tokenizer.json"))
    with pytest.raises(ValueError, match="not a WordPiece"):
        BertTokenizer.from_dir(tmp_path / "clip")
