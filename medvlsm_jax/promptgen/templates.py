"""Prompt templates P0-P9 of the paper (Appendix G), one :class:`Family` per dataset family,
reverse-engineered to reproduce the released annotation files string for string.

A template is a ``str.format`` string over named *fields* (attribute values, already worded:
``{"number": "two", "size": "small, medium", "location": "top left, center", ...}``). The same
template doubles as a parser: :meth:`Family.pattern` turns it into a regular expression whose
named groups are the fields, which is what the round-trip check and the attribute swaps use.

A prompt key maps to one template (a string prompt) or a tuple of templates (a list prompt, as
BUSI's and CAMUS's paired wordings). Templates containing ``{description}`` are rendered once
per general description of the class (the paper's P7-P9), giving a list.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
from typing import Mapping, Union

from .masks import LOCATIONS, SIZES
from .words import number_to_words

Template = Union[str, tuple[str, ...]]
Prompt = Union[str, list[str]]
Prompts = dict[str, Prompt]

_NUMBERS = sorted((number_to_words(i) for i in range(1, 1000)), key=len, reverse=True)
NUMBER_RE = "|".join(_NUMBERS)
SIZE_RE = "(?:{0})(?:, (?:{0}))*".format("|".join(SIZES))
LOCATION_RE = "(?:{0})(?:, (?:{0}))*".format(
    "|".join(sorted(LOCATIONS, key=len, reverse=True)))
WORD_RE = r"[a-z]+"
FREE_RE = r".+?"


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: patterns are cached per family
class Family:
    """Templates of one dataset family, the regular expression of each field, the constant
    fields (class name), the general descriptions and the wording used for an empty mask."""
    name: str
    templates: Mapping[str, Template]
    field_patterns: Mapping[str, str]
    constants: Mapping[str, str] = dataclasses.field(default_factory=dict)
    descriptions: tuple[str, ...] = ()
    empty: Mapping[str, Prompt] | None = None
    capitalize: bool = False

    # ------------------------------------------------------------------ rendering
    def _fill(self, template: str, values: Mapping[str, str]) -> Prompt:
        values = {**self.constants, **values}
        if "{description}" in template:
            return [self._fill(template.replace("{description}", d), values)
                    for d in self.descriptions]
        missing = set(self.fields_of(template)) - set(values)
        if missing:
            raise KeyError(f"{self.name}: template {template!r} needs values for "
                           f"{sorted(missing)}")
        text = template.format(**values)
        return text.capitalize() if self.capitalize else text

    def render(self, values: Mapping[str, str]) -> Prompts:
        """All prompts ``p0..pK`` of one mask from its worded attribute values."""
        out: Prompts = {}
        for key, template in self.templates.items():
            if isinstance(template, tuple):
                out[key] = [self._fill(t, values) for t in template]
            else:
                out[key] = self._fill(template, values)
        return out

    def render_empty(self) -> Prompts:
        """The paper's prompts for a mask without foreground (BUSI normal, "no polyp")."""
        if self.empty is None:
            raise ValueError(f"the {self.name} family has no wording for an empty mask")
        return {key: (list(v) if isinstance(v, list) else v) for key, v in self.empty.items()}

    # ------------------------------------------------------------------ parsing
    @staticmethod
    def fields_of(template: str) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f]

    def fields(self) -> set[str]:
        """All non-constant fields used by any template."""
        out: set[str] = set()
        for template in self.templates.values():
            for t in (template if isinstance(template, tuple) else (template,)):
                out.update(self.fields_of(t))
        return out - set(self.constants) - {"description"}

    @functools.lru_cache(maxsize=None)
    def pattern(self, template: str) -> re.Pattern:
        """Regular expression matching the renderings of ``template``: one named group per
        field; constants match only their value, descriptions only the family's ones."""
        parts = []
        for literal, field, _, _ in string.Formatter().parse(template):
            parts.append(re.escape(literal))
            if field in self.constants:
                parts.append(f"(?P<{field}>{re.escape(self.constants[field])})")
            elif field == "description":
                parts.append("(?P<description>%s)" % "|".join(map(re.escape, self.descriptions)))
            elif field:
                parts.append(f"(?P<{field}>{self.field_patterns[field]})")
        return re.compile("".join(parts), re.IGNORECASE if self.capitalize else 0)

    def templates_of(self, key: str) -> tuple[str, ...]:
        if key not in self.templates:
            raise KeyError(f"{self.name}: no prompt {key!r} (has {', '.join(self.templates)})")
        template = self.templates[key]
        return template if isinstance(template, tuple) else (template,)

    def match(self, key: str, text: str) -> re.Match | None:
        """Match one prompt string against the templates of ``key`` (first that matches)."""
        for template in self.templates_of(key):
            m = self.pattern(template).fullmatch(text)
            if m:
                return m
        return None


