"""Multi-process evaluation: every process's rows reach the summary once, in single-process order
(simulated second process here; the real two-process run is tests/train/test_multiprocess.py)."""

import json

import jax
import pytest
from jax.experimental import multihost_utils

from medvlsm_jax.evaluation import evaluate


@pytest.fixture
def two_processes(monkeypatch):
    barriers = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    monkeypatch.setattr(multihost_utils, "sync_global_devices", barriers.append)
    return barriers


def test_gather_rows_merges_every_process_in_dataset_then_index_order(tmp_path, two_processes):
    mine = [{"dataset": "kvasir_polyp", "index": 2, "dice": 0.5}, {"dataset": "isic", "index": 0, "dice": 0.2}]
    other = [{"dataset": "kvasir_polyp", "index": 1, "dice": 1.0}]
    (tmp_path / ".rows-test-p1.json").write_text(json.dumps(other))  # what process 1 wrote
    rows = evaluate.gather_rows(mine, str(tmp_path), "test")
    assert rows == [other[0], mine[0], mine[1]]  # kvasir_polyp precedes isic in the catalogue
    assert two_processes == ["medvlsm-eval-rows-test", "medvlsm-eval-rows-read-test"]
    assert evaluate.summarize_rows(rows)["kvasir_polyp"]["dice"]["n"] == 2
    assert not (tmp_path / ".rows-test-p0.json").exists()  # each process removes its own file


def test_an_example_scored_twice_is_an_error(tmp_path, two_processes):
    row = {"dataset": "kvasir_polyp", "index": 1, "dice": 1.0}
    (tmp_path / ".rows-test-p1.json").write_text(json.dumps([row]))
    with pytest.raises(RuntimeError, match="scored by more than one process"):
        evaluate.gather_rows([row], str(tmp_path), "test")


def test_single_process_rows_untouched(tmp_path):
    rows = [{"dataset": "isic", "index": 3, "dice": 0.1}]
    assert evaluate.gather_rows(rows, str(tmp_path), "test") is rows
    assert not list(tmp_path.iterdir())
