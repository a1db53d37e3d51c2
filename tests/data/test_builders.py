"""Builders: every dataset built from a generated manual dir named after the real annotation
files, plus the bad inputs of issue 3 section 5."""

from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np
import pytest
from PIL import Image

from medvlsm_jax.data import io as data_io
from medvlsm_jax.data import masks
from medvlsm_jax.data.builders.base import RAW_DECODERS
from medvlsm_jax.data.errors import DataError, DuplicateAnnotationsWarning
from medvlsm_jax.data.registry import PAPER_DATASETS, get_spec
from medvlsm_jax.data.sources import build_dataset
from tests.data.layout import SIZE, make_record, write_dataset

RECORDS_PER_FILE = 3


# ----------------------------------------------------------------------------- layout helpers
def subsample_real(anns_dir: pathlib.Path, name: str) -> dict[str, list[dict]]:
    """The first records of each of the dataset's real annotation files."""
    files = sorted(p.name for p in (anns_dir / name).glob("*.json"))
    return {f: json.loads((anns_dir / name / f).read_text())[:RECORDS_PER_FILE] for f in files}


def read_split(builder, split: str) -> list[dict]:
    source = builder.as_data_source(split=split, decoders=RAW_DECODERS)
    return [source[i] for i in range(len(source))]


def as_lists(prompts: dict) -> dict[str, list[str]]:
    return {k: [v] if isinstance(v, str) else v for k, v in prompts.items()}


def decoded_prompts(rec: dict) -> dict[str, list[str]]:
    return {k: [v.decode() for v in vs] for k, vs in rec["prompts"].items()}


# ------------------------------------------------------------------------- all 11 datasets
@pytest.fixture(scope="module")
def real_layout(anns_dir, tmp_path_factory) -> tuple[pathlib.Path, dict]:
    root = tmp_path_factory.mktemp("medvlsm")
    anns = {name: subsample_real(anns_dir, name) for name in PAPER_DATASETS}
    for i, name in enumerate(PAPER_DATASETS):
        write_dataset(root, name, anns[name], seed=i)
    return root, anns


@pytest.fixture(scope="module")
def built_real(real_layout, tmp_path_factory):
    root, anns = real_layout
    data_dir = tmp_path_factory.mktemp("tfds")
    builders, caught = {}, {}
    for name in PAPER_DATASETS:
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            builders[name] = build_dataset(name, manual_dir=root, data_dir=data_dir)
        caught[name] = [w for w in got if issubclass(w.category, DuplicateAnnotationsWarning)]
    return builders, caught, anns


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_builder_counts_and_prompts(built_real, name):
    builders, _, anns = built_real
    builder, spec = builders[name], get_spec(name)
    for split, sources in spec.splits.items():
        expected = [rec for s in sources for rec in anns[name].get(s.ann_file, [])]
        if split in spec.optional_splits and not all(s.ann_file in anns[name] for s in sources):
            assert split not in builder.info.splits
            continue
        got = read_split(builder, split)
        assert len(got) == len(expected) == builder.info.splits[split].num_examples
        for i, (rec, want) in enumerate(zip(got, expected)):
            assert rec["index"] == i
            assert rec["img_name"].decode() == want["img_name"]
            assert rec["mask_name"].decode() == want["mask_name"]
            assert decoded_prompts(rec) == as_lists(want["prompts"])
            assert rec["dataset"].decode() == name
            assert (rec["height"], rec["width"]) == SIZE
            assert set(np.unique(masks.opencv_gray(rec["mask"]))) <= {0, 255}
    if spec.test_only:
        assert set(builder.info.splits) == {"test"}


def test_cvc300_duplicate_of_colondb_is_reported(built_real):
    _, caught, _ = built_real
    assert any("colondb_polyp" in str(w.message) for w in caught["cvc300_polyp"])
    assert not caught["kvasir_polyp"]


