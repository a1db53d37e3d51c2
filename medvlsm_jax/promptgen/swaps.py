"""Attribute swaps of the paper's robustness study (Fig. 3), as a prompt transform.

For a prompt of a given type (``p4``, ``p9``, ...) one attribute's value is replaced either by
a random uncommon English word (``mode="random_word"``) or by another value of the same
attribute (``mode="other_value"``), the opposite one where it exists (small <-> large,
left <-> right, top left <-> bottom right, benign <-> malignant, ...). The attribute's span is
found with the family's template pattern, so the rest of the prompt is left untouched.

Attribute names are the template fields: ``number``, ``size``, ``colour`` (alias ``color``),
``shape``, ``location``, ``cls`` (alias ``class``), ``description``; BUSI ``tumor_type``,
``regularity``; CAMUS ``label``, ``chambers``, ``cycle``, ``sex``, ``age``, ``quality``;
CheXlocalize ``label``, ``view``, ``pathologies``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .datasets import get_dataset
from .errors import PromptGenError
from .masks import COLOURS, LOCATIONS, SHAPES, SIZES
from .templates import (CAMUS_LABELS, CHEX_LABELS, CHEXPERT_OBSERVATIONS,
                        FOOT_ULCER_DESCRIPTIONS, POLYP_DESCRIPTIONS, SKIN_MELANOMA_DESCRIPTIONS)
from .words import number_to_words

MODES = ("random_word", "other_value")
ALIASES = {"color": "colour", "class": "cls", "class_name": "cls"}

#: Fixed list of uncommon English words for ``mode="random_word"``.
UNCOMMON_WORDS = (
    "abecedarian", "absquatulate", "anfractuous", "apricity", "bibliopole", "borborygmus",
    "brumous", "callipygian", "cattywampus", "collywobbles", "defenestrate", "discombobulate",
    "eructation", "fard", "fanfaronade", "flibbertigibbet", "gallimaufry", "gongoozler",
    "hobbledehoy", "impignorate", "jentacular", "kakistocracy", "lollygag", "mumpsimus",
    "nudiustertian", "obambulate", "pandiculation", "quidnunc", "ratoon", "snollygoster",
    "tittynope", "ultracrepidarian", "vellicate", "widdershins", "xertz", "yonderly",
    "zoanthropy", "bumbershoot", "crapulous", "erinaceous", "floccinaucinihilipilification",
    "gardyloo", "hircine", "lethologica", "meldrop", "nithing", "oxter", "pettifogger",
    "quockerwodger", "rigmarole", "sialoquent", "taradiddle", "uxorious", "vomitory",
    "wabbit", "yarborough", "zenzizenzizenzic", "agelast", "blatherskite", "cacoethes")


def _pairs(*pairs: tuple[str, str]) -> dict[str, str]:
    return {k: v for a, b in pairs for k, v in ((a, b), (b, a))}


#: Opposite values; values without one get a random other value of the attribute.
OPPOSITES: dict[str, str] = {
    **_pairs(("small", "large"), ("left", "right"), ("top", "bottom"),
             ("top left", "bottom right"), ("top right", "bottom left"),
             ("white", "black"), ("circle", "square"), ("benign", "malignant"),
             ("regular", "irregular"), ("two", "four"), ("diastole", "systole"),
             ("male", "female"), ("good", "poor"), ("frontal", "lateral")),
    "tiny": "large"}

#: Values of each attribute for ``mode="other_value"``.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "number": tuple(number_to_words(i) for i in range(1, 11)),
    "size": SIZES, "location": LOCATIONS, "colour": COLOURS, "shape": SHAPES,
    "cls": ("polyp", "skin melanoma", "foot ulcer"),
    "description": POLYP_DESCRIPTIONS + SKIN_MELANOMA_DESCRIPTIONS + FOOT_ULCER_DESCRIPTIONS,
    "tumor_type": ("benign", "malignant"), "regularity": ("regular", "irregular"),
    "tumors": ("tumor", "tumors"),
    "chambers": ("two", "four"), "cycle": ("diastole", "systole"), "sex": ("male", "female"),
    "age": tuple(number_to_words(i) for i in range(18, 96)),
    "quality": ("good", "medium", "poor"), "view": ("frontal", "lateral"),
    "label": CAMUS_LABELS + tuple(CHEX_LABELS.values()), "pathologies": CHEXPERT_OBSERVATIONS,
}
#: Attributes whose value is a comma-separated list: each item is swapped.
LIST_ATTRIBUTES = ("size", "location", "pathologies")


def _other(value: str, attribute: str, rng: np.random.Generator) -> str:
    if value in OPPOSITES and attribute not in ("number", "age"):
        return OPPOSITES[value]
    choices = [v for v in VOCABULARY[attribute] if v.lower() != value.lower()]
    return choices[int(rng.integers(len(choices)))]


def swap_attribute(prompt: str, dataset: str, prompt_key: str, attribute: str,
                   mode: str = "random_word", rng: np.random.Generator | None = None) -> str:
    """``prompt`` (one string of type ``prompt_key`` of ``dataset``) with ``attribute``'s value
    replaced. Raises :class:`PromptGenError` when the prompt does not follow the template or
    the template has no such attribute."""
    if mode not in MODES:
        raise PromptGenError(f"unknown swap mode {mode!r}; use one of {MODES}")
    rng = rng if rng is not None else np.random.default_rng(0)
    attribute = ALIASES.get(attribute, attribute)
    family = get_dataset(dataset).family
    m = family.match(prompt_key, prompt)
    if m is None:
        raise PromptGenError(f"{dataset} {prompt_key}: prompt does not follow the template: "
                             f"{prompt!r}")
    if m.groupdict().get(attribute) is None:
        raise PromptGenError(f"{dataset} {prompt_key}: no attribute {attribute!r} in this prompt "
                             f"(has {', '.join(k for k, v in m.groupdict().items() if v)})")
    value = m.group(attribute)
    if mode == "random_word":
        new = UNCOMMON_WORDS[int(rng.integers(len(UNCOMMON_WORDS)))]
    elif attribute in LIST_ATTRIBUTES:
        new = ", ".join(_other(v, attribute, rng) for v in value.split(", "))
    else:
        new = _other(value, attribute, rng)
    start, end = m.span(attribute)
    if family.capitalize:
        new = new.capitalize() if start == 0 else new.lower()
    return prompt[:start] + new + prompt[end:]


@dataclasses.dataclass
class AttributeSwap:
    """Seeded prompt transform for evaluation: ``AttributeSwap("kvasir_polyp", "p6", "size",
    "other_value", seed=0)(prompt)``; list prompts are swapped element by element."""
    dataset: str
    prompt_key: str
    attribute: str
    mode: str = "random_word"
    seed: int = 0

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list):
            return [self(p) for p in prompt]
        return swap_attribute(prompt, self.dataset, self.prompt_key, self.attribute, self.mode,
                              self._rng)
