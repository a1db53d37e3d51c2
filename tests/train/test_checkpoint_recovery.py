"""Checkpoints a run can always recover from: K latest + best kept, every save verified, damaged
checkpoints reported on one line and skipped (newest first, then the best), a clear error naming
them all when none restores, and none of Orbax's noise on the way. Faults are injected into real
Orbax checkpoints of a small state (no training)."""

from __future__ import annotations

import logging
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medvlsm_jax.train import checkpoint as ckpt_lib
from medvlsm_jax.train import loop
from tests.train import faults


def _state(step: int):
    w = np.random.default_rng(step).normal(size=(64, 50)).astype(np.float32)  # incompressible, not inlined
    return {"w": jnp.asarray(w), "n": jnp.full((7, 5), step, jnp.int32), "rng": jax.random.key(step)}


def _meta(step: int, **extra):
    return {"epoch": step, "step": step, "best_dice": 0.5, "best_epoch": 0, "done": False, **extra}


def _save(workdir, steps=(1, 2, 3), best=None, keep=2):
    ckpts = ckpt_lib.Checkpoints(str(workdir), keep=keep)
    for s in steps:
        ckpts.save_latest(s, _state(s), _meta(s), {"pos": s})
        if best == s:
            ckpts.save_best(s, _state(s), _meta(s), {"pos": s})
    ckpts.close()


def _restore(workdir, warnings=None, **kw):
    ckpts = ckpt_lib.Checkpoints(str(workdir))
    try:
        return ckpts.restore(_state(0), warn=warnings.append if warnings is not None else None, **kw)
    finally:
        ckpts.close()


def _steps(workdir, kind):
    return sorted(int(p.name) for p in (pathlib.Path(workdir) / "checkpoints" / kind).iterdir() if p.name.isdigit())


