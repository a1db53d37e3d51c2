"""One run per workdir (lock with pid + host, stale locks taken over), the config record (drift
beyond the safe keys stops the run before anything is touched; an explicit override is appended
to the history), starting over, and the workdir checks. Nothing here trains."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from medvlsm_jax.config import load_config
from medvlsm_jax.train import loop
from medvlsm_jax.train import workdir as wd_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**train):
    c = load_config("clipseg:dataset=synthetic_polyp,prompt=p1,variant=tiny,image_size=32")
    c.train.update(**train)
    return c


def _holder(workdir):
    """A process holding the workdir's lock until killed."""
    code = ("import sys, time; from medvlsm_jax.train.workdir import WorkdirLock; "
            "WorkdirLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.stdout.readline().strip() == "locked"
    return proc


# --------------------------------------------------------------------------- lock


def test_second_run_fails_at_once_naming_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        start = time.time()
        with pytest.raises(wd_lib.WorkdirError) as info:
            wd_lib.WorkdirLock(str(tmp_path)).acquire()
        assert time.time() - start < 2
        message = str(info.value)
        assert f"process {proc.pid} on {socket.gethostname()}" in message and "in use" in message
        assert "\n" not in message
        # the trainer's entry points take the same lock before anything else
        with pytest.raises(wd_lib.WorkdirError, match=f"in use by process {proc.pid}"):
            loop.train_and_evaluate(_config(), str(tmp_path))
        assert sorted(os.listdir(tmp_path)) == [".lock"]
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, caplog):
    proc = _holder(tmp_path)
    proc.kill()  # kill -9: the lock file stays behind, naming a dead pid
    proc.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == proc.pid
    with caplog.at_level(logging.WARNING):
        lock = wd_lib.WorkdirLock(str(tmp_path)).acquire()
    assert f"stale lock {tmp_path / '.lock'} of process {proc.pid} on {socket.gethostname()}" in caplog.text
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_stale_lock_file_with_a_dead_pid_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with caplog.at_level(logging.WARNING), wd_lib.WorkdirLock(str(tmp_path)):
        pass
    assert f"of process {dead.pid}" in caplog.text and not (tmp_path / ".lock").exists()


def test_workdir_that_is_a_file_or_cannot_be_written(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(wd_lib.WorkdirError, match="is a file, not a folder"):
        loop.train_and_evaluate(_config(), str(afile))
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    target = readonly / "run"
    if os.access(readonly, os.W_OK):  # root ignores permissions: use a read-only file system
        target = "/sys/medvlsm_workdir_test"
        if os.access("/sys", os.W_OK) and not os.path.ismount("/sys"):
            pytest.skip("no unwritable folder available")
    with pytest.raises(wd_lib.WorkdirError, match="cannot be created .*give a writable folder"):
        loop.train_and_evaluate(_config(), str(target))
    with pytest.raises(wd_lib.WorkdirError, match="does not exist"):
        loop.evaluate_checkpoint(_config(), str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*train first"):
        loop.evaluate_checkpoint(_config(), str(tmp_path))


# --------------------------------------------------------------------------- config record


def _trained_workdir(path, config):
    """A workdir as a run leaves it: config.json and a checkpoint step folder."""
    (path / "checkpoints" / "latest" / "8").mkdir(parents=True)
    wd_lib.record_config(str(path), config, {})
    return path


def _snapshot(path):
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in path.rglob("*")}


def test_config_drift_stops_before_touching_anything(tmp_path):
    _trained_workdir(tmp_path, _config())
    before, recorded = _snapshot(tmp_path), (tmp_path / "config.json").read_text()
    changed = _config(lr=0.05)
    changed.model.variant = "base"
    with pytest.raises(wd_lib.ConfigDriftError) as info:
        loop.train_and_evaluate(changed, str(tmp_path))
    message = str(info.value)
    assert "model.variant: \"tiny\" -> \"base\"" in message and "train.lr: 0.001 -> 0.05" in message
    assert "--allow_config_change" in message and "--fresh" in message and "\n" not in message
    assert _snapshot(tmp_path) == before and (tmp_path / "config.json").read_text() == recorded


def test_safe_keys_may_change(tmp_path):
    _trained_workdir(tmp_path, _config())
    safe = _config(num_epochs=7, progress=False, log_every_steps=3, keep_checkpoints=4, cache="off")
    safe.eval.update(hd95=False, overlays=2, batch_size=2)
    safe.data.worker_count = 2
    diff = wd_lib.check_config(str(tmp_path), safe)
    assert set(diff) == {"train.num_epochs", "train.progress", "train.log_every_steps", "train.keep_checkpoints",
                         "train.cache", "eval.hd95", "eval.overlays", "eval.batch_size", "data.worker_count"}
    assert set(diff) <= wd_lib.SAFE_KEYS


def test_allowed_change_is_appended_to_the_history_never_overwritten(tmp_path):
    _trained_workdir(tmp_path, _config())
    recorded = (tmp_path / "config.json").read_text()
    for lr in (0.05, 0.01):
        new = _config(lr=lr)
        diff = wd_lib.check_config(str(tmp_path), new, allow_change=True)
        wd_lib.record_config(str(tmp_path), new, diff, forced=True)
    assert (tmp_path / "config.json").read_text() == recorded
    entries = [json.loads(line) for line in (tmp_path / "config_history.jsonl").read_text().splitlines()]
    assert [e["changed"] for e in entries] == [{"train.lr": [0.001, 0.05]}, {"train.lr": [0.05, 0.01]}]
    assert all(e["forced"] for e in entries) and entries[-1]["config"]["train"]["lr"] == 0.01
    assert wd_lib.recorded_config(str(tmp_path))["train"]["lr"] == 0.01
    # the latest record is what the next run is compared with
    with pytest.raises(wd_lib.ConfigDriftError, match=r"train.lr: 0.01 -> 0.001"):
        wd_lib.check_config(str(tmp_path), _config())


def test_eval_mode_checks_only_the_model(tmp_path):
    _trained_workdir(tmp_path, _config())
    wd_lib.check_config(str(tmp_path), _config(lr=0.5, batch_size=2), mode="eval")
    other = _config()
    other.data.image_size = 64
    with pytest.raises(wd_lib.ConfigDriftError, match=r"data.image_size: 32 -> 64.*evaluate with the recorded"):
        wd_lib.check_config(str(tmp_path), other, mode="eval")


def test_change_without_checkpoints_is_accepted_and_recorded(tmp_path):
    wd_lib.record_config(str(tmp_path), _config(), {})  # a first attempt that failed before saving
    diff = wd_lib.check_config(str(tmp_path), _config(lr=0.05), has_checkpoints=wd_lib.has_checkpoints(str(tmp_path)))
    wd_lib.record_config(str(tmp_path), _config(lr=0.05), diff)
    (entry,) = [json.loads(line) for line in (tmp_path / "config_history.jsonl").read_text().splitlines()]
    assert entry["changed"] == {"train.lr": [0.001, 0.05]} and not entry["forced"]


def test_fresh_start_moves_earlier_outputs_aside(tmp_path):
    _trained_workdir(tmp_path, _config())
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "export").mkdir()
    moved = wd_lib.archive_previous(str(tmp_path))
    assert sorted(os.listdir(moved)) == ["checkpoints", "export", "metrics.jsonl"]
    assert sorted(os.listdir(tmp_path)) == ["config.json", "previous"]
    assert not wd_lib.has_checkpoints(str(tmp_path))
    assert wd_lib.archive_previous(str(tmp_path)) is None
