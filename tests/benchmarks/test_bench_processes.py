"""``medvlsm-bench processes``: layouts, efficiency bookkeeping, and a real two-process row."""

from __future__ import annotations

import glob
import json
import os

import pytest

from medvlsm_jax.bench import bench, bench_processes


def test_layouts_parse_and_bad_ones_are_one_line_errors(capsys):
    assert bench_processes.parse_layout("2x1") == (2, 1) and bench_processes.parse_layout("1X4") == (1, 4)
    for bad in ("2", "0x1", "axb"):
        with pytest.raises(ValueError, match="--layouts"):
            bench_processes.parse_layout(bad)
    assert bench.main(["processes", "--layouts", "1x1,1x2,2x1", "--batch", "3", "--no-write"]) == 2
    assert capsys.readouterr().err == ("medvlsm-bench: error: --batch 3 does not split over layouts "
                                       "['1x2', '2x1']\n")


def test_efficiency_against_one_device_and_one_process():
    rows = [{"processes": 1, "devices_per_process": 1, "devices": 1, "img_per_s": 10.0},
            {"processes": 1, "devices_per_process": 2, "devices": 2, "img_per_s": 16.0},
            {"processes": 2, "devices_per_process": 1, "devices": 2, "img_per_s": 12.0},
            {"processes": 4, "devices_per_process": 1, "error": "timed out"}]
    bench_processes.add_efficiency(rows)
    assert "scaling" not in rows[0] and "vs_one_process" not in rows[1]
    assert rows[1]["scaling"] == pytest.approx(0.8) and rows[2]["scaling"] == pytest.approx(0.6)
    assert rows[2]["vs_one_process"] == pytest.approx(0.75)
    table = bench_processes.table(rows).splitlines()
    assert table[4].startswith("| 2x1 | 2 |") and "0.75" in table[4] and "timed out" in table[5]


def test_two_processes_measure_one_row(tmp_path):
    """Two real processes (gloo on localhost), one simulated CPU device each (``medvlsm-bench
    processes`` hands its arguments to ``bench_processes.main``, which returns the result)."""
    result = bench_processes.main(["--layouts", "2x1", "--mode", "frozen", "--size", "32", "--batch", "4",
                                   "--warmup", "0", "--iters", "1", "--timeout", "420", "--out", str(tmp_path)])
    (row,) = result["rows"]
    assert "error" not in row, row
    assert (row["processes"], row["devices_per_process"], row["devices"], row["batch"]) == (2, 1, 2, 4)
    assert row["img_per_s"] == pytest.approx(4 / row["median_s"]) and row["first_step_s"] > 0
    (folder,) = glob.glob(os.path.join(tmp_path, "*_cpu"))
    with open(os.path.join(folder, "processes.json")) as f:
        assert json.load(f)["rows"] == result["rows"]
