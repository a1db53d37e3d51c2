"""CLIP byte-level BPE tokenizer with the semantics of Hugging Face's ``CLIPTokenizer``.

Pure Python (``regex`` + ``numpy``); no torch/transformers at runtime. The pipeline is the one
``transformers`` (v5, ``tokenizers`` backend) builds for CLIP:

1. special tokens (``<|startoftext|>``, ``<|endoftext|>`` and the pad token) are cut out of the
   *raw* text and map straight to their ids;
2. every other segment is normalised: Unicode NFC, each run of whitespace -> one space,
   per-character lowercase (no ftfy, no HTML unescaping, no stripping);
3. pre-tokenised with CLIP's split pattern, then GPT-2's byte-level pattern on each piece;
4. each piece is UTF-8 byte-encoded, BPE-merged with ``</w>`` marking the word end, and looked up;
5. ``<|startoftext|>`` ... ``<|endoftext|>`` are added around the (truncated) ids and the batch is
   right-padded to ``max_length`` with the pad id.

``ClipTokenizer.default()`` builds the vocabulary offline from the BPE merges file OpenAI CLIP and
open_clip ship (vendored in ``medvlsm_jax/assets``); ``ClipTokenizer.from_dir`` reads a Hugging
Face tokenizer folder (``vocab.json`` + ``merges.txt`` or ``tokenizer.json``, plus
``tokenizer_config.json`` / ``special_tokens_map.json``).
"""

from __future__ import annotations

import functools
import gzip
import json
import pathlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import regex

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
DEFAULT_MAX_LENGTH = 77
# transformers stores "no limit" as int(1e30) in ``model_max_length``.
_HF_UNLIMITED_LENGTH = int(1e30)
# OpenAI CLIP keeps merges [1, 49152 - 256 - 2] of its BPE file: 49408 tokens in all.
_NUM_MERGES = 49152 - 256 - 2
_MERGES_HEADER = "#version: 0.2"
_CONFIG_FILE = "tokenizer_config.json"
_SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
# Key of our own in tokenizer_config.json for a pad id that is not the pad token's id
# (original CRIS pads with 0); transformers ignores it.
_PAD_ID_KEY = "medvlsm_pad_id"

_CLIP_SPLIT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"""
    r"""|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
_BYTE_LEVEL_SPLIT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
_WHITESPACE = regex.compile(r"\s+")
_CACHE_LIMIT = 1 << 16


def default_bpe_path() -> pathlib.Path:
    """The vendored ``bpe_simple_vocab_16e6.txt.gz`` (the merges file of OpenAI CLIP/open_clip)."""
    assets = pathlib.Path(__file__).resolve().parents[1] / "assets"
    return assets / "bpe_simple_vocab_16e6.txt.gz"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = [*printable, *range(256, 256 + len(others))]
    return dict(zip([*printable, *others], map(chr, chars)))


def normalize(text: str) -> str:
    """HF CLIP normaliser: NFC, whitespace runs -> ' ', then per-character lowercase.

    Lowercasing is per character (as the ``tokenizers`` ``Lowercase`` normaliser does), so a
    word-final capital sigma becomes 'σ', not Python's context-dependent 'ς'.
    """
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
    return "".join(ch.lower() for ch in text)


def pre_tokenize(text: str) -> list[str]:
    """Split normalised text into BPE words: CLIP's pattern, then GPT-2's byte-level pattern."""
    return [word for piece in _CLIP_SPLIT.findall(text)
            for word in _BYTE_LEVEL_SPLIT.findall(piece)]


def token_content(value: Any) -> str | None:
    """A special token from a HF config: a plain string or a serialised ``AddedToken`` dict."""
    return value.get("content") if isinstance(value, dict) else value


