"""BERT WordPiece tokenizer (BiomedCLIP's PubMedBERT, uncased) on the ``tokenizers`` library.

BiomedCLIP tokenises with open_clip's ``HFTokenizer``, i.e. transformers' fast BERT tokenizer
called with ``padding="max_length", truncation=True, max_length=256``: ``[CLS] ... [SEP]``, right
padded with ``[PAD]``. This class builds the same pipeline from a local folder (nothing from a
hub):

* ``tokenizer.json`` when present (as transformers does), else ``vocab.txt`` with
  ``BertWordPieceTokenizer`` (``BertNormalizer``: clean text, Chinese characters split, lowercase
  and accent stripping per ``do_lower_case``/``strip_accents``; ``BertPreTokenizer``; WordPiece with
  ``##`` continuations; ``[CLS] $A [SEP]``);
* ``tokenizer_config.json`` for ``do_lower_case``, ``strip_accents``,
  ``tokenize_chinese_chars``, the special tokens and ``model_max_length``.

Converted BiomedCLIPSeg folders carry their vocabulary under ``tokenizer/``. The only bundled one
is the small demo vocabulary of the tiny variant (``medvlsm_jax/assets/bert_demo``, made by
``tools/make_demo_vocab.py``), for the quick start and tests.
The interface is :class:`medvlsm_jax.data.tokenizers.ClipTokenizer`'s.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.models import WordPiece

from medvlsm_jax.data.tokenizers import read_json, token_content

DEFAULT_MAX_LENGTH = 256  # BiomedCLIP's context length
# transformers stores "no limit" as int(1e30) in ``model_max_length``.
_HF_UNLIMITED_LENGTH = int(1e30)
_CONFIG_FILE = "tokenizer_config.json"
_SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
_SPECIALS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
             "mask_token": "[MASK]"}


def _read_config(folder: pathlib.Path) -> dict[str, Any]:
    config_file, map_file = folder / _CONFIG_FILE, folder / _SPECIAL_TOKENS_MAP_FILE
    config = read_json(config_file) if config_file.is_file() else {}
    if map_file.is_file():
        for key, value in read_json(map_file).items():
            config.setdefault(key, value)
    return config


class BertTokenizer:
    """Fixed-length ``input_ids`` / ``attention_mask`` from a ``tokenizers`` BERT pipeline.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` with BERT's normaliser, pre-tokeniser, WordPiece
            model and ``[CLS] $A [SEP]`` post-processor (its own padding/truncation are ignored).
        max_length: default padded length (context length) of ``__call__``.
        pad_token: the padding token (its id fills the padding).
        config: the ``tokenizer_config.json`` fields to write back in :meth:`save`.
    """

    def __init__(self, tokenizer: Tokenizer, *, max_length: int = DEFAULT_MAX_LENGTH, pad_token: str = "[PAD]",
                 config: dict[str, Any] | None = None):
        self._base = Tokenizer.from_str(tokenizer.to_str())
        self._base.no_padding()
        self._base.no_truncation()
        pad_id = self._base.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in the vocabulary")
        self.max_length = _checked_length(max_length)
        self.pad_token, self.pad_id = pad_token, pad_id
        self.config = dict(config or {})
        self._by_length: dict[int, Tokenizer] = {}

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def from_vocab(cls, vocab: str | pathlib.Path | dict[str, int], *, do_lower_case: bool = True,
                   strip_accents: bool | None = None, tokenize_chinese_chars: bool = True,
                   max_length: int = DEFAULT_MAX_LENGTH, **special_tokens: str) -> BertTokenizer:
        """The transformers ``BertTokenizerFast(vocab_file, ...)`` pipeline from a ``vocab.txt``."""
        unknown = set(special_tokens) - set(_SPECIALS)
        if unknown:
            raise TypeError(f"unknown special tokens {sorted(unknown)}; known: {sorted(_SPECIALS)}")
        specials = {**_SPECIALS, **special_tokens}
        words = WordPiece.read_file(str(vocab)) if not isinstance(vocab, dict) else dict(vocab)
        for key in ("cls_token", "sep_token", "pad_token"):
            if specials[key] not in words:
                raise ValueError(f"{vocab if not isinstance(vocab, dict) else 'vocabulary'}: "
                                 f"{key} {specials[key]!r} is missing")
        impl = BertWordPieceTokenizer(words, clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                      strip_accents=strip_accents, lowercase=do_lower_case, **specials)
        config = {"do_lower_case": do_lower_case, "strip_accents": strip_accents,
                  "tokenize_chinese_chars": tokenize_chinese_chars, **specials}
        return cls(impl._tokenizer, max_length=max_length, pad_token=specials["pad_token"], config=config)

    @classmethod
    def from_dir(cls, path: str | pathlib.Path, *, max_length: int | None = None) -> BertTokenizer:
        """A Hugging Face BERT tokenizer folder (``tokenizer.json`` or ``vocab.txt``, plus
        ``tokenizer_config.json`` / ``special_tokens_map.json``). ``max_length``: the argument,
        else ``model_max_length`` unless "unlimited", else 256."""
        folder = pathlib.Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
        config = _read_config(folder)
        if max_length is None:
            configured = config.get("model_max_length")
            usable = isinstance(configured, int) and configured < _HF_UNLIMITED_LENGTH
            max_length = configured if usable else DEFAULT_MAX_LENGTH
        specials = {k: token_content(config.get(k)) or v for k, v in _SPECIALS.items()}
        tokenizer_file, vocab_file = folder / "tokenizer.json", folder / "vocab.txt"
        if tokenizer_file.is_file():
            try:
                tok = Tokenizer.from_file(str(tokenizer_file))
            except Exception as err:  # noqa: BLE001 - the library raises a bare Exception
                raise ValueError(f"{tokenizer_file}: not a tokenizers file ({err})") from err
            model = json.loads(tok.to_str()).get("model", {})
            if model.get("type") != "WordPiece":
                raise ValueError(f"{tokenizer_file}: not a WordPiece (BERT) tokenizer "
                                 f"(model.type {model.get('type')!r})")
            keep = {k: config[k] for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars") if k in config}
            return cls(tok, max_length=max_length, pad_token=specials["pad_token"], config={**keep, **specials})
        if not vocab_file.is_file():
            raise FileNotFoundError(f"{folder}: no tokenizer.json and no vocab.txt")
        return cls.from_vocab(vocab_file, do_lower_case=config.get("do_lower_case", True),
                              strip_accents=config.get("strip_accents"),
                              tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                              max_length=max_length, **specials)

    def save(self, path: str | pathlib.Path) -> None:
        """Writes ``tokenizer.json``, ``vocab.txt`` and ``tokenizer_config.json`` (loadable by
        :meth:`from_dir` and by transformers' ``BertTokenizerFast.from_pretrained``)."""
        folder = pathlib.Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self._base.save(str(folder / "tokenizer.json"))
        vocab = sorted(self._base.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
        (folder / "vocab.txt").write_text("".join(f"{tok}\n" for tok, _ in vocab), "utf-8")
        config = {"tokenizer_class": "BertTokenizer", **self.config, "model_max_length": self.max_length}
        (folder / _CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", "utf-8")

    # ----------------------------------------------------------------------------- encoding
    @property
    def vocab_size(self) -> int:
        return self._base.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._base.token_to_id(token)

    def _fixed(self, length: int) -> Tokenizer:
        tok = self._by_length.get(length)
        if tok is None:
            tok = Tokenizer.from_str(self._base.to_str())
            tok.enable_truncation(length)
            tok.enable_padding(length=length, pad_id=self.pad_id, pad_token=self.pad_token)
            self._by_length[length] = tok
        return tok

    def encode(self, text: str) -> list[int]:
        """``[CLS, *ids, SEP]`` for one text, neither truncated nor padded."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._base.encode(text).ids

    def __call__(self, texts: str | Sequence[str], max_length: int | None = None) -> dict[str, np.ndarray]:
        """Tokenise a text or a batch, truncated and right-padded to ``max_length`` (as
        ``BertTokenizerFast(texts, padding="max_length", truncation=True, max_length=...)``).

        Returns:
            ``{"input_ids": int32 (B, L), "attention_mask": int32 (B, L)}``, B = 1 for a str.
        """
        length = self.max_length if max_length is None else _checked_length(max_length)
        batch = [texts] if isinstance(texts, str) else list(texts)
        for row, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"texts[{row}] must be a str, got {type(text).__name__}")
        encodings = self._fixed(length).encode_batch(batch) if batch else []
        input_ids = np.asarray([e.ids for e in encodings], dtype=np.int32).reshape(len(batch), length)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int32).reshape(len(batch), length)
        return {"input_ids": input_ids, "attention_mask": mask}

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        return self._base.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # pickling (grain worker processes): tokenizers objects pickle, the cache is rebuilt
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_by_length"] = {}
        return state


def _checked_length(max_length: int) -> int:
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
    return max_length
