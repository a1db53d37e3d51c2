"""The report's tables from result records: cell selection by validation Dice (never test), best
in bold, the paper's numbers beside ours, CSV; and the paper-number data file itself."""

from __future__ import annotations

import csv
import io
import json

from medvlsm_jax.report import tables


def _result(model, dataset, prompt, val, test, kind="train", settings=("finetune",), evals=None):
    evals = evals or {dataset: test}
    return {"id": f"{kind}-{model}-{dataset}-{prompt}", "kind": kind, "model": model, "settings": list(settings),
            "dataset": dataset, "prompt": prompt, "eval_datasets": list(evals), "eval_dir": "eval",
            "results": {d: {"dice": {"mean": v, "std": 0.05, "n": 100}} for d, v in evals.items()},
            "train": {"best_val_dice": val}}


def test_cells_take_the_best_validation_prompt_and_show_the_paper():
    results = [_result("clipseg", "kvasir_polyp", "p3", val=0.80, test=0.85),
               _result("clipseg", "kvasir_polyp", "p5", val=0.90, test=0.80),  # best on validation
               _result("cris", "kvasir_polyp", "p1", val=0.70, test=0.9139),
               _result("unet", "kvasir_polyp", "p0", val=0.5, test=0.8477, settings=("cnn",))]
    t = tables.table3(results)
    row = t.rows["CLIPSeg"]["kvasir_polyp"]
    assert (row.mean, row.prompt, row.paper) == (0.80, "p5", 89.51)  # paper: medvlsm README Table 2
    assert t.rows["UNet"]["kvasir_polyp"].prompt == ""
    md = t.markdown()
    assert "**91.39 ± 5.00** (p1; paper 91.39, Δ +0.00)" in md and "80.00 ± 5.00 (p5; paper 89.51, Δ -9.51)" in md
    rows = list(csv.DictReader(io.StringIO(t.csv())))
    best = {r["model"]: r["best_in_column"] for r in rows}
    assert best == {"CLIPSeg": "0", "CRIS": "1", "UNet": "0"}
    assert "<b>91.39 ± 5.00</b>" in t.html()


def test_out_of_distribution_pooled_zero_shot_and_frozen_tables():
    six = {d: 0.5 + 0.01 * i for i, d in enumerate(("kvasir_polyp", "clinicdb_polyp", "bkai_polyp",
                                                       "etis_polyp", "colondb_polyp", "cvc300_polyp"))}
    results = [_result("cris", "kvasir_polyp", "p1", 0.8, None, evals=six),
               _result("cris", "pooled_polyp", "p1", 0.8, None, evals=six),
               _result("clipseg", "busi", "p2", 0, 0.3, kind="zeroshot", settings=("zeroshot",)),
               _result("cris", "busi", "p2", 0.6, 0.7, settings=("frozen",))]
    t4 = tables.table4(results)
    assert list(t4.rows) == ["kvasir_polyp → CRIS"] and len(t4.columns) == 6
    pooled = tables.table_pooled(results)
    assert pooled.rows["pooled_polyp → CRIS"]["kvasir_polyp"].paper == 91.25
    assert list(tables.table6(results).rows) == ["CLIPSeg P2"]
    assert list(tables.table7(results).rows) == ["CRIS (frozen encoders)"]
    assert tables.table3(results).rows.get("CRIS", {}).get("busi") is None  # frozen-only runs stay in table 7


def test_paper_numbers_are_referenced_data():
    data = json.load(open(tables.PAPER_NUMBERS))
    assert data["not_found"] and set(data["sources"]) == {"medvlsm-readme-table2"}
    cells = data["cells"]
    assert len(cells) == 125 and all(0 < c["dice_mean"] < 100 and c["source"] in data["sources"] for c in cells)
    assert len({(c["setting"], c["model"], c["tested_on"]) for c in cells}) == len(cells)