def read_json(path: pathlib.Path) -> Any:
    """A tokenizer folder's JSON file; invalid JSON is a one-line error naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err


def _parse_merge(line: str, where: str) -> tuple[str, str]:
    parts = line.split()
    if len(parts) != 2:
        raise ValueError(f"{where}: a merge must be two space-separated symbols, got {line!r}")
    return parts[0], parts[1]


class ClipTokenizer:
    """CLIP byte-level BPE tokenizer returning fixed-length ``input_ids`` / ``attention_mask``.

    Args:
        vocab: token string -> id; must hold the 512 byte symbols (with and without ``</w>``),
            every merge result and the special tokens.
        merges: BPE merges, highest priority first.
        max_length: default padded length (context length) of ``__call__``.
        pad_token: padding token; like in transformers it is also a special token, i.e. cut out of
            raw text (``pad_token="!"`` turns every "!" in a prompt into id 0 as well).
        pad_id: overrides only the id used to fill padding (e.g. 0 for original CRIS), leaving
            text splitting untouched. Defaults to the id of ``pad_token``.
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        pad_token: str = EOS_TOKEN,
        pad_id: int | None = None,
    ) -> None:
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self._check_vocab(pad_token)
        self.max_length = _checked_length(max_length)
        self.pad_token = pad_token
        self.bos_id = self.vocab[BOS_TOKEN]
        self.eos_id = self.vocab[EOS_TOKEN]
        self.pad_id = self.vocab[pad_token] if pad_id is None else int(pad_id)
        self._ranks = {pair: i for i, pair in enumerate(self.merges)}
        self._specials = {tok: self.vocab[tok] for tok in (BOS_TOKEN, EOS_TOKEN, pad_token)}
        # Longest first, so the alternation picks the longest special token at a position.
        alternation = "|".join(map(re.escape, sorted(self._specials, key=len, reverse=True)))
        self._special_split = re.compile(f"({alternation})")
        self._byte_encoder = bytes_to_unicode()
        self._cache: dict[str, tuple[int, ...]] = {}

    def _check_vocab(self, pad_token: str) -> None:
        byte_symbols = list(bytes_to_unicode().values())
        required = [*byte_symbols, *(s + END_OF_WORD for s in byte_symbols),
                    BOS_TOKEN, EOS_TOKEN, pad_token]
        missing = [tok for tok in required if tok not in self.vocab]
        if missing:
            raise ValueError(f"vocabulary lacks {len(missing)} required tokens, e.g. {missing[:5]}")
        bad = [m for m in self.merges if "".join(m) not in self.vocab]
        if bad:
            raise ValueError(f"{len(bad)} merges produce tokens missing from the vocabulary, "
                             f"e.g. {bad[:3]}")

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def default(cls, *, max_length: int = DEFAULT_MAX_LENGTH, pad_id: int | None = None,
                bpe_path: str | pathlib.Path | None = None) -> ClipTokenizer:
        """The standard CLIP vocabulary (49408 tokens), built offline from the BPE merges file.

        Same construction as OpenAI CLIP's ``SimpleTokenizer``: the 256 byte symbols, the same with
        ``</w>``, one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``.
        """
        path = pathlib.Path(bpe_path) if bpe_path is not None else default_bpe_path()
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")[1:_NUM_MERGES + 1]
        merges = [_parse_merge(line, f"{path}:{i + 2}") for i, line in enumerate(lines)]
        byte_symbols = list(bytes_to_unicode().values())
        tokens = [*byte_symbols, *(s + END_OF_WORD for s in byte_symbols),
                  *("".join(m) for m in merges), BOS_TOKEN, EOS_TOKEN]
        vocab = {tok: i for i, tok in enumerate(tokens)}
        return cls(vocab, merges, max_length=max_length, pad_id=pad_id)

    @classmethod
    def from_dir(cls, path: str | pathlib.Path, *, max_length: int | None = None,
                 pad_id: int | None = None) -> ClipTokenizer:
        """Load a Hugging Face CLIP tokenizer folder (as ``save_pretrained`` or :meth:`save` write).

        Vocabulary from ``vocab.json`` + ``merges.txt`` or else ``tokenizer.json``. From
        ``tokenizer_config.json`` (overridden, as in transformers, by a legacy
        ``special_tokens_map.json`` when the config has no ``added_tokens_decoder``): the pad token,
        ``model_max_length`` (unless "unlimited") and our ``medvlsm_pad_id``. Explicit arguments
        win.
        """
        folder = pathlib.Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
        vocab, merges = _read_vocab_and_merges(folder)
        config = _read_config(folder)
        for key, expected in (("bos_token", BOS_TOKEN), ("eos_token", EOS_TOKEN)):
            found = token_content(config.get(key, expected))
            if found != expected:
                raise ValueError(f"{folder}: {key} is {found!r}, CLIP expects {expected!r}")
        if max_length is None:
            configured = config.get("model_max_length")
            usable = isinstance(configured, int) and configured < _HF_UNLIMITED_LENGTH
            max_length = configured if usable else DEFAULT_MAX_LENGTH
        if pad_id is None:
            pad_id = config.get(_PAD_ID_KEY)
        pad_token = token_content(config.get("pad_token")) or EOS_TOKEN
        return cls(vocab, merges, max_length=max_length, pad_token=pad_token, pad_id=pad_id)

    def save(self, path: str | pathlib.Path) -> None:
        """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` (loadable both by
        :meth:`from_dir` and by transformers' ``CLIPTokenizer.from_pretrained``)."""
        folder = pathlib.Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), "utf-8")
        merges = "\n".join(" ".join(m) for m in self.merges)
        (folder / "merges.txt").write_text(f"{_MERGES_HEADER}\n{merges}\n", "utf-8")
        config: dict[str, Any] = {
            "tokenizer_class": "CLIPTokenizer",
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "unk_token": EOS_TOKEN,
            "pad_token": self.pad_token,
            "model_max_length": self.max_length,
        }
        if self.pad_id != self.vocab[self.pad_token]:
            config[_PAD_ID_KEY] = self.pad_id
        (folder / _CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", "utf-8")

    # ----------------------------------------------------------------------------- encoding
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _bpe(self, word: str) -> tuple[int, ...]:
        """Ids of one pre-tokenised word (byte-encoded, merged, ``</w>`` on its last symbol)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        chars = "".join(self._byte_encoder[b] for b in word.encode("utf-8"))
        symbols = [*chars[:-1], chars[-1] + END_OF_WORD]
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda p: self._ranks.get(p, len(self._ranks)))
            if best not in self._ranks:
                break
            symbols = _merge_pair(symbols, best)
        ids = tuple(self.vocab[s] for s in symbols)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _text_ids(self, text: str) -> list[int]:
        """Ids of ``text`` without bos/eos."""
        ids: list[int] = []
        # With a capturing group, odd entries of the split are the special tokens themselves.
        for i, segment in enumerate(self._special_split.split(text)):
            if i % 2:
                ids.append(self._specials[segment])
            else:
                for word in pre_tokenize(normalize(segment)):
                    ids.extend(self._bpe(word))
        return ids

    def encode(self, text: str) -> list[int]:
        """``[bos, *ids, eos]`` for one text, neither truncated nor padded."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return [self.bos_id, *self._text_ids(text), self.eos_id]

    def __call__(self, texts: str | Sequence[str], max_length: int | None = None
                 ) -> dict[str, np.ndarray]:
        """Tokenise a text or a batch, truncated and right-padded to ``max_length``.

        Matches ``CLIPTokenizer(texts, padding="max_length", truncation=True,
        max_length=max_length)``: at most ``max_length - 2`` text ids, always ending in eos.

        Returns:
            ``{"input_ids": int32 (B, L), "attention_mask": int32 (B, L)}``, B = 1 for a str.
        """
        length = self.max_length if max_length is None else _checked_length(max_length)
        batch = [texts] if isinstance(texts, str) else list(texts)
        input_ids = np.full((len(batch), length), self.pad_id, dtype=np.int32)
        attention_mask = np.zeros((len(batch), length), dtype=np.int32)
        for row, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"texts[{row}] must be a str, got {type(text).__name__}")
            ids = [self.bos_id, *self._text_ids(text)[:length - 2], self.eos_id]
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``, decoded as transformers does for CLIP (bytes -> UTF-8, ``</w>`` -> " ")."""
        skip = {self.bos_id, self.eos_id, self.pad_id} if skip_special_tokens else set()
        text = "".join(self._id_to_token[int(i)] for i in ids if int(i) not in skip)
        # Every vocabulary character, "</w>" included, is in the byte alphabet.
        decoded = bytes(self._byte_decoder[c] for c in text).decode("utf-8", "replace")
        return decoded.replace(END_OF_WORD, " ").strip()

    @functools.cached_property
    def _id_to_token(self) -> dict[int, str]:
        return {i: tok for tok, i in self.vocab.items()}

    @functools.cached_property
    def _byte_decoder(self) -> dict[str, int]:
        return {c: b for b, c in self._byte_encoder.items()}


def _checked_length(max_length: int) -> int:
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (room for bos and eos), got {max_length}")
    return max_length


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Merge every non-overlapping occurrence of ``pair``, left to right."""
    first, second = pair
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def _read_vocab_and_merges(folder: pathlib.Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if vocab_file.is_file() and merges_file.is_file():
        vocab = read_json(vocab_file)
        lines = merges_file.read_text(encoding="utf-8").split("\n")
        merges = [_parse_merge(line, f"{merges_file}:{number}")
                  for number, line in enumerate(lines, start=1)
                  if line.strip() and not (number == 1 and line.startswith("#version"))]
        return vocab, merges
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"{folder}: no vocab.json + merges.txt and no tokenizer.json")
    model = read_json(tokenizer_file).get("model", {})
    if model.get("type") != "BPE" or model.get("end_of_word_suffix") != END_OF_WORD:
        raise ValueError(f"{tokenizer_file}: not a CLIP BPE model (model.type "
                         f"{model.get('type')!r}, end_of_word_suffix "
                         f"{model.get('end_of_word_suffix')!r})")
    merges = [tuple(m) if isinstance(m, list) else _parse_merge(m, f"{tokenizer_file} model.merges")
              for m in model["merges"]]
    return model["vocab"], merges


def _read_config(folder: pathlib.Path) -> dict[str, Any]:
    config_file, map_file = folder / _CONFIG_FILE, folder / _SPECIAL_TOKENS_MAP_FILE
    config = read_json(config_file) if config_file.is_file() else {}
    if map_file.is_file() and "added_tokens_decoder" not in config:
        config.update(read_json(map_file))
    return config
