"""The datasets of the paper (and the synthetic stand-ins): prompt family and split rule."""

from __future__ import annotations

import dataclasses

from .errors import PromptGenError
from .templates import (BUSI, CAMUS, CHEXLOCALIZE, FOOT_ULCER_DESCRIPTIONS, POLYP_DESCRIPTIONS,
                        SKIN_MELANOMA_DESCRIPTIONS, Family, lesion_family)


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """Seeded split: fractions of the groups going to val and test (train takes the rest;
    counts are rounded), grouping by ``image``, ``patient`` (file-name prefix before the first
    ``_``) or ``class`` (BUSI: split each class separately, as the original script did)."""
    val: float
    test: float
    group: str = "image"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    family: Family
    split: SplitSpec
    #: Images without any mask are skipped (CheXlocalize: one mask per pathology present).
    masks_optional: bool = False


POLYP = lesion_family("polyp", "polyp", POLYP_DESCRIPTIONS)
SKIN_MELANOMA = lesion_family("isic", "skin melanoma", SKIN_MELANOMA_DESCRIPTIONS)
FOOT_ULCER = lesion_family("dfu", "foot ulcer", FOOT_ULCER_DESCRIPTIONS)

# Split fractions reproduce the sizes of the released files (train/val/test):
# Kvasir 800/100/100, BKAI 800/100/100, ClinicDB 490/61/61, DFU 1600/200/200,
# BUSI 624/78/78, CheXlocalize 1279/446/452 images by patient (20 %/20 % of patients),
# CAMUS -/600/600 (50 of 450 patients each), ISIC-2016 810/90/379 (official train/test; pass
# the split file for the exact one), CVC-ColonDB 20/0/360, ETIS 20/0/176, CVC-300 0/0/60.
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("kvasir_polyp", POLYP, SplitSpec(0.1, 0.1)),
    DatasetSpec("bkai_polyp", POLYP, SplitSpec(0.1, 0.1)),
    DatasetSpec("clinicdb_polyp", POLYP, SplitSpec(0.1, 0.1)),
    DatasetSpec("colondb_polyp", POLYP, SplitSpec(0.0, 360 / 380)),
    DatasetSpec("etis_polyp", POLYP, SplitSpec(0.0, 176 / 196)),
    DatasetSpec("cvc300_polyp", POLYP, SplitSpec(0.0, 1.0)),
    DatasetSpec("isic", SKIN_MELANOMA, SplitSpec(90 / 1279, 379 / 1279)),
    DatasetSpec("dfu", FOOT_ULCER, SplitSpec(0.1, 0.1)),
    DatasetSpec("busi", BUSI, SplitSpec(0.1, 0.1, "class")),
    DatasetSpec("camus", CAMUS, SplitSpec(1 / 9, 1 / 9, "patient")),
    DatasetSpec("chexlocalize", CHEXLOCALIZE, SplitSpec(0.2, 0.2, "patient"),
                masks_optional=True),
    DatasetSpec("synthetic_polyp", POLYP, SplitSpec(0.1, 0.1)),
    DatasetSpec("synthetic_us", BUSI, SplitSpec(0.1, 0.1, "class")),
)}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise PromptGenError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
