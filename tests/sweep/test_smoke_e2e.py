"""The smoke plan end to end: sweep -> store -> report -> HTML checked in headless Chromium; the
packed runs equal the same runs trained one by one; a rerun skips what is done and a run whose
result was lost finishes from its checkpoints without training again."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import numpy as np
import pytest

from medvlsm_jax.cli import sweep as cli
from medvlsm_jax.sweep import plans
from medvlsm_jax.sweep.store import Store


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    start = time.time()
    rc = cli.main(["smoke", "--workdir", str(workdir), "--quiet"])
    return workdir, rc, time.time() - start


def _results(workdir):
    return {r["id"]: r for r in Store(str(workdir)).results()}


def test_smoke_sweep_finishes_every_run_with_a_reproducibility_record(smoke):
    workdir, rc, seconds = smoke
    assert rc == 0
    expansion = plans.expand("smoke", plans.PlanOptions(workdir=str(workdir)))
    results = _results(workdir)
    assert set(results) == set(expansion.ids)
    index = Store(str(workdir)).index()["runs"]
    assert {index[i]["status"] for i in expansion.ids} == {"done"}
    for r in results.values():
        repro = r["repro"]
        assert repro["config"]["data"]["dataset"] == r["dataset"] and repro["seed"] == 42
        assert repro["versions"]["jax"] and repro["device"]["platform"] == "cpu" and repro["wall_seconds"] > 0
        assert repro["git"]["commit"] is None or len(repro["git"]["commit"]) == 40
        assert repro["images_per_second"] and r["results"]
    packed = [r for r in results.values() if r["kind"] == "train" and "pack" in r["repro"]]
    assert {len(r["repro"]["pack"]["members"]) for r in packed} == {2, 3}
    swaps = [r for r in results.values() if r["kind"] == "swap"]
    assert swaps and all(r["swap_counts"]["synthetic_polyp"]["swapped"] > 0 for r in swaps)
    print(f"smoke sweep: {len(results)} runs in {seconds:.0f} s")


def test_packed_runs_equal_the_same_runs_trained_one_by_one(smoke, tmp_path):
    workdir, _, _ = smoke
    packed = {i: r for i, r in _results(workdir).items() if r["kind"] == "train" and r["model"] == "clipseg"
              and r["dataset"] == "synthetic_polyp"}
    ids = sorted(packed)[:2]
    rc = cli.main(["smoke", "--workdir", str(tmp_path), "--data-dir", plans.smoke_data_dir(str(workdir)),
                   "--no-pack", "--only", ",".join(ids), "--quiet"])
    assert rc == 0
    alone = _results(tmp_path)
    assert set(alone) == set(ids)  # the same run ids: the data dir is not part of a run's identity
    for rid in ids:
        a, b = packed[rid], alone[rid]
        assert "pack" in a["repro"] and "pack" not in b["repro"]
        assert [h["epoch"] for h in a["train"]["history"]] == [h["epoch"] for h in b["train"]["history"]]
        for ha, hb in zip(a["train"]["history"], b["train"]["history"]):
            for key in ("train_loss", "val_loss", "val_dice", "val_iou"):
                assert ha[key] == pytest.approx(hb[key], abs=1e-5), (rid, key)
        for ds in a["results"]:
            assert a["results"][ds]["dice"]["mean"] == pytest.approx(b["results"][ds]["dice"]["mean"], abs=1e-4)
        pa = _params(os.path.join(workdir, "runs", rid, "export"))
        pb = _params(os.path.join(tmp_path, "runs", rid, "export"))
        assert max(float(np.abs(x - y).max()) for x, y in zip(pa, pb)) < 1e-5


def _params(folder):
    import jax

    import medvlsm_jax

    seg = medvlsm_jax.load(folder)
    from flax import nnx

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(seg.model, nnx.Param))]


def test_rerun_skips_done_runs_and_a_lost_result_finishes_from_its_checkpoints(smoke, capsys):
    workdir, _, _ = smoke
    results = _results(workdir)
    rid = next(i for i, r in results.items() if r["kind"] == "train" and "pack" in r["repro"])
    os.unlink(os.path.join(workdir, "runs", rid, "result.json"))
    capsys.readouterr()
    assert cli.main(["smoke", "--workdir", str(workdir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"1 run(s) finished, {len(results) - 1} already done" in out
    again = _results(workdir)[rid]
    assert again["train"]["history"] == results[rid]["train"]["history"]  # nothing trained again
    assert again["repro"]["resumed_from_step"] == results[rid]["train"]["steps"]
    assert again["results"] == results[rid]["results"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _open_in_chromium(html_path: str) -> dict:
    """Tables, cells and images as the browser sees them (Playwright driving the system Chromium;
    without Playwright, Chromium's own --dump-dom)."""
    exe = _chromium()
    url = "file://" + os.path.abspath(html_path)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                              "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
        import re

        body = re.search(r"<body([^>]*)>", dom).group(1)
        attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
        return {"tables": len(re.findall(r"<table data-table=", dom)), "cells": dom.count("±"),
                "ok": int(attrs["images-ok"]), "broken": int(attrs["images-broken"]),
                "images": len(re.findall(r"<img ", dom)), "widths": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.body.hasAttribute('data-images-ok')", timeout=30000)
        got = page.evaluate("""() => ({
            tables: document.querySelectorAll('table[data-table]').length,
            cells: Array.from(document.querySelectorAll('td')).filter(td => td.textContent.includes('±')).length,
            ok: +document.body.dataset.imagesOk, broken: +document.body.dataset.imagesBroken,
            images: document.images.length,
            widths: Array.from(document.images).map(i => i.getBoundingClientRect().width)})""")
        browser.close()
    return got


def test_report_renders_tables_and_figures_in_headless_chromium(smoke, capsys):
    workdir, _, _ = smoke
    from medvlsm_jax.cli import report as report_cli

    assert report_cli.main([str(workdir)]) == 0
    out_dir = workdir / "report"
    md = (out_dir / "tables.md").read_text()
    for title in ("Table 3", "Table 4", "Table 6", "Table 7"):
        assert title in md
    assert "**" in md and "±" in md
    rows = (out_dir / "table6.csv").read_text().splitlines()
    assert rows[0].startswith("table,") and len(rows) == 1 + 2 * 2 * 2  # 2 models x 2 prompts x 2 sets
    for name in ("fig2.png", "fig3.png", "overlays_synthetic_polyp.png"):
        assert (out_dir / name).stat().st_size > 1000
    html = (out_dir / "report.html").read_text()
    assert "src='data:image/png;base64," in html and "http" not in html.split("<body", 1)[1].split("Reproducibility")[0]
    if _chromium() is None:
        pytest.skip("no Chromium to open the report in: apt-get install chromium (Debian) or set PATH")
    seen = _open_in_chromium(str(out_dir / "report.html"))
    assert seen["tables"] >= 4 and seen["cells"] >= 10
    assert seen["images"] >= 4 and seen["ok"] == seen["images"] and seen["broken"] == 0
    assert all(w > 100 for w in seen["widths"])
