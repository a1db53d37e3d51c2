"""Compilation: the trainer compiles each step once (later epochs, validation and training
alternating, compile nothing), and with the persistent cache a rerun in a new process compiles
nothing at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medvlsm_jax.train import compile_cache, loop
from tests.train.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_second_epoch_compiles_nothing(tiny_data_dir, tmp_path, monkeypatch):
    marks = []
    validate = loop.validate

    def counted_validate(*args, **kwargs):
        out = validate(*args, **kwargs)
        marks.append(compile_cache.counters())
        return out

    monkeypatch.setattr(loop, "validate", counted_validate)
    c = tiny_config(tiny_data_dir, num_epochs=2, compile_cache="")
    c.eval.after_training = False
    out = loop.train_and_evaluate(c, str(tmp_path))
    assert len(marks) == 2 and out["stats"]["compile"]["compiled"] > 0
    # epoch 2 (train steps, then validation) after epoch 1's validation: no executable built
    assert marks[1]["executables"] - marks[0]["executables"] == 0
    h = out["meta"]["history"]
    assert h[0]["compile_s"] > 0 and h[1]["compile_s"] == 0
    assert json.loads((tmp_path / "run_stats.json").read_text())["compile"]["executables"] > 0


def test_resolve_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert compile_cache.resolve_dir("") is None and compile_cache.resolve_dir("off") is None
    assert compile_cache.resolve_dir("workdir", str(tmp_path)) == str(tmp_path / "xla_cache")
    assert compile_cache.resolve_dir("~/x").startswith(os.path.expanduser("~"))
    with pytest.raises(ValueError, match="needs a workdir"):
        compile_cache.resolve_dir("workdir")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    assert compile_cache.resolve_dir("off") == str(tmp_path / "env")


def test_rerun_in_a_new_process_compiles_nothing(tiny_data_dir, tmp_path):
    cache = tmp_path / "xla"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = ROOT
    stats = []
    for run in ("first", "second"):
        workdir = tmp_path / run
        cmd = [sys.executable, "-m", "medvlsm_jax.main", f"--workdir={workdir}",
               "--config=configs/clipseg.py:dataset=synthetic_polyp,prompt=p1,variant=tiny,image_size=32",
               f"--config.data.data_dir={tiny_data_dir}", "--config.train.batch_size=4", "--config.train.num_epochs=1",
               "--config.train.min_epochs=1", "--config.train.progress=false", f"--config.train.compile_cache={cache}",
               "--config.eval.batch_size=4", "--config.eval.hd95=false", "--config.eval.write_masks=false"]
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, timeout=600, capture_output=True)
        stats.append(json.loads((workdir / "run_stats.json").read_text()))
    first, second = (s["compile"] for s in stats)
    assert stats[1]["compile_cache_dir"] == str(cache)
    assert first["compiled"] > 0 and first["cache_hits"] == 0
    # the same executables again (train, validation and test evaluation), all from the cache
    assert second["executables"] == first["executables"] and second["compiled"] == 0
    assert any(cache.iterdir())
