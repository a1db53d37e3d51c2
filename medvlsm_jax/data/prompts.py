"""Prompt selection.

``make_loader(..., prompt=..., prompt_override=...)`` chooses each example's text as follows:

* ``prompt_override`` (a string, may be empty) — that text for every example; it takes
  precedence over ``prompt``, like the original's ``override_prompt``.
* ``"pN"`` — the example's prompt ``pN``. Annotation values that are lists (several phrasings)
  are drawn uniformly per example and per epoch from the loader's seeded RNG.
* ``"random"`` — a key drawn uniformly from ``p1..pK`` (``p0`` excluded, as in the original),
  then a phrasing drawn uniformly from that key's list. ``K`` is each dataset's own count, so it
  works on pooled sets whose members have different numbers of prompts.
* ``""`` — the empty prompt for every example.

An unknown key raises a :class:`DataError` listing the keys the dataset has.
:func:`validate_prompt` is the one check, used by the loader and by the trainer's config
validation alike.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.registry import get_spec, members

RANDOM = "random"
_KEY = re.compile(r"p\d+")


@dataclasses.dataclass(frozen=True)
class PromptChoice:
    """Parsed prompt argument: ``mode`` 'key' (``key`` set), 'random' or 'text' (``text`` set)."""

    mode: Literal["key", "random", "text"]
    key: str | None = None
    text: str = ""


def parse_prompt(prompt: str, prompt_override: str | None = None) -> PromptChoice:
    """Turn the ``prompt``/``prompt_override`` arguments into a :class:`PromptChoice`."""
    if prompt_override is not None:
        return PromptChoice("text", text=prompt_override)
    if prompt == "":
        return PromptChoice("text")
    if prompt == RANDOM:
        return PromptChoice("random")
    if _KEY.fullmatch(prompt):
        return PromptChoice("key", key=prompt)
    raise DataError(f"prompt must be 'pN', 'random' or '' (use prompt_override for free text), "
                    f"got {prompt!r}")


def sorted_keys(keys: Sequence[str]) -> list[str]:
    """Prompt keys in numeric order (p2 before p10)."""
    return sorted(keys, key=lambda k: int(k[1:]))


def check_prompt(choice: PromptChoice, dataset: str, keys: Sequence[str]) -> None:
    """Raise a DataError when ``choice`` cannot be served by a dataset with ``keys``."""
    if choice.mode == "key" and choice.key not in keys:
        raise DataError(f"dataset {dataset!r} has no prompt {choice.key!r}; "
                        f"its keys are {', '.join(sorted_keys(keys))}")
    if choice.mode == "random" and len(keys) < 2:
        raise DataError(f"dataset {dataset!r} has no prompts p1..pK to draw from")


def validate_prompt(prompt: str, prompt_override: str | None,
                    datasets: Sequence[str]) -> PromptChoice:
    """The parsed prompt choice, checked against every dataset behind ``datasets`` (names or
    pooled names): one DataError naming every member that cannot serve it."""
    choice = parse_prompt(prompt, prompt_override)
    problems = []
    for name in dict.fromkeys(m for d in datasets for m in members(d)):
        try:
            check_prompt(choice, name, get_spec(name).prompt_keys)
        except DataError as err:
            problems.append(str(err))
    if problems:
        raise DataError("; ".join(problems))
    return choice


def select_prompt(choice: PromptChoice, prompts: Mapping[str, Sequence[str]],
                  rng: np.random.Generator) -> str:
    """The prompt text of one example given its prompt lists."""
    if choice.mode == "text":
        return choice.text
    key = choice.key
    if choice.mode == "random":
        candidates = sorted_keys(list(prompts))[1:]
        key = candidates[rng.integers(len(candidates))]
    values = prompts[key]
    return values[0] if len(values) == 1 else values[rng.integers(len(values))]
