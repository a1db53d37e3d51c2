"""Multi-host evaluation: every process's rows reach the summary (simulated second process)."""

import json

import jax
from jax.experimental import multihost_utils

from medvlsm_jax.evaluation import evaluate


def test_gather_rows_merges_every_process_in_order(tmp_path, monkeypatch):
    mine = [{"dataset": "kvasir_polyp", "index": 0, "dice": 0.5}]
    other = [{"dataset": "kvasir_polyp", "index": 1, "dice": 1.0}]
    (tmp_path / ".rows-test-p1.json").write_text(json.dumps(other))  # what process 1 wrote
    barriers = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    monkeypatch.setattr(multihost_utils, "sync_global_devices", barriers.append)
    rows = evaluate.gather_rows(mine, str(tmp_path), "test")
    assert rows == mine + other and barriers == ["medvlsm-eval-rows-test"]
    assert evaluate.summarize_rows(rows)["kvasir_polyp"]["dice"]["n"] == 2


def test_single_process_rows_untouched(tmp_path):
    rows = [{"dataset": "isic", "index": 3, "dice": 0.1}]
    assert evaluate.gather_rows(rows, str(tmp_path), "test") is rows
    assert not list(tmp_path.iterdir())
