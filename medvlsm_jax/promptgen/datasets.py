"""The datasets as prompt generation sees them: each catalogue entry
(:mod:`medvlsm_jax.data.catalogue`, where datasets are described) with its template family.

The catalogue names the family and the prompt keys; this module only maps family names to
their templates, and refuses an entry whose family does not word exactly its prompt keys.
"""

from __future__ import annotations

import dataclasses

from medvlsm_jax.data.catalogue import CATALOGUE
from medvlsm_jax.data.catalogue import DatasetSpec as CatalogueEntry
from medvlsm_jax.data.catalogue import SplitRule

from .errors import PromptGenError
from .templates import (BUSI, CAMUS, CHEXLOCALIZE, FOOT_ULCER_DESCRIPTIONS, POLYP_DESCRIPTIONS, REPORTS,
                        SKIN_MELANOMA_DESCRIPTIONS, Family, lesion_family)

#: Seeded split of generated annotations (kept under its former name).
SplitSpec = SplitRule

POLYP = lesion_family("polyp", "polyp", POLYP_DESCRIPTIONS)
SKIN_MELANOMA = lesion_family("isic", "skin melanoma", SKIN_MELANOMA_DESCRIPTIONS)
FOOT_ULCER = lesion_family("dfu", "foot ulcer", FOOT_ULCER_DESCRIPTIONS)

#: Template family by name (the catalogue's ``prompt_family``).
FAMILIES: dict[str, Family] = {f.name: f for f in (POLYP, SKIN_MELANOMA, FOOT_ULCER, BUSI, CAMUS,
                                                   CHEXLOCALIZE, REPORTS)}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A catalogue entry and the template family that words its prompts."""

    entry: CatalogueEntry
    family: Family

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def split(self) -> SplitRule:
        return self.entry.split_rule

    @property
    def masks_optional(self) -> bool:
        return self.entry.masks_optional

    @property
    def prompt_keys(self) -> tuple[str, ...]:
        return self.entry.prompt_keys


def family_of(entry: CatalogueEntry) -> Family:
    """The family named by ``entry``; it must word exactly the entry's prompt keys."""
    family = FAMILIES.get(entry.prompt_family)
    if family is None:
        raise PromptGenError(f"catalogue entry {entry.name!r}: unknown prompt family "
                             f"{entry.prompt_family!r}; known: {', '.join(FAMILIES)}")
    if tuple(family.templates) != entry.prompt_keys:
        raise PromptGenError(f"catalogue entry {entry.name!r} has prompts "
                             f"{', '.join(entry.prompt_keys)} but family {family.name!r} "
                             f"words {', '.join(family.templates)}")
    return family


DATASETS: dict[str, DatasetSpec] = {e.name: DatasetSpec(e, family_of(e)) for e in CATALOGUE}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise PromptGenError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
