"""Radiology reports as prompts (appendix F.2 / Table 8: MIMIC-CXR lungs, P1 = the report).

A free-text report is often longer than a text encoder's context (CLIP: 77 tokens with its
start and end tokens, i.e. 75 report tokens; a typical MIMIC-CXR report has 80-250). The
tokenizer alone would keep the report's first tokens, which are mostly the EXAMINATION /
INDICATION / TECHNIQUE / COMPARISON headers, never the findings. The policy used here
(:func:`fit_report`, ``policy="impression_first"``, the default) is a summarising rule:

1. clean: collapse whitespace, drop the de-identification blanks (``___``) and the
   ``FINAL REPORT`` banner;
2. split into sections by their upper-case headers (``FINDINGS:``, ``IMPRESSION:``, ...) and
   into sentences;
3. keep whole sentences in order of relevance — IMPRESSION, then FINDINGS, then everything else
   in report order — skipping a sentence that would overflow the budget and trying the next
   ones, until the budget (the context minus the start/end tokens) is full;
4. print the kept sentences in that order; a first sentence longer than the whole budget is cut
   at the last word that fits (the only case where a sentence is cut).

``policy="truncate"`` keeps the cleaned report as it is and lets the tokenizer truncate it
(its first tokens), as the original's ``truncation=True`` would. Short reports pass unchanged
(after cleaning) under both. The result fits the context by construction; the tests check it on
long synthetic reports. :func:`write_mimic_annotations` applies the policy when it writes the
dataset's annotation files (P0 empty, P1 the fitted report, the full report kept beside it as
``report``), so the built dataset holds exactly what the model reads.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.registry import get_spec

POLICIES = ("impression_first", "truncate")
SECTION_ORDER = ("IMPRESSION", "FINDINGS")
_HEADER = re.compile(r"\b([A-Z][A-Z /&]{2,40}):")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def clean_report(text: str) -> str:
    """Whitespace collapsed, ``___`` blanks and the ``FINAL REPORT`` banner removed."""
    text = re.sub(r"_{2,}", " ", text)
    text = re.sub(r"\bFINAL REPORT\b", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def sections(text: str) -> list[tuple[str, str]]:
    """``[(HEADER, body), ...]`` in report order; text before the first header has header ``""``."""
    out, last, header = [], 0, ""
    for m in _HEADER.finditer(text):
        body = text[last:m.start()].strip()
        if body or header:
            out.append((header, body))
        header, last = m.group(1).strip(), m.end()
    out.append((header, text[last:].strip()))
    return [(h, b) for h, b in out if b]


def sentences(text: str) -> list[str]:
    """Sentences of ``text``; fragments without a letter or digit (a blanked-out ``___.``) are dropped."""
    return [s.strip() for s in _SENTENCE.split(text) if re.search(r"[A-Za-z0-9]", s)]


def fit_report(text: str, count_tokens: Callable[[str], int], budget: int,
               policy: str = "impression_first") -> str:
    """``text`` made to fit ``budget`` tokens (``count_tokens`` counts a text's tokens without
    start/end tokens) by ``policy`` (see the module doc)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown report policy {policy!r}; choose from {', '.join(POLICIES)}")
    text = clean_report(text)
    if policy == "truncate" or count_tokens(text) <= budget:
        return text
    parts = sections(text)
    ranked = [(h, b) for key in SECTION_ORDER for h, b in parts if h == key]
    ranked += [(h, b) for h, b in parts if h not in SECTION_ORDER]
    candidates = [s for _, body in ranked for s in sentences(body)]
    kept: list[str] = []
    for s in candidates:
        trial = " ".join(kept + [s])
        if count_tokens(trial) <= budget:
            kept.append(s)
    if not kept and candidates:  # even the most relevant sentence is too long: cut it at a word
        words = candidates[0].split()
        while words and count_tokens(" ".join(words)) > budget:
            words.pop()
        kept = [" ".join(words)]
    return " ".join(kept)


def clip_counter(max_length: int = 77) -> tuple[Callable[[str], int], int]:
    """(token counter, budget) of the CLIP tokenizer bundled with the package."""
    from medvlsm_jax.data.tokenizers import ClipTokenizer  # noqa: PLC0415

    tok = ClipTokenizer.default(max_length=max_length)
    return (lambda t: len(tok.encode(t)) - 2), max_length - 2


# --------------------------------------------------------------------------- annotation files


def _split(subjects: Sequence[str], val: float, test: float, seed: int) -> dict[str, str]:
    unique = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val, n_test = round(val * len(unique)), round(test * len(unique))
    out = {}
    for rank, i in enumerate(order):
        out[unique[i]] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
    return out


def write_mimic_annotations(pairs_csv: str | pathlib.Path, out_root: str | pathlib.Path, *,
                            policy: str = "impression_first", max_length: int = 77, seed: int = 0,
                            copy: bool = True, name: str = "mimic_cxr_lung") -> dict[str, int]:
    """Writes ``<out_root>/<name>/{images,masks,anns/{train,val,test}.json}`` from a CSV with
    columns ``image``, ``mask``, ``report`` (paths; relative ones are relative to the CSV) and
    optionally ``subject`` (patient id; the split is by patient, 80/10/10, seeded; default: the
    image's folder name). P0 is empty, P1 the report fitted by ``policy`` to a CLIP context of
    ``max_length``; the full report is kept as ``report``. Returns the split sizes."""
    spec = get_spec(name)
    pairs_csv = pathlib.Path(pairs_csv)
    base = pairs_csv.parent
    with open(pairs_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"image", "mask", "report"} - set(rows[0] if rows else ())
    if missing:
        raise DataError(f"{pairs_csv}: needs columns image, mask, report (missing {', '.join(sorted(missing))})")
    count, budget = clip_counter(max_length)
    root = pathlib.Path(out_root) / name
    for sub in ("images", "masks", "anns"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    subjects = [r.get("subject") or pathlib.Path(r["image"]).parent.name for r in rows]
    split_of = _split(subjects, spec.split_rule.val, spec.split_rule.test, seed)
    records: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for i, (row, subject) in enumerate(zip(rows, subjects)):
        paths = {}
        for key in ("image", "mask", "report"):
            p = pathlib.Path(row[key])
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise DataError(f"{pairs_csv} row {i + 2}: {key} file {p} not found")
            paths[key] = p
        img_name = f"{i:05d}_{paths['image'].name}"
        mask_name = f"{i:05d}_{paths['mask'].name}"
        for key, dst in (("image", root / "images" / img_name), ("mask", root / "masks" / mask_name)):
            if not dst.exists():
                (shutil.copyfile if copy else os.symlink)(paths[key], dst)
        report = paths["report"].read_text(encoding="utf-8", errors="replace")
        records[split_of[subject]].append({
            "img_name": img_name, "mask_name": mask_name, "subject": subject,
            "prompts": {"p0": "", "p1": fit_report(report, count, budget, policy)},
            "report": clean_report(report), "report_policy": policy})
    for split, recs in records.items():
        (root / "anns" / f"{split}.json").write_text(json.dumps(recs, indent=1))
    return {k: len(v) for k, v in records.items()}
