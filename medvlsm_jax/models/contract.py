"""A model's input contract: what its inputs must look like, declared by the model family.

Every family declares its contract in its :class:`~medvlsm_jax.models.registry.ModelSpec`:
the default input size, the image normalisation and the text spec (tokenizer kind, context
length, padding id, vocabulary source), or no text for image-only models. A run has exactly one
override, the input size (``data.image_size``); :meth:`ModelSpec.resolve_contract` turns the
spec, the model config and that override into the :class:`InputContract` that the loader, the
trainer, ``medvlsm_jax.load``, conversion and the benchmarks all receive. Nothing else looks
preprocessing up by model name, and ``model.json`` records the resolved contract so a loaded
model preprocesses exactly as it was trained.

The model is called with the contract's inputs by keyword: ``model(**{k: batch[k] for k in
contract.input_keys})`` (likewise ``model.encode``), so an image-only model takes
``pixel_values`` alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "CLIP_MEAN", "CLIP_STD", "TextSpec", "InputContract",
           "square"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TEXT_KEYS = ("input_ids", "attention_mask")


@dataclasses.dataclass(frozen=True)
class TextSpec:
    """How prompts become token ids.

    ``kind``: ``"clip"`` (byte-level BPE) or ``"bert"`` (WordPiece); ``max_length``: tokens per
    prompt (padded / truncated to it); ``pad_id``: the padding id (``None``: the tokenizer's own);
    ``vocab``: where the vocabulary comes from — ``None`` for the one bundled with the package
    (CLIP's BPE), else a tokenizer folder (e.g. a converted model's ``tokenizer/``).
    """

    kind: str
    max_length: int
    pad_id: int | None = None
    vocab: str | None = None


def square(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``352`` -> ``(352, 352)``; a (height, width) pair is returned as a tuple."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


@dataclasses.dataclass(frozen=True)
class InputContract:
    """A model's resolved inputs: (height, width), normalisation, text (``None``: image only)."""

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    text: TextSpec | None = None

    @property
    def input_keys(self) -> tuple[str, ...]:
        """The batch keys the model is called with (by keyword)."""
        return ("pixel_values", *TEXT_KEYS) if self.text is not None else ("pixel_values",)

    def with_image_size(self, size: int | tuple[int, int] | None) -> "InputContract":
        return dataclasses.replace(self, image_size=square(size)) if size else self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputContract":
        text = d.get("text")
        return cls(image_size=square(d["image_size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   text=TextSpec(**text) if text else None)
