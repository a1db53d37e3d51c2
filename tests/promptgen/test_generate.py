"""Annotation files from image/mask folders: schema, metadata, splits, CLI and bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from medvlsm_jax.cli.prompts import main
from medvlsm_jax.promptgen import (PromptGenError, assign_splits, generate_annotations,
                                   get_dataset, round_trip)

H = W = 48
YY, XX = np.mgrid[:H, :W]


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def blob(cy=24, cx=24, r=9):
    return (((YY - cy) ** 2 + (XX - cx) ** 2) < r ** 2) * 255


def rgb(value=(200, 90, 90)):
    return np.broadcast_to(np.array(value, np.uint8), (H, W, 3))


@pytest.fixture
def polyp_dir(tmp_path):
    for i in range(10):
        save(tmp_path / "images" / f"{i}.png", rgb())
        save(tmp_path / "masks" / f"{i}.png", blob(10 + 3 * i, 24))
    return tmp_path


def test_polyp_cli_writes_medvlsm_schema(polyp_dir, capsys):
    out = polyp_dir / "anns"
    assert main(["kvasir_polyp", "--images", str(polyp_dir / "images"), "--masks",
                 str(polyp_dir / "masks"), "--out", str(out), "--seed", "1"]) == 0
    splits = {s: json.loads((out / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    r = splits["train"][0]
    assert set(r) == {"bbox", "cat", "segment_id", "img_name", "mask_name", "sentences",
                      "sentences_num", "prompts"}
    assert list(r["prompts"]) == [f"p{i}" for i in range(10)]
    assert isinstance(r["prompts"]["p9"], list) and len(r["prompts"]["p9"]) == 5
    assert r["prompts"]["p5"].startswith("one medium red ") and r["prompts"]["p1"] == "polyp"
    records = sum(splits.values(), [])
    assert round_trip(records, get_dataset("kvasir_polyp").family).rate == 1.0
    assert "train: 8" in capsys.readouterr().out
    # same seed, same split; the split file form reproduces it
    (polyp_dir / "split.json").write_text(json.dumps(
        {s: [r["img_name"] for r in splits[s]] for s in splits}))
    again = generate_annotations("kvasir_polyp", polyp_dir / "images", polyp_dir / "masks",
                                 split=polyp_dir / "split.json")
    assert {s: [r["img_name"] for r in v] for s, v in again.items()} == \
        {s: [r["img_name"] for r in v] for s, v in splits.items()}
    from_folder = generate_annotations("kvasir_polyp", polyp_dir / "images",
                                       polyp_dir / "masks", split=out)
    assert from_folder == again


def test_stats_and_check_subcommands(polyp_dir, capsys):
    out_dir = polyp_dir / "anns"
    generate_annotations("kvasir_polyp", polyp_dir / "images", polyp_dir / "masks", out_dir)
    assert main(["check", "kvasir_polyp", "--anns", str(out_dir)]) == 0
    out = capsys.readouterr().out
    # strings, not records, are counted (every prompt string of the 10 records), all re-rendered
    records = [json.loads(f.read_text()) for f in sorted(out_dir.glob("*.json"))]
    strings = sum(len(v) if isinstance(v, list) else 1 for recs in records for r in recs
                  for v in r["prompts"].values())
    assert strings > 10
    assert f"kvasir_polyp: {strings}/{strings} identical strings (100.00 %), 0 mismatches" in out
    assert main(["stats", "kvasir_polyp", "--anns", str(out_dir), "--compare", str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert "size" in text and "100.0% (10)" in text


def test_empty_polyp_mask(polyp_dir):
    save(polyp_dir / "masks" / "3.png", np.zeros((H, W)))
    with pytest.raises(PromptGenError, match=r"3\.png: the mask has no foreground.*allow-empty"):
        generate_annotations("kvasir_polyp", polyp_dir / "images", polyp_dir / "masks")
    splits = generate_annotations("kvasir_polyp", polyp_dir / "images", polyp_dir / "masks",
                                  allow_empty=True)
    rec = next(r for s in splits.values() for r in s if r["img_name"] == "3.png")
    assert rec["prompts"]["p6"] == "no polyp" and rec["prompts"]["p9"] == ["no polyp"]


@pytest.mark.parametrize("break_it,message", [
    (lambda d: save(d / "masks" / "4.png", np.zeros((H + 2, W))), r"4\.png: mask size"),
    (lambda d: (d / "masks" / "5.png").write_bytes(b"not a png"), r"5\.png: cannot read mask"),
    (lambda d: save(d / "masks" / "extra.png", blob()), r"extra\.png: no image"),
    (lambda d: (d / "masks" / "6.png").unlink(), r"no mask .* for 1 image.*6\.png"),
])
def test_bad_input_names_the_file(polyp_dir, break_it, message):
    break_it(polyp_dir)
    with pytest.raises(PromptGenError, match=message):
        generate_annotations("kvasir_polyp", polyp_dir / "images", polyp_dir / "masks")


def test_cli_reports_errors(polyp_dir, capsys):
    (polyp_dir / "split.json").write_text(json.dumps({"train": ["0.png"]}))
    assert main(["kvasir_polyp", "--images", str(polyp_dir / "images"), "--masks",
                 str(polyp_dir / "masks"), "--out", str(polyp_dir / "o"), "--split-file",
                 str(polyp_dir / "split.json")]) == 2
    assert "9 image(s) are in no split" in capsys.readouterr().err


def test_busi_classes_and_normal_wording(tmp_path):
    cases = {"1_benign": blob(), "2_malignant": blob(30, 30, 12) | blob(8, 8, 4),
             "3_normal": np.zeros((H, W))}
    for stem, mask in cases.items():
        save(tmp_path / "images" / f"{stem}.png", rgb((90, 90, 90)))
        save(tmp_path / "masks" / f"{stem}.png", mask)
    records = {r["img_name"]: r["prompts"] for s in generate_annotations(
        "busi", tmp_path / "images", tmp_path / "masks").values() for r in s}
    assert records["3_normal.png"]["p4"] == "No tumor in the breast ultrasound image."
    assert records["1_benign.png"]["p3"] == ["One benign tumor in the breast ultrasound image.",
                                             "One regular-shaped tumor in the breast ultrasound "
                                             "image."]
    assert records["2_malignant.png"]["p6"][1].startswith("Two small, medium ")
    assert "-shaped irregular tumors at the " in records["2_malignant.png"]["p6"][1]
    save(tmp_path / "masks" / "1_benign.png", np.zeros((H, W)))
    with pytest.raises(PromptGenError, match=r"1_benign\.png: BUSI benign case with an empty"):
        generate_annotations("busi", tmp_path / "images", tmp_path / "masks")
    save(tmp_path / "masks" / "1_benign.png", blob())
    save(tmp_path / "images" / "4_unknown.png", rgb())
    save(tmp_path / "masks" / "4_unknown.png", blob())
    with pytest.raises(PromptGenError, match=r"4_unknown\.png: BUSI file names"):
        generate_annotations("busi", tmp_path / "images", tmp_path / "masks")


def test_camus_metadata(tmp_path):
    for stem in ("patient0001_2CH_ED", "patient0001_4CH_ES", "patient0002_2CH_ES"):
        save(tmp_path / "images" / f"{stem}.png", np.full((H, W), 80))
        for k in (1, 2, 3):
            save(tmp_path / "masks" / f"mask_{k}" / f"{stem}_gt.png", blob(20 + k, 24, 5 + k))
    for patient, (sex, age, quality) in {"patient0001": ("M", 73, "Good"),
                                         "patient0002": ("F", 18, "Poor")}.items():
        for view in ("2CH", "4CH"):
            save_text = tmp_path / "info" / patient / f"Info_{view}.cfg"
            save_text.parent.mkdir(parents=True, exist_ok=True)
            save_text.write_text(f"ED: 1\nES: 12\nSex: {sex}\nAge: {age}\n"
                                 f"ImageQuality: {quality}\n")
    splits = generate_annotations("camus", tmp_path / "images", tmp_path / "masks",
                                  metadata=tmp_path / "info")
    records = {(r["img_name"], r["mask_name"]): r["prompts"]
               for s in splits.values() for r in s}
    assert len(records) == 9
    p = records[("patient0001_2CH_ED.png", "mask_2/patient0001_2CH_ED_gt.png")]
    assert p["p6"] == [
        "Myocardium in two-chamber view of the heart at end of the diastole cycle of a "
        "seventy-three-year-old male with good image quality.",
        "Myocardium in two-chamber view in the cardiac ultrasound at end of the diastole cycle "
        "of a seventy-three-year-old male with good image quality."]
    p = records[("patient0002_2CH_ES.png", "mask_3/patient0002_2CH_ES_gt.png")]
    assert "Left atrium cavity of " in p["p7"][0] and "eighteen-year-old female with poor" \
        in p["p7"][0]
    # patients are never split across train/val/test
    by_patient = {}
    for split, recs in assign_splits(sum(splits.values(), []), "camus", seed=5).items():
        for r in recs:
            by_patient.setdefault(r["img_name"][:11], set()).add(split)
    assert all(len(s) == 1 for s in by_patient.values())
    (tmp_path / "info" / "patient0002" / "Info_2CH.cfg").write_text("Sex: F\nAge: old\n")
    with pytest.raises(PromptGenError, match=r"patient0002/Info_2CH\.cfg: missing 'ImageQuality'"):
        generate_annotations("camus", tmp_path / "images", tmp_path / "masks",
                             metadata=tmp_path / "info")
    (tmp_path / "info" / "patient0002" / "Info_2CH.cfg").unlink()
    with pytest.raises(PromptGenError, match=r"patient0002/Info_2CH\.cfg: cannot read"):
        generate_annotations("camus", tmp_path / "images", tmp_path / "masks",
                             metadata=tmp_path / "info")
    with pytest.raises(PromptGenError, match="CAMUS needs --metadata"):
        generate_annotations("camus", tmp_path / "images", tmp_path / "masks")


def test_chexlocalize_labels_csv(tmp_path):
    from medvlsm_jax.promptgen.templates import CHEXPERT_OBSERVATIONS
    image = "patient9_study1_view1_frontal"
    save(tmp_path / "images" / f"{image}.jpg", np.full((H, W), 120))
    save(tmp_path / "masks" / f"{image}_edema.png", blob())
    save(tmp_path / "masks" / f"{image}_support_devices.png", blob(10, 40, 5))
    present = {"Edema", "Cardiomegaly"}
    header = ["Path", "Sex", *CHEXPERT_OBSERVATIONS]
    row = ["CheXpert-v1.0/valid/patient9/study1/view1_frontal.jpg", "Male",
           *("1.0" if o in present else "0.0" for o in CHEXPERT_OBSERVATIONS)]
    (tmp_path / "labels.csv").write_text(",".join(header) + "\n" + ",".join(row) + "\n")
    splits = generate_annotations("chexlocalize", tmp_path / "images", tmp_path / "masks",
                                  metadata=tmp_path / "labels.csv")
    prompts = {r["mask_name"]: r["prompts"] for s in splits.values() for r in s}
    edema = prompts[f"{image}_edema.png"]
    assert edema["p1"] == "Edema in a chest Xray."
    assert edema["p6"] == "Edema in a Chest Xray. Cardiomegaly, Edema are present. "
    assert edema["p5"].startswith("Edema of shape circle, and located in center of the frontal "
                                  "view of a Chest Xray.")
    assert prompts[f"{image}_support_devices.png"]["p2"] == \
        "Support Devices in the frontal view of a Chest Xray."
    (tmp_path / "labels.csv").write_text(",".join(header) + "\n")
    with pytest.raises(PromptGenError, match=r"labels\.csv: expected a CSV"):
        generate_annotations("chexlocalize", tmp_path / "images", tmp_path / "masks",
                             metadata=tmp_path / "labels.csv")
    with pytest.raises(PromptGenError, match=r"missing\.csv: cannot read"):
        generate_annotations("chexlocalize", tmp_path / "images", tmp_path / "masks",
                             metadata=tmp_path / "missing.csv")
