"""Dataset builds are atomic and thorough: a failed (re)build leaves the existing build and no
empty folder behind, every problem of a source is reported in one pass (capped), nothing says
"downloading", and ``medvlsm-data`` keeps to one-line errors (synthetic --out, closed pipes)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from medvlsm_jax.cli.data import main as data_main
from medvlsm_jax.data.builders import builder_class
from medvlsm_jax.data.builders.base import MAX_PROBLEMS
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.sources import build_dataset, load_builder
from tests.data.layout import make_record, write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _kvasir(root, n=2):
    """train records 0.., val 100.., test 200.."""
    anns = {f"{s}.json": [make_record(100 * k + i, ext="jpg") for i in range(n)]
            for k, s in enumerate(("train", "val", "test"))}
    return write_dataset(root, "kvasir_polyp", anns)


def _counts(data_dir):
    return {s: v.num_examples for s, v in load_builder("kvasir_polyp", data_dir).info.splits.items()}


def test_failed_overwrite_keeps_the_existing_build(tmp_path, capfd):
    ds = _kvasir(tmp_path / "m")
    build_dataset("kvasir_polyp", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    assert "Downloading" not in "".join(capfd.readouterr())  # TFDS's wording replaced: nothing is downloaded
    assert _counts(tmp_path / "d") == {"train": 2, "val": 2, "test": 2}
    (ds / "images" / "0.jpg").unlink()  # train record 0
    (ds / "images" / "101.jpg").write_bytes(b"not a jpeg")  # val record 1
    anns = json.loads((ds / "anns" / "test.json").read_text())
    del anns[0]["prompts"]["p3"]  # test record 0
    (ds / "anns" / "test.json").write_text(json.dumps(anns))
    with pytest.raises(DataError) as info:
        build_dataset("kvasir_polyp", manual_dir=tmp_path / "m", data_dir=tmp_path / "d", overwrite=True)
    message = str(info.value)
    assert message.splitlines()[0].startswith(f"kvasir_polyp: 3 problems in the source {ds}")
    assert "nothing was built or replaced" in message
    assert "train.json record 0: file not found" in message
    assert "val.json record 1: cannot decode image" in message
    assert "test.json record 0: prompts must have exactly the keys" in message
    assert _counts(tmp_path / "d") == {"train": 2, "val": 2, "test": 2}  # the good build is still there
    assert sorted(os.listdir(tmp_path / "d")) == ["kvasir_polyp"]  # no temporary folder left


def test_every_problem_in_one_pass_capped(tmp_path):
    ds = _kvasir(tmp_path / "m", n=12)
    for i in range(12):  # every train image: the train split is left empty
        (ds / "images" / f"{i}.jpg").unlink()
    for i in range(100, 112):  # and every val image
        (ds / "images" / f"{i}.jpg").unlink()
    (ds / "masks" / "200.jpg").unlink()  # test record 0
    with pytest.raises(DataError) as info:
        build_dataset("kvasir_polyp", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("kvasir_polyp: 25 problems in the source") and f"the first {MAX_PROBLEMS}" in lines[0]
    assert len(lines) == 1 + MAX_PROBLEMS + 1 and lines[-1].strip() == "... and 5 more"
    assert not (tmp_path / "d").exists()  # a failed first build leaves no folder at all


def test_failed_first_build_leaves_no_empty_dataset_folder(tmp_path):
    (tmp_path / "d").mkdir()
    ds = _kvasir(tmp_path / "m")
    (ds / "anns" / "val.json").unlink()
    with pytest.raises(DataError, match=r"val\.json missing"):
        build_dataset("kvasir_polyp", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    assert os.listdir(tmp_path / "d") == []


@pytest.fixture()
def tiny_synthetic(monkeypatch):
    monkeypatch.setattr(builder_class("synthetic_polyp"), "SYNTHETIC_SIZES", {"n_train": 3, "n_val": 1, "n_test": 1})


def test_synthetic_out_refuses_a_non_empty_folder(tmp_path, capsys, tiny_synthetic):
    out, data = tmp_path / "out", tmp_path / "d"
    args = ["synthetic", "--name", "synthetic_polyp", "--out", str(out), "--data_dir", str(data)]
    assert data_main(args) == 0
    generated = out / "synthetic_polyp" / "images" / "0000.png"
    mtime = generated.stat().st_mtime_ns
    assert data_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {out} is not empty" in err and "--overwrite" in err
    assert generated.stat().st_mtime_ns == mtime
    (out / "synthetic_polyp" / "images" / "stale.png").write_bytes(b"")
    assert data_main([*args, "--overwrite"]) == 0  # regenerated: the old files are gone
    assert not (out / "synthetic_polyp" / "images" / "stale.png").exists() and generated.exists()
    assert sorted(os.listdir(out)) == ["synthetic_polyp"]


def test_list_into_a_closed_pipe_is_quiet(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "medvlsm_jax.cli.data", "list", "--data_dir", str(tmp_path)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # `medvlsm-data list | head -0`: the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and err == ""


def test_quick_start_says_where_it_builds_and_that_nothing_is_downloaded(tmp_path, caplog, capfd, tiny_synthetic):
    from medvlsm_jax.config import load_config
    from medvlsm_jax.train.loop import ensure_synthetic

    config = load_config("demo")
    config.data.data_dir = str(tmp_path / "d")
    with caplog.at_level(logging.INFO):
        ensure_synthetic(config)
    assert f"building the synthetic dataset synthetic_polyp in {tmp_path / 'd'} (generated locally, nothing is " \
           "downloaded" in caplog.text
    out, err = capfd.readouterr()
    assert "ownload" not in out + err  # TFDS's "Downloading and preparing dataset" is replaced
    assert _counts_of("synthetic_polyp", tmp_path / "d") == {"train": 3, "val": 1, "test": 1}


def _counts_of(name, data_dir):
    return {s: v.num_examples for s, v in load_builder(name, data_dir).info.splits.items()}
