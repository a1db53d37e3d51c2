"""The paper's tables from a sweep store: which runs fill which cell, and how a cell is shown.

Every table is mean ± std test Dice (%) over a test set's images, the best mean of each column
in bold. Where several runs compete for one cell (the prompts P0-P9 of a finetuned VLSM), the
cell shows the run with the best **validation** Dice (never chosen on the test set) and names
its prompt. Tables (the numbering follows the paper as far as it could be checked; see
``data/paper_numbers.json``):

* ``table3`` — finetuned on each dataset, tested on it (VLSMs and CNNs; settings ``finetune``,
  ``cnn``, ``ood``);
* ``table4`` — trained on one dataset and tested on every set it was evaluated on (the
  endoscopy out-of-distribution study; runs whose ``eval.datasets`` hold more than their own set);
* ``pooled`` — trained on ``pooled_polyp`` / ``pooled_all``, tested on each member set;
* ``table6`` — zero-shot, one row per model and prompt;
* ``table7`` — frozen encoders (appendix F.1; setting ``frozen``);
* ``table8`` — the MIMIC-CXR reports subset (appendix F.2), zero-shot and finetuned, P0 / P1.

Where the paper gives a number for a cell (the data file), the cell shows it beside ours with
the difference.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import os
from collections.abc import Iterable
from typing import Any

from medvlsm_jax.data.catalogue import DATASETS, POOLED

PAPER_NUMBERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "paper_numbers.json")
MODEL_ORDER = ("clipseg", "biomedclipseg", "biomedclipseg_d", "cris", "unet", "unetpp", "deeplabv3plus")
MODEL_NAMES = {"clipseg": "CLIPSeg", "biomedclipseg": "BiomedCLIPSeg", "biomedclipseg_d": "BiomedCLIPSeg-D",
               "cris": "CRIS", "unet": "UNet", "unetpp": "UNet++", "deeplabv3plus": "DeepLabv3+"}
TRAIN_SETTINGS = {"finetune", "cnn", "ood", "smoke", "reports"}
IMAGE_ONLY = ("unet", "unetpp", "deeplabv3plus")


@dataclasses.dataclass
class Cell:
    mean: float  # Dice in [0, 1]
    std: float
    n: int
    run: str = ""
    prompt: str = ""
    paper: float | None = None  # the paper's Dice (%), when known

    def text(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}"


@dataclasses.dataclass
class Table:
    name: str
    title: str
    row_label: str
    columns: list[str]
    rows: dict[str, dict[str, Cell]]  # row label -> column -> cell
    note: str = ""

    def best(self) -> dict[str, float]:
        out = {}
        for col in self.columns:
            means = [r[col].mean for r in self.rows.values() if col in r]
            if means:
                out[col] = max(means)
        return out

    def is_empty(self) -> bool:
        return not any(self.rows.values())

    # ------------------------------------------------------------------ rendering

    def _cell(self, cell: Cell | None, bold: bool, fmt: str) -> str:
        if cell is None:
            return "-"
        text = cell.text()
        if fmt == "md":
            text = f"**{text}**" if bold else text
        extra = []
        if cell.prompt:
            extra.append(cell.prompt)
        if cell.paper is not None:
            extra.append(f"paper {cell.paper:.2f}, Δ {100 * cell.mean - cell.paper:+.2f}")
        if fmt == "html":
            text = f"<b>{html.escape(text)}</b>" if bold else html.escape(text)
            return text + (f"<br><small>{html.escape('; '.join(extra))}</small>" if extra else "")
        return text + (f" ({'; '.join(extra)})" if extra else "")

    def markdown(self) -> str:
        best = self.best()
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join([self.row_label, *self.columns]) + " |")
        lines.append("|" + "---|" * (len(self.columns) + 1))
        for label, row in self.rows.items():
            cells = [self._cell(row.get(c), c in row and row[c].mean == best.get(c), "md") for c in self.columns]
            lines.append("| " + " | ".join([label, *cells]) + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["table", self.row_label, "column", "dice_mean_pct", "dice_std_pct", "n", "best_in_column",
                    "prompt", "run", "paper_dice_pct", "delta_pct"])
        best = self.best()
        for label, row in self.rows.items():
            for col in self.columns:
                c = row.get(col)
                if c is None:
                    continue
                w.writerow([self.name, label, col, f"{100 * c.mean:.4f}", f"{100 * c.std:.4f}", c.n,
                            int(c.mean == best.get(col)), c.prompt, c.run,
                            "" if c.paper is None else f"{c.paper:.2f}",
                            "" if c.paper is None else f"{100 * c.mean - c.paper:+.4f}"])
        return buf.getvalue()

    def html(self) -> str:
        best = self.best()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in [self.row_label, *self.columns])
        body = []
        for label, row in self.rows.items():
            cells = "".join(f"<td>{self._cell(row.get(c), c in row and row[c].mean == best.get(c), 'html')}</td>"
                            for c in self.columns)
            body.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<section class='table' id='{self.name}'><h3>{html.escape(self.title)}</h3>{note}"
                f"<table data-table='{self.name}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
                f"</table></section>")


# --------------------------------------------------------------------------- selecting runs


def _order_models(models: Iterable[str]) -> list[str]:
    return sorted(set(models), key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m))


def _order_datasets(names: Iterable[str]) -> list[str]:
    known = list(DATASETS) + list(POOLED)
    return sorted(set(names), key=lambda d: (known.index(d) if d in known else 99, d))


def model_name(label: str) -> str:
    return MODEL_NAMES.get(label, label)


def _cell(result: dict[str, Any], dataset: str) -> Cell | None:
    m = result["results"].get(dataset, {}).get("dice")
    if m is None:
        return None
    prompt = result["prompt"] if result["model"] not in IMAGE_ONLY else ""
    return Cell(m["mean"], m["std"] if m["std"] == m["std"] else 0.0, m["n"], result["id"], prompt)


def _best_by_val(results: list[dict[str, Any]]) -> dict[str, Any]:
    return max(results, key=lambda r: ((r.get("train") or {}).get("best_val_dice", -1.0), r["id"]))


def _paper_cells() -> list[dict[str, Any]]:
    if not os.path.isfile(PAPER_NUMBERS):
        return []
    with open(PAPER_NUMBERS) as f:
        return json.load(f)["cells"]


def _attach_paper(table: Table, key: callable) -> None:
    """Sets ``cell.paper`` from the data file; ``key(cell_record) -> (row label, column) | None``."""
    for rec in _paper_cells():
        where = key(rec)
        if where is None:
            continue
        row, col = where
        cell = table.rows.get(row, {}).get(col)
        if cell is not None:
            cell.paper = rec["dice_mean"]


def _trained(results: list[dict[str, Any]], setting: set[str]) -> list[dict[str, Any]]:
    return [r for r in results if r["kind"] == "train" and set(r.get("settings", ())) & setting]


def table3(results: list[dict[str, Any]]) -> Table:
    runs = [r for r in _trained(results, TRAIN_SETTINGS - {"reports"}) if r["dataset"] not in POOLED]
    groups: dict[tuple[str, str], list] = {}
    for r in runs:
        groups.setdefault((r["model"], r["dataset"]), []).append(r)
    rows: dict[str, dict[str, Cell]] = {}
    for model in _order_models(m for m, _ in groups):
        rows[model_name(model)] = {}
        for (m, ds), rs in groups.items():
            if m == model:
                cell = _cell(_best_by_val(rs), ds)
                if cell is not None:
                    rows[model_name(model)][ds] = cell
    t = Table("table3", "Table 3 — finetuned on each dataset, tested on it (Dice %, mean ± std over test images)",
              "model", _order_datasets(ds for _, ds in groups), rows,
              "VLSM cells: the prompt with the best validation Dice.")
    _attach_paper(t, lambda c: (model_name(c["model"]), c["tested_on"]) if c["setting"] == "individual" else None)
    return t


def table4(results: list[dict[str, Any]]) -> Table:
    runs = [r for r in _trained(results, TRAIN_SETTINGS - {"reports"})
            if r["dataset"] not in POOLED and len(r.get("eval_datasets", ())) > 1]
    groups: dict[tuple[str, str], list] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    rows: dict[str, dict[str, Cell]] = {}
    columns: set[str] = set()
    for ds in _order_datasets(d for d, _ in groups):
        for model in _order_models(m for d, m in groups if d == ds):
            best = _best_by_val(groups[(ds, model)])
            row = {}
            for test in best["eval_datasets"]:
                cell = _cell(best, test)
                if cell is not None:
                    row[test] = cell
                    columns.add(test)
            rows[f"{ds} → {model_name(model)}"] = row
    return Table("table4", "Table 4 — trained on one set, tested on every set (out of distribution; Dice %)",
                 "trained on → model", _order_datasets(columns), rows,
                 "Best bold per test set; VLSM rows: the prompt with the best validation Dice.")


def table_pooled(results: list[dict[str, Any]]) -> Table:
    runs = [r for r in _trained(results, TRAIN_SETTINGS) if r["dataset"] in POOLED]
    groups: dict[tuple[str, str], list] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    rows, columns = {}, set()
    for pool in _order_datasets(d for d, _ in groups):
        for model in _order_models(m for d, m in groups if d == pool):
            best = _best_by_val(groups[(pool, model)])
            row = {t: c for t in best["eval_datasets"] if (c := _cell(best, t)) is not None}
            columns |= set(row)
            rows[f"{pool} → {model_name(model)}"] = row
    t = Table("pooled", "Pooled training — trained on pooled sets, tested on each member (Dice %)",
              "trained on → model", _order_datasets(columns), rows)
    _attach_paper(t, lambda c: (f"{c['trained_on']} → {model_name(c['model'])}", c["tested_on"])
                  if c["setting"] in POOLED else None)
    return t


def table6(results: list[dict[str, Any]]) -> Table:
    runs = [r for r in results if r["kind"] == "zeroshot" and r["dataset"] not in ("mimic_cxr_lung",)]
    rows: dict[str, dict[str, Cell]] = {}
    columns = set()
    keyed = sorted(runs, key=lambda r: (_order_models([r["model"]]), int(r["prompt"][1:]) if r["prompt"][1:].isdigit()
                                        else 99, r["prompt"]))
    for model in _order_models(r["model"] for r in runs):
        for r in keyed:
            if r["model"] != model:
                continue
            label = f"{model_name(model)} {r['prompt'].upper() or 'empty'}"
            for ds in r["eval_datasets"]:
                cell = _cell(r, ds)
                if cell is not None:
                    cell.prompt = ""
                    rows.setdefault(label, {})[ds] = cell
                    columns.add(ds)
    return Table("table6", "Table 6 — zero-shot (no finetuning), per model and prompt (Dice %)", "model, prompt",
                 _order_datasets(columns), rows, "Best bold per dataset.")


def table7(results: list[dict[str, Any]]) -> Table:
    runs = [r for r in _trained(results, {"frozen"}) if r["dataset"] not in POOLED]
    groups: dict[tuple[str, str], list] = {}
    for r in runs:
        groups.setdefault((r["model"], r["dataset"]), []).append(r)
    rows: dict[str, dict[str, Cell]] = {}
    for model in _order_models(m for m, _ in groups):
        rows[model_name(model) + " (frozen encoders)"] = {
            ds: c for (m, ds), rs in groups.items() if m == model and (c := _cell(_best_by_val(rs), ds)) is not None}
    return Table("table7", "Table 7 — frozen encoders (appendix F.1; Dice %)", "model",
                 _order_datasets(ds for _, ds in groups), rows, "The prompt with the best validation Dice.")


def table8(results: list[dict[str, Any]]) -> Table:
    runs = [r for r in results if r["dataset"] == "mimic_cxr_lung" and r["kind"] in ("train", "zeroshot")]
    rows: dict[str, dict[str, Cell]] = {}
    for r in sorted(runs, key=lambda r: (_order_models([r["model"]]), r["kind"], r["prompt"])):
        label = f"{model_name(r['model'])} {'finetuned' if r['kind'] == 'train' else 'zero-shot'} {r['prompt'].upper()}"
        cell = _cell(r, "mimic_cxr_lung")
        if cell is not None:
            cell.prompt = ""
            rows[label] = {"mimic_cxr_lung": cell}
    return Table("table8", "Table 8 — MIMIC-CXR lungs with radiology reports (appendix F.2; Dice %)",
                 "model, setting, prompt", ["mimic_cxr_lung"], rows,
                 "P0: empty prompt; P1: the free-text report (long reports: see medvlsm_jax.data.reports).")


def all_tables(results: list[dict[str, Any]]) -> list[Table]:
    return [table3(results), table4(results), table_pooled(results), table6(results), table7(results),
            table8(results)]