# ---------------------------------------------------------------------- lesion family
#: Paper Table 9: general descriptions per class (typos as released: "mucuos", "abnormailty").
POLYP_DESCRIPTIONS = (
    "a projecting growth of tissue",
    "often a bumpy flesh in rectum",
    "a small lump in the lining of colon",
    "a tissue growth that often resemble mushroom like stalks",
    "an abnormal growth of tissues projecting from a mucuos membrane")
SKIN_MELANOMA_DESCRIPTIONS = (
    "a spot with dark speckles",
    "a spot with irregular texture",
    "a dark sore with irregular texture",
    "an irregular sore with speckles",
    "a rough wound on skin")
FOOT_ULCER_DESCRIPTIONS = (
    "a wound in foot and toes",
    "a sore in foot and toes",
    "a sore in skin of foot and toes",
    "an abnormailty in foot and toes",
    "an open sore or lesion in foot and toes")

_LESION_P5 = "{number} {size} {colour} {shape} {cls}"
LESION_TEMPLATES: dict[str, Template] = {
    "p0": "",
    "p1": "{cls}",
    "p2": "{shape} {cls}",
    "p3": "{colour} {shape} {cls}",
    "p4": "{size} {colour} {shape} {cls}",
    "p5": _LESION_P5,
    "p6": _LESION_P5 + ", located in {location} of the image",
    "p7": "{cls} which is {description}",
    "p8": _LESION_P5 + " which is {description}",
    "p9": _LESION_P5 + " which is {description} located in {location} of the image",
}
LESION_FIELDS = {"number": NUMBER_RE, "size": SIZE_RE, "colour": WORD_RE, "shape": FREE_RE,
                 "location": LOCATION_RE}


def lesion_family(name: str, class_name: str, descriptions: tuple[str, ...]) -> Family:
    """Endoscopy/dermoscopy/photo family (polyps, ISIC, DFU): P0-P9 from the mask and VQA."""
    none = f"no {class_name}"
    empty: dict[str, Prompt] = {"p0": ""}
    empty.update({f"p{i}": none for i in range(1, 7)})
    empty.update({f"p{i}": [none] for i in range(7, 10)})
    return Family(name, LESION_TEMPLATES, LESION_FIELDS, {"cls": class_name}, descriptions,
                  empty)


# ---------------------------------------------------------------------- BUSI
_IN_US = " in the breast ultrasound image."
BUSI_TEMPLATES: dict[str, Template] = {
    "p0": "",
    "p1": "tumor" + _IN_US,
    "p2": ("{tumor_type} tumor" + _IN_US, "{regularity}-shaped tumor" + _IN_US),
    "p3": ("{number} {tumor_type} {tumors}" + _IN_US,
           "{number} {regularity}-shaped {tumors}" + _IN_US),
    "p4": ("{number} {size} {tumor_type} {tumors}" + _IN_US,
           "{number} {size} {regularity}-shaped {tumors}" + _IN_US),
    "p5": ("{number} {size} {tumor_type} {tumors} at the {location}" + _IN_US,
           "{number} {size} {regularity}-shaped {tumors} at the {location}" + _IN_US),
    "p6": ("{number} {size} {shape}-shaped {tumor_type} {tumors} at the {location}" + _IN_US,
           "{number} {size} {shape}-shaped {regularity} {tumors} at the {location}" + _IN_US),
}
_NO_TUMOR = "No tumor" + _IN_US
BUSI = Family(
    "busi", BUSI_TEMPLATES,
    {"number": NUMBER_RE, "size": SIZE_RE, "shape": FREE_RE, "location": LOCATION_RE,
     "tumor_type": "benign|malignant", "regularity": "regular|irregular", "tumors": "tumors?"},
    empty={"p0": "", **{f"p{i}": _NO_TUMOR for i in range(1, 7)}},
    capitalize=True)

