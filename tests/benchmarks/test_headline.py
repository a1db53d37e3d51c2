"""``medvlsm-bench headline`` on the tiny model: the Kvasir-sized set is written with the
requested split sizes and size mix, grain is measured, the run is the real ``medvlsm_jax.main``
command, and the time split adds up."""

from __future__ import annotations

import glob
import json
import os

import pytest

from medvlsm_jax.bench import headline


def test_size_mix_follows_the_fractions():
    sizes = headline._class_sizes(1000, headline.KVASIR_SIZES)
    assert len(sizes) == 1000
    for hw, frac in headline.KVASIR_SIZES:
        assert sizes.count(hw) == pytest.approx(1000 * frac, abs=1)
    assert max(h for h, _ in sizes) >= 1000 and min(w for _, w in sizes) <= 500  # ~500 px up to 1920 px wide


def test_tiny_headline_run(tmp_path):
    out = tmp_path / "results"
    result = headline.main(["--variant", "tiny", "--epochs", "2", "--workers", "0", "--grain-batches", "2",
                            "--pool", "2", "--data-root", str(tmp_path / "data"), "--out", str(out), "--keep"])
    assert result["returncode"] == 0, result.get("error")
    assert "medvlsm_jax.main" in result["command"] and "--config.train.num_epochs=2" in result["command"]
    prep = json.loads((tmp_path / "data" / "prepare.json").read_text())
    assert prep["sizes"] == {"40x52": 8, "48x64": 8}
    anns = tmp_path / "data" / "manual" / headline.DATASET / "anns"
    assert [len(json.loads((anns / f"{s}.json").read_text())) for s in ("train", "val", "test")] == [8, 4, 4]
    (grain,) = result["grain"]
    assert grain["workers"] == 0 and grain["examples_per_s"] > 0
    s = result["split"]
    assert s["epochs"] == 2 and s["decoder_epochs"] == 1
    # a fresh compilation cache in the data root: everything compiled once
    assert s["compile_s"] > 0 and s["compiled"] == s["executables"] > 0 and s["epoch1_compile_s"] > 0
    assert s["wall_s"] > s["train_s"] + s["test_s"] + s["build_s"] and s["startup_s"] > 0
    cache = s["feature_cache"]  # every training image encoded once, then served from the cache
    assert cache["rows"] >= 8 and cache["hits"] >= 8
    assert result["test_results"]  # the test split scored at its original sizes
    (md,) = glob.glob(os.path.join(out, "*", "headline.md"))
    assert "test evaluation at original size" in open(md).read()
    # what a run cut short by the budget would report: its epochs from the latest checkpoint
    meta = headline.salvage(result["workdir"])
    part = headline.partial_split(meta, 90, 1.0)
    assert part["epochs_done"] == 2 and part["projected_train_s_90_epochs"] == pytest.approx(
        sum(e["seconds"] for e in meta["history"]) + 88 * meta["history"][1]["seconds"])