def test_keeps_k_latest_plus_best_and_restores_exactly(tmp_path):
    _save(tmp_path, steps=(1, 2, 3, 4), best=2, keep=3)
    assert _steps(tmp_path, "latest") == [2, 3, 4] and _steps(tmp_path, "best") == [2]
    restored = _restore(tmp_path)
    assert (restored.kind, restored.step, restored.data) == ("latest", 4, {"pos": 4})
    assert "state_digest" not in restored.meta and restored.meta["step"] == 4
    for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(_state(4))):
        a, b = (jax.random.key_data(x) if ckpt_lib._is_key(x) else x for x in (a, b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_at_least_two_latest_are_kept(tmp_path):
    _save(tmp_path, keep=1)
    assert _steps(tmp_path, "latest") == [2, 3]


def _stale_state(step_dir: pathlib.Path) -> None:
    """A valid state of another step in place of this one's (values altered, files decodable)."""
    shutil.rmtree(step_dir / "state")
    shutil.copytree(step_dir.parent / str(int(step_dir.name) - 1) / "state", step_dir / "state")


@pytest.mark.parametrize("fault", [*faults.FAULTS, "stale_state"])
def test_damaged_newest_falls_back_to_the_previous_one(tmp_path, fault, capfd):
    _save(tmp_path)
    newest = tmp_path / "checkpoints" / "latest" / "3"
    (_stale_state if fault == "stale_state" else faults.FAULTS[fault])(newest)
    warnings = []
    restored = _restore(tmp_path, warnings)
    assert (restored.kind, restored.step) == ("latest", 2)
    assert int(restored.state["n"][0, 0]) == 2
    if fault == "deleted":
        assert warnings == []
    else:
        (line,) = warnings
        assert str(newest) in line and "cannot be restored (" in line and "\n" not in line
        expected = {"empty_meta": "meta: JSONDecodeError", "zero_length": "meta: JSONDecodeError",
                    "cut_in_half": "state: OUT_OF_RANGE", "random_bytes": "state: ",
                    "stale_state": "state: digest"}[fault]
        assert expected in line
        # set aside, so that the next saves of steps 3, 4... never meet it
        assert not newest.exists() and len(list((tmp_path / "checkpoints" / "damaged").iterdir())) == 1
    out, err = capfd.readouterr()
    for noise in ("Traceback", "Exception ignored", "TensorStore", "Event loop is closed"):
        assert noise not in out + err


def test_latest_folder_gone_resumes_from_best_not_from_scratch(tmp_path):
    _save(tmp_path, best=3)
    shutil.rmtree(tmp_path / "checkpoints" / "latest")
    restored = _restore(tmp_path)
    assert (restored.kind, restored.step) == ("best", 3)


def test_best_is_tried_in_step_order_and_last(tmp_path):
    _save(tmp_path, steps=(1, 2, 3), best=2)
    for step in (2, 3):
        faults.cut_in_half(tmp_path / "checkpoints" / "latest" / str(step))
    warnings = []
    restored = _restore(tmp_path, warnings)
    assert (restored.kind, restored.step) == ("best", 2)  # newest valid: best/2, before nothing older
    assert [w.split(" cannot")[0].rsplit("/", 2)[1:] for w in warnings] == [["latest", "3"], ["latest", "2"]]


def test_none_restorable_is_one_error_naming_them_and_the_flag(tmp_path):
    _save(tmp_path, steps=(1, 2), best=2)
    for kind, step in (("latest", 1), ("latest", 2), ("best", 2)):
        faults.empty_meta(tmp_path / "checkpoints" / kind / str(step))
    with pytest.raises(ckpt_lib.CheckpointError) as info:
        _restore(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "--fresh" in message and "Nothing was changed" in message
    for kind, step in (("latest", 1), ("latest", 2), ("best", 2)):
        assert str(tmp_path / "checkpoints" / kind / str(step)) in message
    assert _steps(tmp_path, "latest") == [1, 2]  # nothing moved when nothing restored


def test_eval_prefers_the_best_and_moves_nothing(tmp_path):
    _save(tmp_path, best=2)
    faults.cut_in_half(tmp_path / "checkpoints" / "best" / "2")
    restored = _restore(tmp_path, prefer_best=True, set_aside=False)
    assert (restored.kind, restored.step) == ("latest", 3)
    assert _steps(tmp_path, "best") == [2]


def test_every_save_is_verified_by_reading_it_back(tmp_path, monkeypatch):
    ckpts = ckpt_lib.Checkpoints(str(tmp_path))
    ckpts.save_latest(1, _state(1), _meta(1), {})
    calls = []
    real = ckpt_lib.digest

    def digest_of_a_bad_write(flat):  # what is read back differs from what was written
        calls.append(1)
        return real(flat) if len(calls) == 1 else "crc32:00000000"

    monkeypatch.setattr(ckpt_lib, "digest", digest_of_a_bad_write)
    with pytest.raises(ckpt_lib.CheckpointError, match=r"latest/2 failed its verification after saving"):
        ckpts.save_latest(2, _state(2), _meta(2), {})
    ckpts.close()
    assert len(calls) >= 2 and _steps(tmp_path, "latest") == [1]
    assert any(p.name.startswith("latest-2-") for p in (tmp_path / "checkpoints" / "damaged").iterdir())


def test_resume_rechooses_the_best_when_the_best_checkpoint_is_damaged(tmp_path, caplog):
    ckpts = ckpt_lib.Checkpoints(str(tmp_path))
    ckpts.save_best(2, _state(2), _meta(2, best_epoch=2), {})
    for s in (2, 3):
        ckpts.save_latest(s, _state(s), _meta(s, best_epoch=2), {"pos": s})
    ckpts.close()
    faults.random_bytes(tmp_path / "checkpoints" / "best" / "2")
    ckpts = ckpt_lib.Checkpoints(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        restored = loop.resume(ckpts, _state(0), None)
    ckpts.close()
    assert restored.step == 3 and restored.meta["best_epoch"] == 0 and restored.meta["best_dice"] == -1.0
    assert "the best checkpoint (epoch 2) cannot be used" in caplog.text
    assert _steps(tmp_path, "best") == []
