"""Appendix F.2: radiology reports as prompts (long-report policy) and the MIMIC-CXR lung set's
annotation writer and builder, on generated images, masks and reports."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from medvlsm_jax.data import reports
from medvlsm_jax.data.tokenizers import ClipTokenizer

TOK = ClipTokenizer.default()
COUNT, BUDGET = reports.clip_counter(77)

FINDINGS = ["The cardiomediastinal silhouette is within normal limits.",
            "There is a small left pleural effusion with adjacent atelectasis.",
            "No pneumothorax is seen.", "Degenerative changes of the thoracic spine are noted.",
            "Surgical clips project over the right upper quadrant.",
            "The pulmonary vasculature is mildly engorged without frank edema."]
IMPRESSION = ["Small left pleural effusion.", "Mild pulmonary vascular congestion."]


def _long_report(rng: np.random.Generator, n_extra: int) -> str:
    findings = list(FINDINGS) + [f"Incidental note {k} about the {w} region is unchanged."
                                 for k, w in zip(range(n_extra), rng.choice(["hilar", "apical", "basilar"], n_extra))]
    return ("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___F "
            "with shortness of breath, evaluate for effusion.\n\n TECHNIQUE: PA and lateral views of the chest.\n\n"
            " COMPARISON:  ___.\n\n FINDINGS: \n\n " + " ".join(findings) + "\n\n IMPRESSION: \n\n "
            + " ".join(IMPRESSION) + "\n")


@pytest.mark.parametrize("n_extra", [0, 5, 40])
def test_impression_first_fits_the_context_with_whole_sentences(n_extra):
    text = _long_report(np.random.default_rng(n_extra), n_extra)
    assert COUNT(reports.clean_report(text)) > BUDGET  # long enough to need the policy
    fitted = reports.fit_report(text, COUNT, BUDGET)
    assert COUNT(fitted) <= BUDGET and len(TOK.encode(fitted)) <= 77
    assert fitted.startswith(" ".join(IMPRESSION))  # the impression first, whole
    kept = reports.sentences(fitted)
    cleaned = reports.clean_report(text)
    assert all(s in cleaned for s in kept)  # sentences are never cut
    assert "___" not in fitted and "FINAL REPORT" not in fitted
    ids = TOK([fitted], max_length=77)["input_ids"][0]
    assert "".join(TOK.decode(ids).split()) == "".join(fitted.lower().split())  # nothing truncated
    assert reports.fit_report(text, COUNT, BUDGET) == fitted  # deterministic


def test_short_reports_pass_unchanged_and_truncate_leaves_it_to_the_tokenizer():
    short = "FINDINGS: Lungs are clear. IMPRESSION: No acute process."
    assert reports.fit_report(short, COUNT, BUDGET) == short
    long = _long_report(np.random.default_rng(0), 10)
    assert reports.fit_report(long, COUNT, BUDGET, "truncate") == reports.clean_report(long)
    with pytest.raises(ValueError, match="unknown report policy"):
        reports.fit_report(short, COUNT, BUDGET, "summarise")


def test_a_single_overlong_sentence_is_cut_at_a_word():
    text = "IMPRESSION: " + " ".join(["bilateral"] * 200) + "."
    fitted = reports.fit_report(text, COUNT, BUDGET)
    assert 0 < COUNT(fitted) <= BUDGET and set(fitted.split()) == {"bilateral"}


def _write_pairs(root, n=12):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        d = root / "raw" / f"p{i // 2:03d}"
        d.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 255, (40, 36), dtype=np.uint8)
        mask = np.zeros((40, 36), np.uint8)
        mask[8:32, 4:16] = 255
        mask[8:32, 20:32] = 255
        Image.fromarray(img).save(d / f"{i}.png")
        Image.fromarray(mask).save(d / f"{i}_mask.png")
        (d / f"{i}.txt").write_text(_long_report(rng, i * 4))
        rows.append({"image": f"raw/p{i // 2:03d}/{i}.png", "mask": f"raw/p{i // 2:03d}/{i}_mask.png",
                     "report": f"raw/p{i // 2:03d}/{i}.txt"})
    with open(root / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "mask", "report"])
        w.writeheader()
        w.writerows(rows)
    return root / "pairs.csv"


def test_mimic_annotations_build_and_load_with_the_report_as_p1(tmp_path):
    from medvlsm_jax.cli import data as data_cli
    from medvlsm_jax.data import build_dataset, make_loader
    from medvlsm_jax.models.registry import default_contract

    pairs = _write_pairs(tmp_path)
    assert data_cli.main(["mimic", "--pairs", str(pairs), "--out", str(tmp_path / "manual")]) == 0
    anns = {s: json.loads((tmp_path / "manual" / "mimic_cxr_lung" / "anns" / f"{s}.json").read_text())
            for s in ("train", "val", "test")}
    assert sum(map(len, anns.values())) == 12 and all(anns.values())
    subjects = {s: {r["subject"] for r in recs} for s, recs in anns.items()}
    assert not (subjects["train"] & subjects["test"]) and not (subjects["train"] & subjects["val"])  # by patient
    rec = anns["train"][0]
    assert rec["prompts"]["p0"] == "" and COUNT(rec["prompts"]["p1"]) <= BUDGET
    assert rec["prompts"]["p1"].startswith(IMPRESSION[0]) and len(rec["report"]) > len(rec["prompts"]["p1"])
    build_dataset("mimic_cxr_lung", manual_dir=tmp_path / "manual", data_dir=tmp_path / "tfds")
    loader = make_loader("mimic_cxr_lung", "train", default_contract("clipseg", "tiny", 32), "p1",
                         len(anns["train"]), data_dir=str(tmp_path / "tfds"))
    batch = next(iter(loader))
    assert sorted(batch["prompt"]) == sorted(r["prompts"]["p1"] for r in anns["train"])
    assert (batch["attention_mask"].sum(1) <= 77).all() and batch["mask"].max() == 1


def test_bad_pairs_file_names_the_problem(tmp_path):
    from medvlsm_jax.data.errors import DataError

    (tmp_path / "pairs.csv").write_text("image,mask\na.png,b.png\n")
    with pytest.raises(DataError, match="needs columns image, mask, report"):
        reports.write_mimic_annotations(tmp_path / "pairs.csv", tmp_path / "out")
    (tmp_path / "pairs.csv").write_text("image,mask,report\na.png,b.png,c.txt\n")
    with pytest.raises(DataError, match="row 2: image file .*a.png not found"):
        reports.write_mimic_annotations(tmp_path / "pairs.csv", tmp_path / "out")


def test_reports_plan_runs_clipseg_and_cris_zero_shot_and_finetuned(tmp_path):
    from medvlsm_jax.sweep import plans

    e = plans.expand("reports", plans.PlanOptions(workdir=str(tmp_path)))
    got = {(r.kind, r.model, e.configs[i].data.prompt) for i, r in e.items() if r.model in ("clipseg", "cris")}
    assert got == {(k, m, p) for k in ("zeroshot", "train") for m in ("clipseg", "cris") for p in ("p0", "p1")}
    assert {e.configs[i].data.dataset for i in e.ids} == {"mimic_cxr_lung"}