#: BUSI class -> the paper's regularity wording (benign: regular, malignant: irregular).
BUSI_REGULARITY = {"benign": "regular", "malignant": "irregular"}

# ---------------------------------------------------------------------- CAMUS
CAMUS_LABELS = ("Left ventricular cavity", "Myocardium", "Left atrium cavity")


def _camus_pair(middle: str, tail: str = "") -> tuple[str, str]:
    return (f"{{label}}{middle} of the heart{tail}.",
            f"{{label}}{middle} in the cardiac ultrasound{tail}.")


_VIEW = " in {chambers}-chamber view"
_CYCLE = " at end of the {cycle} cycle"
_PERSON = " of a {age}-year-old {sex}"
CAMUS = Family(
    "camus",
    {"p0": "",
     "p1": _camus_pair(""),
     "p2": _camus_pair(_VIEW),
     "p3": _camus_pair(_VIEW, _CYCLE),
     "p4": _camus_pair(_VIEW, _CYCLE + " of a {sex}"),
     "p5": _camus_pair(_VIEW, _CYCLE + _PERSON),
     "p6": _camus_pair(_VIEW, _CYCLE + _PERSON + " with {quality} image quality"),
     "p7": _camus_pair(" of {shape} shape" + _VIEW,
                       _CYCLE + _PERSON + " with {quality} image quality")},
    {"label": "|".join(CAMUS_LABELS), "chambers": "two|four", "cycle": "diastole|systole",
     "sex": "male|female", "age": NUMBER_RE, "quality": WORD_RE, "shape": FREE_RE})

# ---------------------------------------------------------------------- CheXlocalize
#: CheXlocalize mask suffix -> label as worded in the prompts.
CHEX_LABELS = {s: s.replace("_", " ").title() for s in (
    "airspace_opacity", "atelectasis", "cardiomegaly", "consolidation", "edema",
    "enlarged_cardiomediastinum", "lung_lesion", "pleural_effusion", "pneumothorax",
    "support_devices")}
#: CheXpert observations in the order of the labels CSV (and of the P5/P6 lists).
CHEXPERT_OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices")
_CHEX_P4 = "{label} of shape {shape}, and located in {location} of the {view} view of a Chest Xray."
CHEXLOCALIZE = Family(
    "chexlocalize",
    {"p0": "",
     "p1": "{label} in a chest Xray.",
     "p2": "{label} in the {view} view of a Chest Xray.",
     "p3": "{label} of shape {shape} in the {view} view of a Chest Xray.",
     "p4": _CHEX_P4,
     "p5": _CHEX_P4 + " {pathologies} are present.",
     "p6": "{label} in a Chest Xray. {pathologies} are present. "},
    {"label": "|".join(CHEX_LABELS.values()), "view": "frontal|lateral", "shape": FREE_RE,
     "location": LOCATION_RE,
     "pathologies": "(?:{0})(?:, (?:{0}))*".format("|".join(CHEXPERT_OBSERVATIONS))})

# ---------------------------------------------------------------------- radiology reports
#: Appendix F.2 (MIMIC-CXR lungs): P0 empty, P1 the study's free-text report (fitted to the text
#: context by :mod:`medvlsm_jax.data.reports`); nothing is generated from the mask.
REPORTS = Family("reports", {"p0": "", "p1": "{report}"}, {"report": FREE_RE})
