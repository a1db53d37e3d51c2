"""Parsing released prompts back into attribute values: the round-trip check against the
paper's files (parse, re-render with our templates, compare string by string) and attribute
distributions of any annotation file (real or generated)."""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from typing import Iterable, Mapping

from .errors import PromptGenError
from .templates import Family, Prompt

#: Fields holding comma-separated lists; distributions count their items.
LIST_FIELDS = ("size", "location", "pathologies")
EMPTY = "<empty mask>"


def _strings(prompt: Prompt) -> list[str]:
    return list(prompt) if isinstance(prompt, list) else [prompt]


def is_empty_record(prompts: Mapping[str, Prompt], family: Family) -> bool:
    """Whether ``prompts`` are the family's wording for a mask without foreground."""
    return family.empty is not None and dict(prompts) == family.render_empty()


def parse_prompts(prompts: Mapping[str, Prompt], family: Family) -> dict[str, str]:
    """Attribute values of one record: each field from the first prompt (p1, p2, ...) whose
    template introduces it. Prompts matching no template contribute nothing."""
    values: dict[str, str] = {}
    for key, prompt in prompts.items():
        if key not in family.templates:
            continue
        for text in _strings(prompt):
            m = family.match(key, text)
            if m is None:
                continue
            for field, value in m.groupdict().items():
                if field != "description":
                    values.setdefault(field, value.lower() if family.capitalize else value)
    return values


@dataclasses.dataclass
class RoundTrip:
    """Outcome of re-rendering parsed prompts: string counts and the differing strings."""
    strings: int = 0
    identical: int = 0
    mismatches: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.identical / self.strings if self.strings else 1.0


def round_trip(records: Iterable[Mapping], family: Family) -> RoundTrip:
    """Parse every record's prompts and re-render them; count identical strings (list prompts
    count element by element). Mismatches are (img_name, key, released, re-rendered)."""
    out = RoundTrip()
    for record in records:
        real = record["prompts"]
        if is_empty_record(real, family):
            rendered = family.render_empty()
        else:
            try:
                rendered = family.render(parse_prompts(real, family))
            except KeyError:  # a field could not be parsed from any prompt
                rendered = {}
        for key, prompt in real.items():
            mine = _strings(rendered.get(key, []))
            for i, text in enumerate(_strings(prompt)):
                out.strings += 1
                other = mine[i] if i < len(mine) else "<not rendered>"
                if other == text:
                    out.identical += 1
                else:
                    out.mismatches.append((record.get("img_name", "?"), key, text, other))
    return out


def attribute_distribution(records: Iterable[Mapping], family: Family
                           ) -> dict[str, collections.Counter]:
    """Counter of values per attribute (items of list attributes counted separately); empty
    masks are counted under ``number`` as ``<empty mask>``."""
    dist: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for record in records:
        if is_empty_record(record["prompts"], family):
            dist["number"][EMPTY] += 1
            continue
        for field, value in parse_prompts(record["prompts"], family).items():
            items = value.split(", ") if field in LIST_FIELDS else [value]
            dist[field].update(items)
    return dict(dist)


def load_annotations(folder: pathlib.Path, splits: Iterable[str] = ("train", "val", "test")
                     ) -> list[dict]:
    """Records of the given split files of a medvlsm annotation folder (missing ones skipped)."""
    folder = pathlib.Path(folder)
    records: list[dict] = []
    for split in splits:
        path = folder / f"{split}.json"
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise PromptGenError(f"{path}: cannot read annotation file ({e})") from e
        if not isinstance(data, list) or any("prompts" not in r for r in data):
            raise PromptGenError(f"{path}: expected a list of records with 'prompts'")
        records += data
    if not records:
        raise PromptGenError(f"{folder}: no train/val/test.json annotation records")
    return records