def test_full_test_only_split_counts(anns_dir, tmp_path):
    """ETIS at full size: the test split is train.json + test.json of the release."""
    anns = {f: json.loads((anns_dir / "etis_polyp" / f).read_text())
            for f in ("train.json", "test.json", "val.json")}
    write_dataset(tmp_path / "m", "etis_polyp", anns)
    builder = build_dataset("etis_polyp", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    assert builder.info.splits["test"].num_examples == len(anns["train.json"]) + len(anns["test.json"])


def test_image_pixels_round_trip(built_real, real_layout):
    root, anns = real_layout
    rec = read_split(built_real[0]["kvasir_polyp"], "val")[1]
    want = np.asarray(Image.open(root / "kvasir_polyp/images" / anns["kvasir_polyp"]["val.json"][1]["img_name"]).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(data_io.decode_image(rec["image"])), want)


# ------------------------------------------------------------------------------ bad inputs
def small_kvasir(root: pathlib.Path, n: int = 2) -> pathlib.Path:
    anns = {f"{s}.json": [make_record(10 * k + i, ext="jpg") for i in range(n)]
            for k, s in enumerate(("train", "val", "test"))}
    return write_dataset(root, "kvasir_polyp", anns)


def build_kvasir(tmp_path: pathlib.Path):
    return build_dataset("kvasir_polyp", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")


def test_missing_file_names_file_and_record(tmp_path):
    ds = small_kvasir(tmp_path / "m")
    (ds / "images" / "11.jpg").unlink()
    with pytest.raises(DataError, match=r"kvasir_polyp: .*val\.json record 1: file not found: .*11\.jpg"):
        build_kvasir(tmp_path)


def test_corrupt_image(tmp_path):
    ds = small_kvasir(tmp_path / "m")
    (ds / "images" / "20.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(DataError, match=r"test\.json record 0: cannot decode image .*20\.jpg"):
        build_kvasir(tmp_path)


def test_mask_size_mismatch(tmp_path):
    ds = small_kvasir(tmp_path / "m")
    Image.fromarray(np.zeros((SIZE[0] + 1, SIZE[1]), np.uint8)).save(ds / "masks" / "1.jpg", "PNG")
    with pytest.raises(DataError, match=r"mask .*1\.jpg is 32x25 \(WxH\) but image .*1\.jpg is 32x24"):
        build_kvasir(tmp_path)


def test_unknown_prompt_keys_in_annotations(tmp_path):
    anns = {f"{s}.json": [make_record(k, num_prompts=7)]
            for k, s in enumerate(("train", "val", "test"))}
    write_dataset(tmp_path / "m", "kvasir_polyp", anns)
    with pytest.raises(DataError, match=r"prompts must have exactly the keys .*p9.*found"):
        build_kvasir(tmp_path)


def test_duplicate_annotation_files_within_dataset(tmp_path):
    ds = small_kvasir(tmp_path / "m")
    (ds / "anns" / "test.json").write_bytes((ds / "anns" / "train.json").read_bytes())
    with pytest.raises(DataError, match=r"test\.json is byte-identical to .*train\.json|"
                                        r"train\.json is byte-identical to .*test\.json"):
        build_kvasir(tmp_path)


_MASK = np.zeros(SIZE, np.uint8)
_MASK[4:14, 6:20] = 1


@pytest.mark.parametrize("kind", ["0/255", "0/1", "jpeg", "rgb", "palette", "16bit"])
def test_mask_encodings_binarise(tmp_path, kind):
    path = tmp_path / "m.png"
    if kind == "0/255":
        Image.fromarray(_MASK * 255).save(path)
    elif kind == "0/1":
        Image.fromarray(_MASK).save(path)
    elif kind == "jpeg":
        path = tmp_path / "m.jpg"
        Image.fromarray(_MASK * 255).save(path, quality=75)
    elif kind == "rgb":
        Image.fromarray(np.repeat(_MASK[..., None] * 255, 3, -1)).save(path)
    elif kind == "palette":
        Image.fromarray(_MASK * 255).convert("P").save(path)
    else:
        Image.fromarray(_MASK.astype(np.uint16) * 65535).save(path)
    if kind == "jpeg":  # compression really leaves non-binary values behind
        assert len(np.unique(np.asarray(Image.open(path)))) > 2
    np.testing.assert_array_equal(data_io.read_mask(path), _MASK.astype(bool))


def test_image_modes_become_rgb8(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, SIZE, dtype=np.uint8)
    rgba = rng.integers(0, 256, (*SIZE, 4), dtype=np.uint8)
    gray16 = gray.astype(np.uint16) * 257
    cases = {"gray.png": (Image.fromarray(gray), np.repeat(gray[..., None], 3, -1)),
             "rgba.png": (Image.fromarray(rgba), rgba[..., :3]),
             "g16.png": (Image.fromarray(gray16), np.repeat(gray[..., None], 3, -1))}
    for fname, (img, want) in cases.items():
        img.save(tmp_path / fname)
        data, size = data_io.image_bytes(tmp_path / fname)
        got = np.asarray(data_io.decode_image(data))
        assert size == SIZE and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want, err_msg=fname)


def test_odd_images_and_empty_masks_build(tmp_path):
    """Grayscale, RGBA and 16-bit images and an empty (BUSI normal) mask build end to end."""
    anns = {f"{s}.json": [make_record(10 * k + i, num_prompts=7) for i in range(3)]
            for k, s in enumerate(("train", "val", "test"))}
    ds = write_dataset(tmp_path / "m", "busi", anns)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, SIZE, dtype=np.uint8)).save(ds / "images/0.png")
    Image.fromarray(rng.integers(0, 256, (*SIZE, 4), dtype=np.uint8)).save(ds / "images/1.png")
    Image.fromarray(rng.integers(0, 65536, SIZE, dtype=np.uint16)).save(ds / "images/2.png")
    Image.fromarray(np.zeros(SIZE, np.uint8)).save(ds / "masks/2.png")
    builder = build_dataset("busi", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    recs = read_split(builder, "train")
    for rec in recs:
        assert np.asarray(data_io.decode_image(rec["image"])).shape == (*SIZE, 3)
    assert not masks.ground_truth(recs[2]["mask"]).any()
    assert masks.ground_truth(recs[0]["mask"]).any()


# ------------------------------------------------------------------------------- synthetic
@pytest.mark.parametrize("name", ["synthetic_polyp", "synthetic_us"])
def test_synthetic_builders_generate_then_build(tmp_path, monkeypatch, name):
    pytest.importorskip("medvlsm_jax.promptgen.synthetic")
    from medvlsm_jax.data.builders import builder_class

    monkeypatch.setattr(builder_class(name), "SYNTHETIC_SIZES", {"n_train": 6, "n_val": 2, "n_test": 2})
    builder = build_dataset(name, manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    anns_dir = tmp_path / "m" / name / "anns"
    for split in ("train", "val", "test"):
        want = json.loads((anns_dir / f"{split}.json").read_text())
        got = read_split(builder, split)
        assert len(got) == len(want) > 0
        assert [decoded_prompts(r) for r in got] == [as_lists(w["prompts"]) for w in want]
        assert len(got[0]["prompts"]) == get_spec(name).num_prompts
