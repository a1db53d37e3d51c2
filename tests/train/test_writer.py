"""A resumed run leaves clean logs: metrics.jsonl without the rows an interrupted attempt wrote
after the checkpoint, and TensorBoard files whose purge marker hides those events."""

from __future__ import annotations

import json
import struct

import pytest

from medvlsm_jax.train.writer import MetricWriter


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _events(path):
    """Events of a TensorBoard file (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[i + 12:i + 12 + n])
        out.append(event)
        i += 12 + n + 4
    return out


def test_resume_drops_rows_after_the_checkpoint_and_marks_tensorboard(tmp_path):
    first = MetricWriter(str(tmp_path), True)
    for step in range(1, 8):  # the interrupted attempt got to step 7; its last checkpoint is step 5
        first.write(step, {"train/loss": 1.0 / step})
    first.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "train/lo')  # a row cut by kill -9
    second = MetricWriter(str(tmp_path), True, resume_step=5)
    for step in range(6, 9):
        second.write(step, {"train/loss": 1.0 / step})
    second.close()
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows == [{"step": s, "train/loss": 1.0 / s} for s in range(1, 9)]
    tb = sorted((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    if not tb:
        pytest.skip("tensorboardX is not installed")
    assert len(tb) == 2  # one file per attempt, documented in train/writer.py
    purges = [[(e.step, e.session_log.status) for e in _events(f) if e.HasField("session_log")] for f in tb]
    assert sorted(purges) == [[], [(6, 1)]]  # the resumed attempt's file: START at 6 purges steps >= 6


def test_new_run_starts_clean(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 3, "x": 1}\n')  # an attempt that saved nothing
    MetricWriter(str(tmp_path), True, resume_step=0).close()
    assert (tmp_path / "metrics.jsonl").read_text() == ""
